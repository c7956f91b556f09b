package bench

// What the Kafka benchmarks share: the switches and sizes, the throttled
// HDD with a page cache in proportion, Kafka's ProducerPerformance run in
// the background with its periodic reports kept, ConsumerPerformance,
// and a sampler that records, every half second, how far the topics' logs
// have grown (the producer's acknowledged throughput, seen on disk) and
// what `tierfs status` says of the tiers and the moves.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tierfs/tierfs/integration"
	"github.com/tierfs/tierfs/integration/benchkit"
	"github.com/tierfs/tierfs/internal/control"
)

const (
	// envBench turns the benchmarks on.
	envBench = "TIERFS_BENCH"
	skipMsg  = "a benchmark: set TIERFS_BENCH=1 (make bench)"

	// recordSize is the size of every record the benchmarks produce.
	recordSize = 1024

	mib = int64(1 << 20)
	gib = int64(1 << 30)
)

// Environment of the Kafka benchmarks (documented in the fragments too):
//
//	TIERFS_BENCH=1              run them
//	TIERFS_BENCH_SCALE=F        multiply every size and duration (default 1)
//	TIERFS_BENCH_RUNS=N         repetitions where there are some (default 5 for the judged sections, micro and kafka; 3 elsewhere)
//	TIERFS_BENCH_HOLD_MEMORY=0  a smoke run: do not hold the guest's memory (see holdMemory)
//	TIERFS_BENCH_HDD_BPS=B      the HDD's read and write limit, bytes/s (default 100 MiB/s)
//	TIERFS_BENCH_HDD_DIRTY=B    the most dirty page cache in front of the HDD (default 64 MiB; 0: the kernel's)
//	TIERFS_BIN=FILE             the tierfs binary (default: built without -race for the test)

// benchSetup skips unless TIERFS_BENCH=1; otherwise it needs what the
// Kafka tests need (integration.RequireKafka fails the test when
// something is missing), gives the tools a full JIT (the producer must not
// be what limits) and a tierfs binary built without -race.
func benchSetup(t *testing.T, cmds map[string]string) *integration.Kafka {
	t.Helper()
	if os.Getenv(envBench) != "1" {
		t.Skip(skipMsg)
	}
	t.Setenv(integration.EnvEnable, "1")
	if len(cmds) > 0 {
		if err := benchkit.EnsurePackages(cmds); err != nil {
			t.Fatalf("%v", err)
		}
	}
	k := integration.RequireKafka(t)
	k.ToolJVM = []string{"-Xmx1g", "-Djava.awt.headless=true"}
	tierfsBin(t)
	holdMemory(t)
	return k
}

// fsBenchSetup is benchSetup for the benchmarks without Kafka: it skips
// unless TIERFS_BENCH=1, needs root (they mount), installs cmds and
// provides a tierfs binary built without -race.
func fsBenchSetup(t *testing.T, cmds map[string]string) {
	t.Helper()
	if os.Getenv(envBench) != "1" {
		t.Skip(skipMsg)
	}
	// Asked to run, it must not pass by doing nothing.
	if os.Geteuid() != 0 {
		t.Fatalf("the benchmarks need root (they mount tmpfs, tierfs and mergerfs)")
	}
	if len(cmds) > 0 {
		if err := benchkit.EnsurePackages(cmds); err != nil {
			t.Fatal(err)
		}
	}
	tierfsBin(t)
	holdMemory(t)
}

// tierfsBin builds ./cmd/tierfs without -race into the test's temporary
// directory and points TIERFS_BIN at it for the test, unless TIERFS_BIN
// is set already.
func tierfsBin(t *testing.T) {
	t.Helper()
	if os.Getenv("TIERFS_BIN") != "" {
		return
	}
	out := filepath.Join(t.TempDir(), "tierfs")
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	cmd := exec.Command(goCmd, "build", "-o", out, "./cmd/tierfs")
	cmd.Dir = integration.RepoRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/tierfs: %v\n%s", err, b)
	}
	t.Setenv("TIERFS_BIN", out)
}

