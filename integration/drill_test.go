package integration

// Helpers shared by the failure drills (policy, retention, restarts,
// tierfs killed, three brokers).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// policyConfig is a [policy] table that moves quickly: a plan every
// interval, sealed segments eligible after minAge; extra lines follow
// (max_rate = "1MiB/s"). KRaft's metadata log stays on the fast tier:
// the default pin names it at the root of the mount, the log dir here is
// a directory below.
func policyConfig(threshold float64, interval, minAge string, extra ...string) string {
	return fmt.Sprintf(`
[policy]
migrate_threshold = %v
interval = %q
min_age = %q
pin = ["**/__cluster_metadata-*/**"]
%s
`, threshold, interval, minAge, strings.Join(extra, "\n"))
}

// tierUsage returns a tier's used bytes and capacity from a status.
func tierUsage(st StatusJSON, name string) (used, capacity int64) {
	for _, tr := range st.Tiers {
		if tr.Name == name {
			return tr.UsedBytes, tr.CapacityBytes
		}
	}
	return -1, -1
}

// waitPolicySettled polls `tierfs status --json` until the policy has
// nothing queued or in flight and the fast tier is at or under
// threshold·capacity, and returns that status.
func waitPolicySettled(t *testing.T, fs *Tierfs, threshold float64, timeout time.Duration) StatusJSON {
	t.Helper()
	var st StatusJSON
	err := waitFor(timeout, "the fast tier to settle under its threshold", func() (bool, error) {
		st = fs.Status(t)
		if st.Policy == nil {
			return false, errors.New("tierfs status has no policy section")
		}
		used, capacity := tierUsage(st, "fast")
		return len(st.Policy.Queued) == 0 && len(st.Policy.InFlight) == 0 &&
			float64(used) <= threshold*float64(capacity), nil
	})
	if err != nil {
		used, capacity := tierUsage(st, "fast")
		fatalf(t, "%v: fast tier %d of %d bytes used, policy %+v", err, used, capacity, st.Policy)
	}
	return st
}

// checkPolicyHealthy fails the test if the policy engine recorded failed
// moves or errors, other than moves given up because the file changed.
func checkPolicyHealthy(t *testing.T, st StatusJSON) {
	t.Helper()
	if st.Policy == nil {
		errorf(t, "tierfs status has no policy section")
		return
	}
	// A move given up because Kafka replaced or deleted the file
	// meanwhile is skipped, not failed, on the ledger: nothing is lost.
	if st.Moves.Failed > 0 || len(st.Policy.PlanErrors) > 0 {
		errorf(t, "policy: %d moves failed; last errors:\n%s\nplanning errors:\n%s", st.Moves.Failed,
			strings.Join(st.Moves.LastErrors, "\n"), strings.Join(st.Policy.PlanErrors, "\n"))
	} else if st.Moves.Skipped > 0 {
		t.Logf("policy: %d moves skipped (the file changed or went since planned)", st.Moves.Skipped)
	}
}

// compactJSON is a JSON value on one line.
func compactJSON(m json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, m) != nil {
		return string(m)
	}
	return b.String()
}