// scale is TIERFS_BENCH_SCALE (default 1).
func scale(t *testing.T) float64 {
	t.Helper()
	return envFloat(t, "TIERFS_BENCH_SCALE", 1)
}

// scaled is n·scale, rounded to whole MiB, at least one MiB.
func scaled(t *testing.T, n int64) int64 {
	return max(mib, int64(math.Round(float64(n)*scale(t)/float64(mib)))*mib)
}

// runs is how many measured runs a benchmark makes: TIERFS_BENCH_RUNS,
// or def.
func runs(t *testing.T, def int) int { return int(envFloat(t, "TIERFS_BENCH_RUNS", float64(def))) }

func envFloat(t *testing.T, name string, def float64) float64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return v
}

// envBytes reads a byte count (a plain integer); def when unset. zeroOK
// allows 0.
func envBytes(t *testing.T, name string, def int64, zeroOK bool) int64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || (v == 0 && !zeroOK) {
		t.Fatalf("%s=%q: want a number of bytes", name, s)
	}
	return v
}

// ---------------------------------------------------------------------------
// The HDD

// hddBPS is the HDD's throttle: TIERFS_BENCH_HDD_BPS, default 100 MiB/s.
func hddBPS(t *testing.T) int64 { return envBytes(t, "TIERFS_BENCH_HDD_BPS", 100*mib, false) }

// setupHDD makes the throttled HDD (benchkit.SetupHDD) under work and
// bounds the dirty page cache in front of it (TIERFS_BENCH_HDD_DIRTY,
// default 64 MiB): the device's own writeback limit (strict_limit,
// max_bytes in /sys/class/bdi/MAJ:MIN). Without it a machine with much free memory
// takes gigabytes of writes into its page cache at memory speed before a
// writer is throttled, so that an HDD-only broker would seem as fast as
// tmpfs for any burst the benchmark can afford; on a real broker the
// bursts are larger than the dirty memory. The bound makes a writer to the
// HDD wait for the disk once 64 MiB are dirty, whoever writes: Kafka on
// the HDD alone, or tierfs's moves and spills to its slow tier. Both are
// undone in t.Cleanup.
func setupHDD(t *testing.T, work string, size int64) *benchkit.HDD {
	t.Helper()
	h, err := benchkit.SetupHDD(work, size, hddBPS(t))
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("closing the HDD: %v", err)
		}
	})
	limitDirty(t, h)
	t.Logf("HDD: %s on %s (%s), %s/s read and write", h.Dir, h.Dev, h.MajMin(), mibStr(h.BPS))
	return h
}

// setHDDBPS changes the HDD's throttle (read and write) to bps bytes/s:
// the same rules of the root blkio cgroup that benchkit set, and that
// HDD.Close resets.
func setHDDBPS(t *testing.T, h *benchkit.HDD, bps int64) {
	t.Helper()
	for _, f := range []string{"blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"} {
		p := filepath.Join(benchkit.BlkioRoot, f)
		if err := os.WriteFile(p, []byte(fmt.Sprintf("%s %d\n", h.MajMin(), bps)), 0); err != nil {
			t.Fatalf("echo '%s %d' > %s: %v", h.MajMin(), bps, p, err)
		}
	}
	h.BPS = bps
}

// limitDirty bounds the dirty page cache in front of the HDD
// (TIERFS_BENCH_HDD_DIRTY, default 64 MiB; 0 leaves the kernel's
// default): strict_limit and max_bytes of its /sys/class/bdi/MAJ:MIN,
// restored in t.Cleanup.
func limitDirty(t *testing.T, h *benchkit.HDD) {
	t.Helper()
	dirty := envBytes(t, "TIERFS_BENCH_HDD_DIRTY", 64*mib, true)
	if dirty == 0 {
		return
	}
	bdi := filepath.Join("/sys/class/bdi", h.MajMin())
	// Set max_bytes and strict_limit; restore strict_limit and max_ratio
	// (max_bytes is max_ratio in other units: writing back the bytes it
	// showed would round the ratio).
	for _, kv := range [][3]string{{"max_bytes", strconv.FormatInt(dirty, 10), "max_ratio"}, {"strict_limit", "1", "strict_limit"}} {
		p, restore := filepath.Join(bdi, kv[0]), filepath.Join(bdi, kv[2])
		old, err := os.ReadFile(restore)
		if err != nil {
			t.Fatalf("%v (a kernel without per-device dirty limits? set TIERFS_BENCH_HDD_DIRTY=0)", err)
		}
		if err := os.WriteFile(p, []byte(kv[1]), 0); err != nil {
			t.Fatalf("echo %s > %s: %v", kv[1], p, err)
		}
		t.Cleanup(func() {
			if err := os.WriteFile(restore, bytes.TrimSpace(old), 0); err != nil {
				t.Errorf("restoring %s: %v", restore, err)
			}
		})
	}
}

// hddWriteBandwidth measures the HDD's own write bandwidth as tierfs's
// moves use it: n bytes written in 1 MiB writes, then fsync, timed to the
// end of the fsync; the file is removed. Median of 3.
func hddWriteBandwidth(t *testing.T, dir string, n int64) float64 {
	t.Helper()
	buf := make([]byte, mib)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	var rates []float64
	for i := 0; i < 3; i++ {
		p := filepath.Join(dir, fmt.Sprintf("bandwidth-%d", i))
		f, err := os.Create(p)
		if err != nil {
			t.Fatalf("%v", err)
		}
		start := time.Now()
		for w := int64(0); w < n; w += mib {
			if _, err := f.Write(buf); err != nil {
				t.Fatalf("%v", err)
			}
		}
		if err := f.Sync(); err != nil {
			t.Fatalf("%v", err)
		}
		d := time.Since(start)
		f.Close()
		os.Remove(p)
		rates = append(rates, float64(n)/float64(mib)/d.Seconds())
	}
	syscall.Sync()
	return benchkit.Median(rates)
}

// ---------------------------------------------------------------------------
// Kafka

// brokerProps are the settings every benchmark broker gets: deleted
// segments and topics go after 1 s instead of 60 (the space comes back
// while the benchmark watches), retention is checked every second.
func brokerProps(extra map[string]string) map[string]string {
	m := map[string]string{
		"log.segment.delete.delay.ms":     "1000",
		"log.retention.check.interval.ms": "1000",
		"num.partitions":                  "4",
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// policyTable is a [policy] table: KRaft's metadata log pinned (the log
// dir is a directory below the mount root), a plan every second, files
// idle for 5 s sealed.
func policyTable(threshold float64, extra ...string) string {
	return fmt.Sprintf(`
[policy]
migrate_threshold = %v
interval = "1s"
min_age = "5s"
pin = ["**/__cluster_metadata-*/**"]
%s
`, threshold, strings.Join(extra, "\n"))
}

func deleteTopic(t *testing.T, b *integration.Broker, dir, topic string) {
	t.Helper()
	b.K.MustTool(t, dir, 2*time.Minute, nil, "org.apache.kafka.tools.TopicCommand",
		"--bootstrap-server", b.Bootstrap(), "--delete", "--topic", topic)
}

// perfLineRE matches ProducerPerformance's periodic and final lines. Its
// "MB/sec" is MiB/s (bytes / 1024 / 1024).
var perfLineRE = regexp.MustCompile(`^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency`)

// perfReport is one line of ProducerPerformance.
type perfReport struct {
	At        time.Time // when the line came
	Records   int64
	RecPerSec float64
	MiBPerSec float64
	AvgLatMs  float64
	MaxLatMs  float64
	Final     bool
	Line      string
}

// producer is a ProducerPerformance running in the background.
type producer struct {
	Topic   string
	Records int64
	Rate    int // records/s; -1: as fast as it can
	Start   time.Time
	End     time.Time // when it exited

	cmd    *exec.Cmd
	done   chan struct{}
	stderr bytes.Buffer

	mu      sync.Mutex
	reports []perfReport
}

// startProducer runs ProducerPerformance: records records of recordSize
// bytes to topic, at rate records/s (-1: unthrottled), acks=all,
// idempotent, linger.ms=5, batch.size=64 KiB. Its output is kept under
// dir/tools/.
func startProducer(t *testing.T, b *integration.Broker, dir, topic string, records int64, rate int) *producer {
	t.Helper()
	p := &producer{Topic: topic, Records: records, Rate: rate, done: make(chan struct{})}
	cmd, err := b.K.ToolCommand(context.Background(), dir, "org.apache.kafka.tools.ProducerPerformance",
		"--topic", topic, "--num-records", strconv.FormatInt(records, 10), "--record-size", strconv.Itoa(recordSize),
		"--throughput", strconv.Itoa(rate),
		"--producer-props", "bootstrap.servers="+b.Bootstrap(), "acks=all", "enable.idempotence=true",
		"linger.ms=5", "batch.size=65536", "delivery.timeout.ms=600000", "request.timeout.ms=120000")
	if err != nil {
		t.Fatalf("%v", err)
	}
	p.cmd = cmd
	cmd.Stderr = &p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("%v", err)
	}
	save, err := os.Create(filepath.Join(dir, "tools", fmt.Sprintf("producer-%s-%d.out", topic, time.Now().UnixNano())))
	if err != nil {
		t.Fatalf("%v", err)
	}
	p.Start = time.Now()
	if err := cmd.Start(); err != nil {
		save.Close()
		t.Fatalf("starting ProducerPerformance: %v", err)
	}
	go func() {
		defer close(p.done)
		defer save.Close()
		sc := bufio.NewScanner(io.TeeReader(out, save))
		for sc.Scan() {
			l := sc.Text()
			m := perfLineRE.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			r := perfReport{At: time.Now(), Line: l, Final: strings.Contains(l, "50th")}
			r.Records, _ = strconv.ParseInt(m[1], 10, 64)
			r.RecPerSec, _ = strconv.ParseFloat(m[2], 64)
			r.MiBPerSec, _ = strconv.ParseFloat(m[3], 64)
			r.AvgLatMs, _ = strconv.ParseFloat(m[4], 64)
			r.MaxLatMs, _ = strconv.ParseFloat(m[5], 64)
			p.mu.Lock()
			p.reports = append(p.reports, r)
			p.mu.Unlock()
		}
		_ = cmd.Wait()
		p.End = time.Now()
	}()
	t.Cleanup(p.kill)
	return p
}

func (p *producer) kill() {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.done
}

// running reports whether it has not exited yet.
func (p *producer) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// wait waits for it to end and returns its final summary; it fails the
// test if it failed, printed exceptions, or did not send every record.
func (p *producer) wait(t *testing.T, timeout time.Duration) perfReport {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
		t.Fatalf("ProducerPerformance to %s did not end within %v", p.Topic, timeout)
	}
	reps := p.Reports()
	errOut := p.stderr.Bytes()
	if st := p.cmd.ProcessState; st == nil || !st.Success() {
		t.Fatalf("ProducerPerformance to %s failed (%v):\n%s", p.Topic, p.cmd.ProcessState, lastLines(errOut, 30))
	}
	if bytes.Contains(errOut, []byte("Exception")) {
		t.Fatalf("ProducerPerformance to %s reported exceptions:\n%s", p.Topic, lastLines(errOut, 30))
	}
	if len(reps) == 0 || !reps[len(reps)-1].Final {
		t.Fatalf("ProducerPerformance to %s printed no summary:\n%s", p.Topic, lastLines(errOut, 30))
	}
	f := reps[len(reps)-1]
	if f.Records != p.Records {
		t.Fatalf("ProducerPerformance sent %d records to %s, want %d: %s", f.Records, p.Topic, p.Records, f.Line)
	}
	return f
}