// segmentsOn returns the .log segments of topic's partitions that
// `tierfs ls` puts on tier, relative to the mount.
func segmentsOn(ls map[string]LsEntry, topic, tier string) []string {
	var out []string
	for p, e := range ls {
		if e.Tier != tier || !strings.HasSuffix(p, ".log") {
			continue
		}
		part := filepath.Base(filepath.Dir(p))
		if i := strings.LastIndex(part, "-"); i > 0 && part[:i] == topic {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// movedLines returns the daemon's "moved" log lines whose reason starts
// with reasonPrefix, as path → reason.
func movedLines(fs *Tierfs, reasonPrefix string) map[string]string {
	out := map[string]string{}
	for i := 1; i <= fs.starts; i++ {
		b, err := os.ReadFile(filepath.Join(fs.dir, fmt.Sprintf("tierfs-%d.log", i)))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if !strings.Contains(l, `"moved"`) {
				continue
			}
			var m struct {
				Message, Path, To, Reason string
			}
			if json.Unmarshal([]byte(l), &m) != nil || m.Message != "moved" {
				continue
			}
			if strings.HasPrefix(m.Reason, reasonPrefix) {
				out[m.Path] = m.Reason
			}
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Numbered records: record i has key i and value verifyValue(i).

// produceRange writes records from..to-1 of topic with ConsoleProducer
// (acks=all, idempotent) through bootstrap; every one is acknowledged
// when it returns.
func produceRange(t *testing.T, k *Kafka, bootstrap, dir, topic string, from, to int) {
	t.Helper()
	var in bytes.Buffer
	for i := from; i < to; i++ {
		fmt.Fprintf(&in, "%d\t%s\n", i, verifyValue(i))
	}
	start := time.Now()
	consoleProduce(t, k, bootstrap, dir, topic, &in)
	t.Logf("ConsoleProducer: records %d..%d of %s acknowledged (acks=all) in %v", from, to-1, topic,
		time.Since(start).Round(time.Millisecond))
}

// consoleProduce writes the "KEY<TAB>VALUE" lines of in to topic with
// ConsoleProducer: acks=all, idempotent, and patient (ConsoleProducer's
// own defaults, 3 retries of 1.5 s, give up during a leader election).
func consoleProduce(t *testing.T, k *Kafka, bootstrap, dir, topic string, in io.Reader) {
	t.Helper()
	_, errOut, err := k.Tool(dir, 3*time.Minute, in, "org.apache.kafka.tools.ConsoleProducer",
		"--bootstrap-server", bootstrap, "--topic", topic,
		"--property", "parse.key=true", "--property", "key.separator=\t",
		"--request-timeout-ms", "30000", "--message-send-max-retries", "2147483647",
		"--producer-property", "acks=all", "--producer-property", "enable.idempotence=true",
		"--producer-property", "delivery.timeout.ms=120000",
		"--producer-property", "linger.ms=5", "--producer-property", "batch.size=65536")
	if err != nil {
		fatalf(t, "%v\n%s", err, lastLines(errOut, 40))
	}
	// ConsoleProducer logs a failed send (ErrorLoggingCallback) and goes
	// on; with no such line every record was acknowledged.
	if bytes.Contains(errOut, []byte("Error when sending")) || bytes.Contains(errOut, []byte("Exception")) {
		fatalf(t, "ConsoleProducer reported errors:\n%s", lastLines(errOut, 40))
	}
}

// Record is one record as ConsoleConsumer prints it.
type Record struct {
	Partition int
	Offset    int64
	Key       string
	Value     string
}

// consumeAll reads n records of topic from the beginning with
// ConsoleConsumer (partition, offset, key and value of each). extra are
// more ConsoleConsumer arguments.
func consumeAll(t *testing.T, k *Kafka, bootstrap, dir, topic string, n int64, extra ...string) []Record {
	t.Helper()
	args := []string{"--bootstrap-server", bootstrap, "--topic", topic, "--from-beginning",
		"--max-messages", strconv.FormatInt(n, 10), "--timeout-ms", "60000",
		"--property", "print.key=true", "--property", "print.partition=true",
		"--property", "print.offset=true", "--property", "key.separator=\t"}
	args = append(args, extra...)
	out := k.MustTool(t, dir, 3*time.Minute, nil, "org.apache.kafka.tools.consumer.ConsoleConsumer", args...)
	recs, err := parseRecords(out)
	if err != nil {
		fatalf(t, "ConsoleConsumer output: %v", err)
	}
	return recs
}

// parseRecords parses ConsoleConsumer lines
// "Partition:P<TAB>Offset:O<TAB>KEY<TAB>VALUE".
func parseRecords(out []byte) ([]Record, error) {
	var recs []Record
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if l == "" {
			continue
		}
		f := strings.SplitN(l, "\t", 4)
		if len(f) != 4 || !strings.HasPrefix(f[0], "Partition:") || !strings.HasPrefix(f[1], "Offset:") {
			return nil, fmt.Errorf("unexpected line %.100q", l)
		}
		p, err1 := strconv.Atoi(strings.TrimPrefix(f[0], "Partition:"))
		o, err2 := strconv.ParseInt(strings.TrimPrefix(f[1], "Offset:"), 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("unexpected line %.100q", l)
		}
		recs = append(recs, Record{Partition: p, Offset: o, Key: f[2], Value: f[3]})
	}
	return recs, nil
}

// checkNumbered checks that recs are exactly the numbered records
// from..to-1, each once, each with its value.
func checkNumbered(t *testing.T, topic string, recs []Record, from, to int) {
	t.Helper()
	seen := map[int]bool{}
	bad := 0
	for _, r := range recs {
		i, err := strconv.Atoi(r.Key)
		switch {
		case err != nil || i < from || i >= to:
			bad++
			if bad <= 5 {
				errorf(t, "%s: consumed a record with an unexpected key at %d/%d: %.80q", topic, r.Partition, r.Offset, r.Key)
			}
		case seen[i]:
			bad++
			errorf(t, "%s: record %d consumed twice (again at %d/%d)", topic, i, r.Partition, r.Offset)
		case r.Value != verifyValue(i):
			bad++
			if bad <= 5 {
				errorf(t, "%s: record %d at %d/%d has value %.60q..., want %.60q...", topic, i, r.Partition, r.Offset, r.Value, verifyValue(i))
			}
		default:
			seen[i] = true
		}
	}
	var missing []int
	for i := from; i < to; i++ {
		if !seen[i] {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 || bad > 0 {
		n := len(missing)
		if n > 10 {
			missing = missing[:10]
		}
		fatalf(t, "%s: consumed %d records; %d bad; %d of records %d..%d missing, e.g. %v", topic, len(recs), bad, n, from, to-1, missing)
	}
	t.Logf("%s: all %d records %d..%d consumed, each once, content verified", topic, to-from, from, to-1)
}

// ---------------------------------------------------------------------------
// An acknowledged-records producer: VerifiableProducer prints a line for
// every record the cluster acknowledged (acks=all).

// ackedProducer is a running VerifiableProducer.
type ackedProducer struct {
	cmd    *exec.Cmd
	prefix string
	done   chan struct{}
	stderr bytes.Buffer
	path   string // its output, saved

	mu     sync.Mutex
	acked  map[int64]ackedRec // value number → where
	errors int
	// ackTimes: when each acknowledgement was read, in order (for the
	// throughput around a takeover).
	ackTimes []time.Time
}

type ackedRec struct {
	Partition int
	Offset    int64
}

// ackedPrefix is VerifiableProducer's --value-prefix (it takes an
// integer): the value of record i is "7.i".
const ackedPrefix = "7"

// startAckedProducer runs VerifiableProducer on topic (acks=all,
// idempotent) at about rate records/s until stopped.
func startAckedProducer(t *testing.T, k *Kafka, dir, bootstrap, topic string, rate int) *ackedProducer {
	t.Helper()
	cfg := filepath.Join(dir, "tools", "acked-producer-"+topic+".properties")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		fatalf(t, "%v", err)
	}
	if err := os.WriteFile(cfg, []byte("enable.idempotence=true\nacks=all\nlinger.ms=5\nbatch.size=65536\n"+
		"max.in.flight.requests.per.connection=5\nretries=2147483647\n"), 0o644); err != nil {
		fatalf(t, "%v", err)
	}
	p := &ackedProducer{prefix: ackedPrefix, done: make(chan struct{}), acked: map[int64]ackedRec{},
		path: filepath.Join(dir, "tools", "acked-producer-"+topic+".out")}
	cmd, err := k.ToolCommand(context.Background(), dir, "org.apache.kafka.tools.VerifiableProducer",
		"--bootstrap-server", bootstrap, "--topic", topic, "--acks", "-1",
		"--throughput", strconv.Itoa(rate), "--producer.config", cfg, "--value-prefix", p.prefix)
	if err != nil {
		fatalf(t, "%v", err)
	}
	p.cmd = cmd
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		fatalf(t, "%v", err)
	}
	save, err := os.Create(p.path)
	if err != nil {
		fatalf(t, "%v", err)
	}
	if err := p.cmd.Start(); err != nil {
		fatalf(t, "starting VerifiableProducer: %v", err)
	}
	go func() {
		defer close(p.done)
		defer save.Close()
		sc := bufio.NewScanner(io.TeeReader(out, save))
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			p.line(sc.Bytes())
		}
		_ = p.cmd.Wait()
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *ackedProducer) line(l []byte) {
	var ev struct {
		Name      string `json:"name"`
		Value     string `json:"value"`
		Partition int    `json:"partition"`
		Offset    int64  `json:"offset"`
	}
	if json.Unmarshal(l, &ev) != nil {
		return
	}
	n := int64(-1)
	if v, ok := strings.CutPrefix(ev.Value, p.prefix+"."); ok {
		n, _ = strconv.ParseInt(v, 10, 64)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch ev.Name {
	case "producer_send_success":
		p.acked[n] = ackedRec{ev.Partition, ev.Offset}
		p.ackTimes = append(p.ackTimes, time.Now())
	case "producer_send_error":
		p.errors++
	}
}

// Acked is how many records were acknowledged so far.
func (p *ackedProducer) Acked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

// waitAcked waits until n records were acknowledged.
func (p *ackedProducer) waitAcked(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	err := waitFor(timeout, fmt.Sprintf("%d acknowledged records", n), func() (bool, error) {
		select {
		case <-p.done:
			return false, fmt.Errorf("VerifiableProducer exited: %s", lastLines(p.stderr.Bytes(), 20))
		default:
		}
		return p.Acked() >= n, nil
	})
	if err != nil {
		fatalf(t, "%v", err)
	}
}

// kill ends the producer (SIGKILL) and waits for its output to be read.
// What it printed is all that it knows was acknowledged.
func (p *ackedProducer) kill() {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.done
}

// results stops the producer and returns the acknowledged records.
func (p *ackedProducer) results() map[int64]ackedRec {
	p.kill()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acked
}

// checkAcked checks the records consumed from the producer's topic: every
// acknowledged record is there, at the partition and offset it was
// acknowledged at, with its value; every other record is one the
// producer may have sent (in flight when it stopped); none is there
// twice.
func checkAcked(t *testing.T, topic string, recs []Record, p *ackedProducer) {
	t.Helper()
	acked := p.results()
	seen := map[int64]bool{}
	bad, inflight := 0, 0
	for _, r := range recs {
		v, ok := strings.CutPrefix(r.Value, p.prefix+".")
		n, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil || n < 0 {
			bad++
			if bad <= 5 {
				errorf(t, "%s: record at %d/%d has a value that VerifiableProducer did not send: %.80q", topic, r.Partition, r.Offset, r.Value)
			}
			continue
		}
		if seen[n] {
			bad++
			errorf(t, "%s: record %d is in the log twice (again at %d/%d)", topic, n, r.Partition, r.Offset)
			continue
		}
		seen[n] = true
		a, isAcked := acked[n]
		switch {
		case !isAcked:
			inflight++
		case a.Partition != r.Partition || a.Offset != r.Offset:
			bad++
			if bad <= 5 {
				errorf(t, "%s: record %d was acknowledged at %d/%d, found at %d/%d", topic, n, a.Partition, a.Offset, r.Partition, r.Offset)
			}
		}
	}
	var lost []int64
	for n := range acked {
		if !seen[n] {
			lost = append(lost, n)
		}
	}
	sort.Slice(lost, func(i, j int) bool { return lost[i] < lost[j] })
	if len(lost) > 0 || bad > 0 {
		nl := len(lost)
		if nl > 10 {
			lost = lost[:10]
		}
		fatalf(t, "%s: %d acknowledged records lost (e.g. %v), %d bad records, of %d acknowledged and %d consumed", topic, nl, lost, bad, len(acked), len(recs))
	}
	p.mu.Lock()
	sendErrors := p.errors
	p.mu.Unlock()
	t.Logf("%s: all %d acknowledged records there, at their offsets, content verified; %d more that were in flight (%d sends reported failed)",
		topic, len(acked), inflight, sendErrors)
}

// ---------------------------------------------------------------------------
// Topics and offsets through a bootstrap string (a cluster, or a broker).

// topicCmd runs TopicCommand.
func topicCmd(t *testing.T, k *Kafka, dir, bootstrap string, args ...string) []byte {
	t.Helper()
	return k.MustTool(t, dir, 2*time.Minute, nil, "org.apache.kafka.tools.TopicCommand",
		append([]string{"--bootstrap-server", bootstrap}, args...)...)
}

// offsets returns every partition's end offset (time -1) or start offset
// (time -2) of topic, keyed by partition, retrying while partitions have
// no leader.
func offsets(t *testing.T, k *Kafka, dir, bootstrap, topic string, time_ string) map[int]int64 {
	t.Helper()
	var res map[int]int64
	var last string
	err := waitFor(90*time.Second, "GetOffsetShell for "+topic, func() (bool, error) {
		out, errOut, err := k.Tool(dir, time.Minute, nil, "org.apache.kafka.tools.GetOffsetShell",
			"--bootstrap-server", bootstrap, "--topic", topic, "--time", time_)
		if err != nil {
			last = fmt.Sprintf("%v: %s", err, lastLines(errOut, 10))
			return false, nil
		}
		res = map[int]int64{}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Split(l, ":")
			if len(f) != 3 {
				continue
			}
			p, err1 := strconv.Atoi(f[1])
			off, err2 := strconv.ParseInt(f[2], 10, 64)
			if err1 != nil || err2 != nil {
				return false, fmt.Errorf("GetOffsetShell line %q", l)
			}
			res[p] = off
		}
		return len(res) > 0, nil
	})
	if err != nil {
		fatalf(t, "%v (last: %s)", err, last)
	}
	return res
}

func sumInts(m map[int]int64) int64 {
	var s int64
	for _, v := range m {
		s += v
	}
	return s
}

// ---------------------------------------------------------------------------
// Segments on disk

// topicSpec is what checkSegments expects of a topic's partitions.
type topicSpec struct {
	// Records is the total over the partitions (-1: not checked).
	Records int64
	// Dense: offsets run without gaps from each partition's first
	// segment's base offset (not for a compacted topic). Otherwise they
	// only increase.
	Dense bool
	// Start is each partition's first offset (log start), if known.
	Start map[int]int64
}

// checkSegments runs DumpLogSegments --deep-iteration on every .log under
// logDir (the broker must be stopped) and checks that every batch is
// valid and that nothing unexpected is printed; for the topics in specs,
// that offsets are in order (dense from the start where Dense) and add up.
// It returns the number of .log segments per partition directory.
func checkSegments(t *testing.T, k *Kafka, dir, logDir string, specs map[string]topicSpec) map[string]int {
	t.Helper()
	files := LogFiles(t, logDir)
	parts := make([]string, 0, len(files))
	for p := range files {
		parts = append(parts, p)
	}
	sort.Strings(parts)
	var all []string
	for _, p := range parts {
		all = append(all, files[p]...)
	}
	start := time.Now()
	dumps := k.DumpSegments(t, dir, all)
	byPath := map[string]SegmentDump{}
	batches := 0
	for _, d := range dumps {
		byPath[d.Path] = d
		batches += d.Batches
		for _, l := range d.InvalidBatches {
			errorf(t, "%s: invalid batch: %s", d.Path, l)
		}
		for _, l := range d.Unexpected {
			errorf(t, "%s: DumpLogSegments says: %s", d.Path, l)
		}
	}
	counts := map[string]int{}
	records := map[string]int64{}
	for _, p := range parts {
		counts[p] = len(files[p])
		i := strings.LastIndex(p, "-")
		topic := p[:i]
		partition, _ := strconv.Atoi(p[i+1:])
		spec, ok := specs[topic]
		if !ok {
			continue
		}
		next := int64(-1)
		if s, ok := spec.Start[partition]; ok {
			next = s
		}
		for _, f := range files[p] {
			d, ok := byPath[f]
			if !ok {
				fatalf(t, "DumpLogSegments said nothing about %s", f)
			}
			base, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(f), ".log"), 10, 64)
			if err != nil {
				errorf(t, "%s: not a segment name", f)
				continue
			}
			if spec.Dense && next >= 0 && base != next {
				errorf(t, "%s: segment base offset %d, want %d (the previous segment's end)", f, base, next)
			}
			if next < 0 {
				next = base
			}
			if int64(len(d.RecordOffsets)) != d.Records {
				errorf(t, "%s: %d record lines for %d records in the batches", f, len(d.RecordOffsets), d.Records)
			}
			for _, o := range d.RecordOffsets {
				if (spec.Dense && o != next) || o < next || o < base {
					fatalf(t, "%s: record offset %d, want %s%d", f, o, map[bool]string{true: "", false: "at least "}[spec.Dense], next)
				}
				next = o + 1
			}
			records[topic] += d.Records
		}
	}
	for topic, spec := range specs {
		if spec.Records >= 0 && records[topic] != spec.Records {
			errorf(t, "DumpLogSegments counted %d records in %s, want %d", records[topic], topic, spec.Records)
		}
	}
	t.Logf("DumpLogSegments --deep-iteration: all %d batches in %d segments valid (%v); records per topic checked: %v",
		batches, len(dumps), time.Since(start).Round(time.Millisecond), records)
	return counts
}

// evictPageCache drops the kernel's cached pages of the files (through
// the mount: POSIX_FADV_DONTNEED on the FUSE inode), so that the next
// reads reach tierfs, as reads of data written long ago do in
// production.
func evictPageCache(t *testing.T, paths []string) {
	t.Helper()
	for _, p := range paths {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fatalf(t, "open %s: %v", p, err)
		}
		err = unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
		unix.Close(fd)
		if err != nil {
			fatalf(t, "fadvise %s: %v", p, err)
		}
	}
}

// tracesOf walks the tiers' backing directories (their whole trees,
// tierfs's own state included) and returns every path whose name
// contains name.
func tracesOf(t *testing.T, name string, roots ...string) []string {
	t.Helper()
	var out []string
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) && path != root {
				return nil
			}
			if err != nil {
				return err
			}
			if strings.Contains(d.Name(), name) {
				out = append(out, path)
			}
			if d.Type().IsRegular() && strings.HasPrefix(path, filepath.Join(root, ".tierfs")+"/") {
				// tierfs's own state (journal, inode table) must not
				// remember the name either.
				if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(name)) {
					out = append(out, path+" (content)")
				}
			}
			return nil
		})
		if err != nil {
			fatalf(t, "walking %s: %v", root, err)
		}
	}
	return out
}