// Reports returns the lines parsed so far.
func (p *producer) Reports() []perfReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]perfReport(nil), p.reports...)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// consumerResult is ConsumerPerformance's summary.
type consumerResult struct {
	MiB         float64 // data.consumed.in.MB (MiB)
	MiBPerSec   float64 // MB.sec: over the whole run, group join included
	FetchPerSec float64 // fetch.MB.sec: the fetching alone
	Records     int64
}

// consumerPerf reads n records of topic from the beginning with
// ConsumerPerformance in a new group.
func consumerPerf(t *testing.T, b *integration.Broker, dir, topic string, n int64) consumerResult {
	t.Helper()
	out := b.K.MustTool(t, dir, 5*time.Minute, nil, "org.apache.kafka.tools.ConsumerPerformance",
		"--bootstrap-server", b.Bootstrap(), "--topic", topic, "--messages", strconv.FormatInt(n, 10),
		"--timeout", "120000", "--group", "bench-"+integration.NewClusterID())
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "start.time") || i+1 >= len(lines) {
			continue
		}
		hdr := strings.Split(l, ",")
		val := strings.Split(lines[i+1], ",")
		get := func(name string) float64 {
			for j, h := range hdr {
				if strings.TrimSpace(h) == name && j < len(val) {
					v, err := strconv.ParseFloat(strings.TrimSpace(val[j]), 64)
					if err == nil {
						return v
					}
				}
			}
			t.Fatalf("ConsumerPerformance: no %s in\n%s", name, out)
			return 0
		}
		r := consumerResult{MiB: get("data.consumed.in.MB"), MiBPerSec: get("MB.sec"),
			FetchPerSec: get("fetch.MB.sec"), Records: int64(get("data.consumed.in.nMsg"))}
		if r.Records != n {
			t.Fatalf("ConsumerPerformance consumed %d records of %s, want %d", r.Records, topic, n)
		}
		return r
	}
	t.Fatalf("no summary in ConsumerPerformance's output:\n%s", out)
	return consumerResult{}
}