// checkBacking checks the tiers' backing directories against the mount
// (nothing may be writing): every file on the mount is on exactly one
// tier, with the same size, and no tier holds a file the mount does not
// show (an orphan or a duplicate left by an interrupted move). tierfs's
// own .tierfs directory is left out.
func checkBacking(t *testing.T, fs *Tierfs) {
	t.Helper()
	onMount := map[string]int64{}
	err := filepath.WalkDir(fs.Mnt, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(fs.Mnt, path)
		onMount[rel] = fi.Size()
		return nil
	})
	if err != nil {
		fatalf(t, "walking the mount: %v", err)
	}
	copies := map[string][]string{}
	for _, tier := range []struct{ name, root string }{{"fast", fs.FastData}, {"slow", fs.SlowData}} {
		err := filepath.WalkDir(tier.root, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(tier.root, path)
			if d.IsDir() && rel == ".tierfs" {
				return filepath.SkipDir
			}
			if !d.Type().IsRegular() {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			copies[rel] = append(copies[rel], tier.name)
			if size, ok := onMount[rel]; !ok {
				errorf(t, "%s: %s is on the %s tier but not on the mount", tier.root, rel, tier.name)
			} else if fi.Size() != size {
				errorf(t, "%s: %s has %d bytes on the %s tier, %d on the mount", tier.root, rel, fi.Size(), tier.name, size)
			}
			return nil
		})
		if err != nil {
			fatalf(t, "walking %s: %v", tier.root, err)
		}
	}
	for rel := range onMount {
		switch c := copies[rel]; len(c) {
		case 1:
		case 0:
			errorf(t, "%s is on the mount but on no tier", rel)
		default:
			errorf(t, "%s is on several tiers: %v", rel, c)
		}
	}
	t.Logf("backing directories: each of the %d files on the mount is on exactly one tier", len(onMount))
}