// ---------------------------------------------------------------------------
// tierfs's control socket

// tfStatus is `tierfs status --json`, as internal/control's client
// reads it.
type tfStatus struct {
	control.StatusResponse
}

// describeRequests says how the kernel's requests reach the daemon.
func describeRequests(r *control.RequestsStatus) string {
	if r == nil {
		return "status says nothing of the transport"
	}
	if r.Transport != "io_uring" {
		return r.Transport + ", data through " + r.DataPath
	}
	return fmt.Sprintf("io_uring: %d queues of %d threads, %d requests answered over io_uring so far, data through %s",
		r.Queues, r.ThreadsPerQueue, r.ServedIOUring, r.DataPath)
}

func (s *tfStatus) tier(name string) (used, capacity int64) {
	for _, tr := range s.Tiers {
		if tr.Name == name {
			return tr.UsedBytes, tr.CapacityBytes
		}
	}
	return -1, -1
}

// statusClient asks the daemon serving mnt for its status over its
// control socket with internal/control's client: what `tierfs status
// --json` prints, without starting a process twice a second.
type statusClient struct {
	c *control.Client
}

func newStatusClient(mnt string) *statusClient {
	abs, _ := filepath.Abs(mnt)
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	c, err := control.NewClient(abs)
	if err != nil {
		panic(err) // only an unusable working directory makes Abs fail
	}
	return &statusClient{c: c}
}

func (c *statusClient) get() (*tfStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.c.Status(ctx)
	if err != nil {
		return nil, err
	}
	return &tfStatus{st}, nil
}

// mustStatus is get, failing the test on an error.
func (c *statusClient) mustStatus(t *testing.T) *tfStatus {
	t.Helper()
	st, err := c.get()
	if err != nil {
		t.Fatalf("tierfs status: %v", err)
	}
	return st
}

// ---------------------------------------------------------------------------
// The sampler

// sample is the state at one instant.
type sample struct {
	T        float64 // seconds since the sampler started
	LogBytes int64   // bytes appended to the topics' logs so far
	FastUsed int64   // tierfs: the fast tier's used bytes; -1 without tierfs
	SlowUsed int64
	// Moved is every byte tierfs moved since the mount (moves done,
	// spills included) plus the progress of the policy's moves in
	// flight.
	Moved    int64
	Spills   int64 // moves done that the policy did not make (ENOSPC spills and manual moves)
	InFlight int   // policy moves copying now
}