// logLinesMatching returns the lines of the files that match re.
func logLinesMatching(re *regexp.Regexp, paths ...string) []string {
	var out []string
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			if re.Match(sc.Bytes()) {
				out = append(out, sc.Text())
			}
		}
		f.Close()
	}
	return out
}

// waitLogLines waits until at least n lines of the broker's current log
// match re.
func waitLogLines(t *testing.T, b *Broker, re *regexp.Regexp, n int, timeout time.Duration, what string) []string {
	t.Helper()
	var lines []string
	err := waitFor(timeout, what, func() (bool, error) {
		if !b.Running() {
			return false, fmt.Errorf("the broker exited")
		}
		lines = logLinesMatching(re, b.Log)
		return len(lines) >= n, nil
	})
	if err != nil {
		fatalf(t, "%v (%d of %d lines matching %q)", err, len(lines), n, re)
	}
	return lines
}

// problemsExcept returns the broker log problem lines (ProblemLinesIn)
// that match none of the allowed patterns.
func problemsExcept(allowed []*regexp.Regexp, paths ...string) []string {
	var out []string
	skipTrace := false
next:
	for _, l := range ProblemLinesIn(paths...) {
		if strings.HasPrefix(l, "    ") { // the stack trace of the line before
			if !skipTrace {
				out = append(out, l)
			}
			continue
		}
		skipTrace = false
		for _, re := range allowed {
			if re.MatchString(l) {
				skipTrace = true
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

// checkNoProblems fails the test on broker log problem lines other than
// the allowed ones.
func checkNoProblems(t *testing.T, allowed []*regexp.Regexp, paths ...string) {
	t.Helper()
	if p := problemsExcept(allowed, paths...); len(p) > 0 {
		if len(p) > 100 {
			p = append(p[:100], fmt.Sprintf("... and %d more lines", len(p)-100))
		}
		errorf(t, "the broker logged %d problem lines (a filesystem bug?):\n%s", len(p), strings.Join(p, "\n"))
	}
}

// checkTierfsErrors fails the test if tierfs logged errors.
func checkTierfsErrors(t *testing.T, fs *Tierfs) {
	t.Helper()
	if lines := fs.ErrorLines(); len(lines) > 0 {
		errorf(t, "tierfs logged errors:\n%s", strings.Join(lines, "\n"))
	}
}