// sampler records a sample every interval until stopped.
type sampler struct {
	T0 time.Time

	roots  []string // directories holding log dirs' partitions, walked
	status *statusClient

	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	samples []sample
	errs    []string
	seen    map[string]int64 // partition/segment.log → largest size seen
}

// startSampler samples every interval. roots are the directories to walk
// for the topics' segments: the log dir, or for tierfs the log dir's
// place on every tier's backing directory (walking the backing files
// costs the daemon nothing). status, if not nil, is asked for the tiers.
func startSampler(t *testing.T, interval time.Duration, status *statusClient, roots ...string) *sampler {
	s := &sampler{T0: time.Now(), roots: roots, status: status, stop: make(chan struct{}),
		done: make(chan struct{}), seen: map[string]int64{}}
	go func() {
		defer close(s.done)
		tk := time.NewTicker(interval)
		defer tk.Stop()
		for {
			s.sampleOnce()
			select {
			case <-s.stop:
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(s.Stop)
	return s
}

// Stop ends the sampling; it may be called more than once.
func (s *sampler) Stop() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// Now is the time since the sampler started, in seconds.
func (s *sampler) Now() float64 { return time.Since(s.T0).Seconds() }

// At converts a time to the sampler's seconds.
func (s *sampler) At(tm time.Time) float64 { return tm.Sub(s.T0).Seconds() }

// Samples returns the samples so far.
func (s *sampler) Samples() []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sample(nil), s.samples...)
}

// Errors returns the status errors seen (at most 20).
func (s *sampler) Errors() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.errs...)
}

// Last is the latest sample.
func (s *sampler) Last() sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == 0 {
		return sample{FastUsed: -1, SlowUsed: -1}
	}
	return s.samples[len(s.samples)-1]
}

func (s *sampler) sampleOnce() {
	sm := sample{T: s.Now(), FastUsed: -1, SlowUsed: -1}
	if s.status != nil {
		st, err := s.status.get()
		if err != nil {
			s.mu.Lock()
			if len(s.errs) < 20 {
				s.errs = append(s.errs, fmt.Sprintf("t=%.1fs: %v", sm.T, err))
			}
			s.mu.Unlock()
		} else {
			sm.FastUsed, _ = st.tier("fast")
			sm.SlowUsed, _ = st.tier("slow")
			sm.Moved = st.Moves.BytesMoved
			sm.Spills = st.Moves.Spills
			if st.Policy != nil {
				sm.InFlight = len(st.Policy.InFlight)
				for _, j := range st.Policy.InFlight {
					sm.Moved += j.Done
				}
			}
		}
	}
	sizes := map[string]int64{}
	for _, root := range s.roots {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // gone meanwhile
			}
			if d.IsDir() {
				if d.Name() == ".tierfs" || strings.HasPrefix(d.Name(), "__") || strings.HasSuffix(d.Name(), "-delete") {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(d.Name(), ".log") {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return nil
			}
			rel := filepath.Base(filepath.Dir(p)) + "/" + d.Name()
			sizes[rel] = max(sizes[rel], info.Size())
			return nil
		})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for rel, n := range sizes {
		s.seen[rel] = max(s.seen[rel], n)
	}
	for _, n := range s.seen {
		sm.LogBytes += n
	}
	s.samples = append(s.samples, sm)
}

// rateSeries turns a cumulative quantity into a rate in MiB/s over
// windows of about w seconds: one point per window, at its end.
func rateSeries(ss []sample, w float64, get func(sample) int64) (xs, ys []float64) {
	if len(ss) == 0 {
		return nil, nil
	}
	prev := ss[0]
	for _, s := range ss[1:] {
		if s.T-prev.T < w-1e-6 {
			continue
		}
		xs = append(xs, s.T)
		ys = append(ys, float64(get(s)-get(prev))/float64(mib)/(s.T-prev.T))
		prev = s
	}
	return xs, ys
}

// between is the change of a cumulative quantity from time a to time b
// (the samples nearest to them), and the exact times those samples have.
func between(ss []sample, a, b float64, get func(sample) int64) (delta int64, ta, tb float64) {
	ia, ib := nearest(ss, a), nearest(ss, b)
	if ia < 0 || ib < 0 {
		return 0, a, b
	}
	return get(ss[ib]) - get(ss[ia]), ss[ia].T, ss[ib].T
}

// nearest is the index of the sample nearest to time x (-1: none).
func nearest(ss []sample, x float64) int {
	best := -1
	for i, s := range ss {
		if best < 0 || math.Abs(s.T-x) < math.Abs(ss[best].T-x) {
			best = i
		}
	}
	return best
}

func logBytes(s sample) int64   { return s.LogBytes }
func movedBytes(s sample) int64 { return s.Moved }

// brokerProblems splits a broker's problem lines into real problems and
// a summary of its slow controller events and of Kafka's races with the
// benchmark's deletions ("" when none): benchkit.SplitBrokerProblems.
func brokerProblems(b *integration.Broker) (problems []string, slow string) {
	return benchkit.SplitBrokerProblems(b.ProblemLines())
}

// ---------------------------------------------------------------------------
// tierfs's log

// moveLine is a "moved" line of the daemon's log: one policy move.
type moveLine struct {
	Path   string  `json:"path"`
	To     string  `json:"to"`
	Reason string  `json:"reason"`
	Bytes  int64   `json:"bytes"`
	DurMs  float64 `json:"dur"`
	Time   string  `json:"time"`
}

// logFacts reads a tierfs log: its policy moves, its spills, and its
// warnings and errors (each distinct message once, with a count).
func logFacts(path string) (moves []moveLine, spills int, problems []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, []string{err.Error()}
	}
	counts := map[string]int{}
	var order []string
	for _, l := range strings.Split(string(b), "\n") {
		var m struct {
			Level   string `json:"level"`
			Message string `json:"message"`
			Error   string `json:"error"`
		}
		if json.Unmarshal([]byte(l), &m) != nil {
			if strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") {
				problems = append(problems, l)
			}
			continue
		}
		switch {
		case m.Message == "moved":
			var mv moveLine
			if json.Unmarshal([]byte(l), &mv) == nil {
				moves = append(moves, mv)
			}
		case m.Message == "tier full: file moved on":
			spills++
		}
		if m.Level == "warn" || m.Level == "error" || m.Level == "fatal" || m.Level == "panic" {
			key := m.Level + ": " + m.Message
			if m.Error != "" {
				key += ": " + m.Error
			}
			if counts[key] == 0 {
				order = append(order, key)
			}
			counts[key]++
		}
	}
	for _, k := range order {
		problems = append(problems, fmt.Sprintf("%s (×%d)", k, counts[k]))
	}
	return moves, spills, problems
}

// ---------------------------------------------------------------------------
// Formatting

func mibStr(n int64) string {
	if n >= gib {
		return strconv.FormatFloat(math.Round(float64(n)/float64(gib)*100)/100, 'f', -1, 64) + " GiB"
	}
	return strconv.FormatFloat(math.Round(float64(n)/float64(mib)*10)/10, 'f', -1, 64) + " MiB"
}

// verdict compares a measured ratio with a target (at least want): "met",
// or "missed by N%".
func verdict(got, want float64) string {
	if math.IsNaN(got) || math.IsInf(got, 0) {
		return "n/a"
	}
	if got >= want {
		return "met"
	}
	return fmt.Sprintf("**missed** by %.0f%% (%.2f against %.2f)", 100*(want-got)/want, got, want)
}

// within is a verdict for |got/want − 1| ≤ tol.
func within(got, want, tol float64) string {
	if math.IsNaN(got) || math.IsNaN(want) || want == 0 || math.IsInf(got, 0) {
		return "n/a"
	}
	d := got/want - 1
	if math.Abs(d) <= tol {
		return fmt.Sprintf("met (%+.0f%%)", 100*d)
	}
	return fmt.Sprintf("**missed**: %+.0f%% (target ±%.0f%%)", 100*d, 100*tol)
}

// codeBlock wraps lines in a fenced block for a fragment.
func codeBlock(lines []string) string {
	if len(lines) == 0 {
		return "(none)\n"
	}
	return "```\n" + strings.Join(lines, "\n") + "\n```\n"
}
