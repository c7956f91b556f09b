package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tierfs/tierfs/integration/benchkit"
	"github.com/tierfs/tierfs/internal/fuseuring"
	"github.com/tierfs/tierfs/internal/supervisor"
	"github.com/tierfs/tierfs/internal/testenv"
)

// takeoverTransports are the request paths the drill runs over, one
// subtest each; the drill asserts that status reports the transport. Over
// io_uring (supervisor_io_uring) a kill -9 of the daemon can fail calls in
// flight with ECANCELED, which the kernel does and tierfs cannot prevent
// (docs/design.md, "Restart under a live mount"), and Kafka takes that for
// a storage error: that subtest replaces the daemon with
// `restart --binary` alone, which loses nothing there.
var takeoverTransports = []struct {
	name      string
	ioUring   bool
	want      string // status's requests.transport
	kills     int
	restarts  int
	mountConf string
}{
	{"dev_fuse", false, "/dev/fuse", takeoverKills, takeoverRestarts, ""},
	{"io_uring", true, "io_uring", 0, 4, "supervisor_io_uring = true\nenable_uring_switch = true\n"},
}

// The drill's size: issue 20's target is 20 kills, 10 in the middle of a
// move; then restarts to another build and back.
const (
	takeoverKills    = 20
	takeoverRestarts = 6
	// takeoverVersion stamps the other build (TierfsBinaryStamped).
	takeoverVersion = "v9.9.9-takeover"
	// takeoverSpacing: acknowledgements between two takeovers (about 1.5 s
	// at the producer's rate), so that each has a second of its own for
	// the throughput around it and steady seconds lie between.
	takeoverSpacing = 6000
	takeoverRate    = 4000 // records/s asked of the producer
)

// TestKafkaTierfsTakeover: with [mount] supervisor, under a running
// broker with a producer writing with acks=all and a consumer reading,
// the serving daemon is killed with SIGKILL 20 times (10 of them while
// the policy moves a segment), then replaced 6 times with `tierfs restart
// --binary`, alternately by another build (stamped with another version)
// and the first one again. Each time a new daemon takes the live
// connection over: the broker never sees its log dir fail and never
// stops, the producer and the consumer see no error, every acknowledged
// record is read back (by the live consumer too), and every segment is
// valid. The pauses are logged, not judged: issue 20's "under 1 s" is a
// figure of the benchmark (TIERFS_TAKEOVER_REPORT=1 writes
// docs/bench/takeover.md, BENCHMARKS.md's section, with its verdict).
func TestKafkaTierfsTakeover(t *testing.T) {
	k := RequireKafka(t)
	for _, tr := range takeoverTransports {
		t.Run(tr.name, func(t *testing.T) {
			if tr.ioUring {
				// The daemon turns the kernel's switch on
				// (enable_uring_switch); others flip it only under
				// this lock.
				testenv.HoldURingSwitch(t)
				was, err := os.ReadFile(fuseuring.EnableParam)
				testenv.Require(t, err == nil, fmt.Sprintf("this kernel has no FUSE over io_uring: %v", err))
				t.Cleanup(func() { os.WriteFile(fuseuring.EnableParam, was, 0o644) })
			}
			takeoverDrill(t, k, tr.ioUring, tr.want, tr.kills, tr.restarts, tr.mountConf)
		})
	}
}

// takeoverEvent is one takeover of the drill.
type takeoverEvent struct {
	kind    string // "kill -9", "kill -9 mid-move", "restart --binary", "restart --binary mid-move"
	at      time.Time
	pauseMs float64 // the supervisor's: death (or drain) to the new daemon serving
}

func takeoverDrill(t *testing.T, k *Kafka, ioUring bool, transport string, kills, restarts int, mountConf string) {
	testStart := time.Now()
	dir := WorkDir(t)
	binA := TierfsBinary(t)
	binB := TierfsBinaryStamped(t, takeoverVersion)
	fs := MountTierfs(t, dir, TierfsOptions{FastSize: "256m", FastCapacity: "24MiB", IOUring: ioUring,
		Extra: policyConfig(0.5, "200ms", "1s", `max_rate = "1MiB/s"`) + "\n[mount]\nsupervisor = true\n" + mountConf})
	if st := fs.Status(t); st.Requests.Transport != transport {
		fatalf(t, "the supervised mount serves requests through %q, want %q", st.Requests.Transport, transport)
	}
	logDir := fs.Mnt + "/kafka-logs"
	b := NewBroker(t, k, dir, logDir, BrokerOptions{})
	b.Start(t)

	const (
		verify  = "verify"
		acked   = "acked"
		verifyN = 15000
	)
	b.CreateTopic(t, dir, verify, 3)
	b.CreateTopic(t, dir, acked, 3)
	p := startAckedProducer(t, k, dir, b.Bootstrap(), acked, takeoverRate)
	c := startLiveConsumer(t, k, dir, b.Bootstrap(), acked)
	produceRange(t, k, b.Bootstrap(), dir, verify, 0, verifyN)
	p.waitAcked(t, 2000, 2*time.Minute)
	c.waitRead(t, 1000, 2*time.Minute)

	var events []takeoverEvent
	moveInFlight := func(what string) bool {
		err := waitFor(60*time.Second, "a policy move in flight", func() (bool, error) {
			st := fs.Status(t)
			return st.Policy != nil && len(st.Policy.InFlight) > 0, nil
		})
		if err != nil {
			t.Logf("%s: no move in flight within 60 s; going on anyway", what)
		}
		return err == nil
	}
	// after checks what must hold after each takeover and lets the
	// producer and the consumer go on for a while.
	after := func(what string) {
		if !b.Running() {
			fatalf(t, "%s: the broker stopped\n--- %s:\n%s", what, b.Log, tail(b.Log, 40))
		}
		if err := c.failure(); err != nil {
			fatalf(t, "%s: the consumer: %v", what, err)
		}
		p.waitAcked(t, p.Acked()+takeoverSpacing, 2*time.Minute)
	}

	for i := 0; i < kills; i++ {
		what := fmt.Sprintf("kill %d", i+1)
		before, err := supervisor.Query(fs.Mnt)
		if err != nil {
			fatalf(t, "the supervisor: %v", err)
		}
		kind := "kill -9"
		if i%2 == 0 && moveInFlight(what) {
			kind += " mid-move"
		}
		at := time.Now()
		if err := syscall.Kill(before.Pid, syscall.SIGKILL); err != nil {
			fatalf(t, "kill -9 %d: %v", before.Pid, err)
		}
		var now supervisor.Status
		err = waitFor(60*time.Second, "a new daemon on the connection", func() (bool, error) {
			now, err = supervisor.Query(fs.Mnt)
			return err == nil && now.Takeovers == before.Takeovers+1 && now.Pid != before.Pid, err
		})
		if err != nil {
			fatalf(t, "%s: %v\n--- %s:\n%s", what, err, fs.Log, tail(fs.Log, 40))
		}
		events = append(events, takeoverEvent{kind: kind, at: at, pauseMs: now.Pauses[len(now.Pauses)-1]})
		after(what)
	}

	// restart --binary: to the other build, back, and so on; the first
	// two and the last two with a move in flight.
	versionA := ""
	for i := 0; i < restarts; i++ {
		bin := binB
		if i%2 == 1 {
			bin = binA
		}
		what := fmt.Sprintf("restart --binary %d (%s)", i+1, filepath.Base(bin))
		kind := "restart --binary"
		if (i/2)%2 == 0 && moveInFlight(what) {
			kind += " mid-move"
		}
		if versionA == "" {
			versionA = fs.daemonVersion(t)
		}
		at := time.Now()
		out := fs.CLI(t, "restart", "--json", "--binary", bin, fs.Mnt)
		var r supervisor.Result
		if err := json.Unmarshal(out, &r); err != nil {
			fatalf(t, "%s: tierfs restart --json printed %q: %v", what, out, err)
		}
		if r.Binary != bin || r.RolledBack || r.NewPid == 0 || r.NewPid == r.OldPid {
			fatalf(t, "%s: %+v", what, r)
		}
		v := fs.daemonVersion(t)
		if bin == binB && !strings.Contains(v, takeoverVersion) || bin == binA && v != versionA {
			fatalf(t, "%s: the daemon says %q (the first build said %q)", what, v, versionA)
		}
		events = append(events, takeoverEvent{kind: kind, at: at, pauseMs: r.PauseMs})
		after(what)
	}

	if l := logLinesMatching(logDirFailedRE, b.Log); len(l) > 0 {
		fatalf(t, "the broker saw its log dir fail: %s", l[0])
	}
	for _, e := range events {
		t.Logf("%s at %s: paused %.1f ms", e.kind, e.at.Format("15:04:05.000"), e.pauseMs)
	}

	// The producer stops; the live consumer reads up to its last
	// acknowledged record, and saw no error.
	p.kill()
	p.mu.Lock()
	sendErrors, ackedN := p.errors, len(p.acked)
	p.mu.Unlock()
	if sendErrors > 0 {
		errorf(t, "the producer saw %d send errors", sendErrors)
	}
	if l := problemToolLines(p.stderr.Bytes()); len(l) > 0 {
		errorf(t, "the producer logged: %s", strings.Join(l, "\n"))
	}
	c.waitAcked(t, p, 3*time.Minute)
	c.stop()
	if l := problemToolLines(c.stderrBytes()); len(l) > 0 {
		errorf(t, "the consumer logged: %s", strings.Join(l, "\n"))
	}
	report := takeoverReport(events, p.ackTimes, c.times())
	t.Logf("%d takeovers under the broker (%d acknowledged records, the live consumer read all of them):\n%s", len(events), ackedN, report)
	if os.Getenv("TIERFS_TAKEOVER_REPORT") == "1" {
		writeTakeoverFragment(t, report, transport, kills, restarts)
	}

	recs := consumeAll(t, k, b.Bootstrap(), dir, verify, verifyN)
	checkNumbered(t, verify, recs, 0, verifyN)
	n := sumInts(offsets(t, k, dir, b.Bootstrap(), acked, "-1"))
	checkAcked(t, acked, consumeAll(t, k, b.Bootstrap(), dir, acked, n), p)
	b.Stop(t)
	checkNoProblems(t, nil, b.BrokerLogs...)
	checkSegments(t, k, dir, logDir, map[string]topicSpec{
		verify: {Records: verifyN, Dense: true},
		acked:  {Records: n, Dense: true},
	})
	checkBacking(t, fs)
	fs.Stop(t)
	checkTierfsErrors(t, fs)
	t.Logf("done in %v", time.Since(testStart).Round(time.Millisecond))
}

// daemonVersion is the serving daemon's version, from status --json once
// its control socket answers (just after it serves).
func (fs *Tierfs) daemonVersion(t *testing.T) string {
	t.Helper()
	st := fs.Status(t)
	if st.Daemon == nil {
		fatalf(t, "status --json names no daemon")
	}
	return st.Daemon.Version
}

// problemToolLines are the lines of a Kafka tool's stderr (log4j at WARN,
// integration/kafka.go) that say something failed.
func problemToolLines(stderr []byte) []string {
	var out []string
	for _, l := range strings.Split(string(stderr), "\n") {
		if strings.Contains(l, " ERROR ") || strings.Contains(l, "Exception") {
			out = append(out, l)
		}
	}
	return out
}

// liveConsumer is ConsoleConsumer reading a topic from the beginning for
// the whole drill; it keeps which VerifiableProducer values it read, and
// when each record arrived.
type liveConsumer struct {
	cmd    *exec.Cmd
	done   chan struct{}
	stderr bytes.Buffer

	mu      sync.Mutex
	seen    map[string]bool // values read
	arrived []time.Time
	bad     error // an unparsable line
	exited  bool
}

func startLiveConsumer(t *testing.T, k *Kafka, dir, bootstrap, topic string) *liveConsumer {
	t.Helper()
	c := &liveConsumer{done: make(chan struct{}), seen: map[string]bool{}}
	cmd, err := k.ToolCommand(context.Background(), dir, "org.apache.kafka.tools.consumer.ConsoleConsumer",
		"--bootstrap-server", bootstrap, "--topic", topic, "--from-beginning",
		"--property", "print.key=true", "--property", "print.partition=true",
		"--property", "print.offset=true", "--property", "key.separator=\t")
	if err != nil {
		fatalf(t, "%v", err)
	}
	c.cmd = cmd
	cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.stderr.Write(b)
	})
	out, err := cmd.StdoutPipe()
	if err != nil {
		fatalf(t, "%v", err)
	}
	save, err := os.Create(filepath.Join(dir, "tools", "live-consumer-"+topic+".out"))
	if err != nil {
		fatalf(t, "%v", err)
	}
	if err := cmd.Start(); err != nil {
		fatalf(t, "starting ConsoleConsumer: %v", err)
	}
	go func() {
		defer close(c.done)
		defer save.Close()
		sc := bufio.NewScanner(io.TeeReader(out, save))
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			now := time.Now()
			recs, err := parseRecords(sc.Bytes())
			c.mu.Lock()
			if err != nil && c.bad == nil {
				c.bad = err
			}
			for _, r := range recs {
				c.seen[r.Value] = true
				c.arrived = append(c.arrived, now)
			}
			c.mu.Unlock()
		}
		_ = cmd.Wait()
		c.mu.Lock()
		c.exited = true
		c.mu.Unlock()
	}()
	t.Cleanup(c.stop)
	return c
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// failure is why the consumer is not reading any more, nil while it is.
func (c *liveConsumer) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.bad != nil:
		return c.bad
	case c.exited:
		return fmt.Errorf("ConsoleConsumer exited: %s", lastLines(c.stderr.Bytes(), 20))
	}
	return nil
}

func (c *liveConsumer) read() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func (c *liveConsumer) waitRead(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	err := waitFor(timeout, fmt.Sprintf("the consumer to read %d records", n), func() (bool, error) {
		return c.read() >= n, c.failure()
	})
	if err != nil {
		fatalf(t, "%v", err)
	}
}

// waitAcked waits until the consumer has read every record the (stopped)
// producer saw acknowledged.
func (c *liveConsumer) waitAcked(t *testing.T, p *ackedProducer, timeout time.Duration) {
	t.Helper()
	p.mu.Lock()
	want := make([]string, 0, len(p.acked))
	for n := range p.acked {
		want = append(want, fmt.Sprintf("%s.%d", p.prefix, n))
	}
	p.mu.Unlock()
	missing := func() []string {
		c.mu.Lock()
		defer c.mu.Unlock()
		var m []string
		for _, v := range want {
			if !c.seen[v] {
				m = append(m, v)
			}
		}
		return m
	}
	err := waitFor(timeout, "the live consumer to read every acknowledged record", func() (bool, error) {
		return len(missing()) == 0, c.failure()
	})
	if err != nil {
		m := missing()
		fatalf(t, "%v: %d of %d not read (e.g. %v)", err, len(m), len(want), m[:min(len(m), 5)])
	}
}

func (c *liveConsumer) stop() {
	if c.cmd.Process != nil {
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-c.done
}

func (c *liveConsumer) stderrBytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.stderr.Bytes())
}

func (c *liveConsumer) times() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.arrived)
}

// takeoverReport is the drill's figures as markdown: per kind of
// takeover, the supervisor's pause, the longest silence the producer's
// acknowledgements and the consumer's records had around it, and the
// records acknowledged in the second from it against a steady second.
func takeoverReport(events []takeoverEvent, acks, reads []time.Time) string {
	const window = time.Second
	// Steady seconds: those with no takeover from 1 s before to 3 s after.
	near := func(t time.Time) bool {
		for _, e := range events {
			if !t.Before(e.at.Add(-window)) && t.Before(e.at.Add(3*window)) {
				return true
			}
		}
		return false
	}
	var steady, steadyAckGaps, steadyReadGaps []float64
	if len(acks) > 0 && len(events) > 0 {
		for s := events[0].at.Add(-10 * window); s.Add(window).Before(events[len(events)-1].at); s = s.Add(window) {
			if near(s) || near(s.Add(window-time.Nanosecond)) {
				continue
			}
			steady = append(steady, float64(countIn(acks, s, s.Add(window))))
			steadyAckGaps = append(steadyAckGaps, longestGap(acks, s, s.Add(window)))
			steadyReadGaps = append(steadyReadGaps, longestGap(reads, s, s.Add(window)))
		}
	}
	steadyRate := median(steady)
	type row struct {
		pauses, ackGaps, readGaps, ratios []float64
	}
	rows := map[string]*row{}
	var kinds []string
	for _, e := range events {
		r := rows[e.kind]
		if r == nil {
			r = &row{}
			rows[e.kind] = r
			kinds = append(kinds, e.kind)
		}
		r.pauses = append(r.pauses, e.pauseMs)
		r.ackGaps = append(r.ackGaps, longestGap(acks, e.at.Add(-200*time.Millisecond), e.at.Add(3*window)))
		r.readGaps = append(r.readGaps, longestGap(reads, e.at.Add(-200*time.Millisecond), e.at.Add(3*window)))
		if steadyRate > 0 {
			r.ratios = append(r.ratios, float64(countIn(acks, e.at, e.at.Add(window)))/steadyRate)
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "| takeover | n | pause, ms (supervisor: death or drain to the new daemon serving) | longest gap between acks around it, ms | longest gap between records read, ms | acks in the second from it / a steady second |\n")
	fmt.Fprintf(&sb, "|---|---|---|---|---|---|\n")
	for _, k := range kinds {
		r := rows[k]
		fmt.Fprintf(&sb, "| %s | %d | %s | %s | %s | %s |\n", k, len(r.pauses), spread(r.pauses, "%.1f"), spread(r.ackGaps, "%.0f"), spread(r.readGaps, "%.0f"), spread(r.ratios, "%.2f×"))
	}
	var all []float64
	for _, e := range events {
		all = append(all, e.pauseMs)
	}
	slices.Sort(all)
	var each []string
	for _, v := range all {
		each = append(each, fmt.Sprintf("%.1f", v))
	}
	fmt.Fprintf(&sb, "\nEvery pause, ms, sorted: %s.\n", strings.Join(each, ", "))
	verdict := "met"
	if len(all) == 0 || all[len(all)-1] >= 1000 {
		verdict = "missed"
	}
	if len(all) > 0 {
		fmt.Fprintf(&sb, "Target, every pause under 1 s (issue 20): %s, the longest %.1f ms.\n", verdict, all[len(all)-1])
	}
	fmt.Fprintf(&sb, "Steady: %.0f acks/s (median of %d seconds with no takeover from 1 s before to 3 s after; the producer asks for %d/s); "+
		"the longest gap in such a second, ms: between acks %s, between records read %s.\n",
		steadyRate, len(steady), takeoverRate, spread(steadyAckGaps, "%.0f"), spread(steadyReadGaps, "%.0f"))
	return sb.String()
}

func countIn(ts []time.Time, from, to time.Time) int {
	i, _ := slices.BinarySearchFunc(ts, from, func(a, b time.Time) int { return a.Compare(b) })
	j, _ := slices.BinarySearchFunc(ts, to, func(a, b time.Time) int { return a.Compare(b) })
	return j - i
}

// longestGap is the longest interval, in ms, between consecutive times
// of ts within [from, to), counting from from and to to.
func longestGap(ts []time.Time, from, to time.Time) float64 {
	i, _ := slices.BinarySearchFunc(ts, from, func(a, b time.Time) int { return a.Compare(b) })
	prev, longest := from, time.Duration(0)
	for ; i < len(ts) && ts[i].Before(to); i++ {
		longest = max(longest, ts[i].Sub(prev))
		prev = ts[i]
	}
	longest = max(longest, to.Sub(prev))
	return float64(longest.Microseconds()) / 1000
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// spread is "median (min–max)".
func spread(v []float64, format string) string {
	if len(v) == 0 {
		return "-"
	}
	s := slices.Clone(v)
	slices.Sort(s)
	f := func(x float64) string { return fmt.Sprintf(format, x) }
	return fmt.Sprintf("%s (%s–%s)", f(s[len(s)/2]), f(s[0]), f(s[len(s)-1]))
}

// writeTakeoverFragment writes the drill's figures as docs/bench/takeover.md,
// a section of docs/BENCHMARKS.md (benchkit.Assemble).
func writeTakeoverFragment(t *testing.T, report, transport string, kills, restarts int) {
	root, err := benchkit.RepoRoot()
	if err != nil {
		fatalf(t, "%v", err)
	}
	root = benchkit.ReportRoot(root)
	race := "with the race detector"
	if !buildRace() {
		race = "without the race detector"
	}
	section, title := "takeover", "Takeover: the daemon replaced under a producing broker"
	if transport != "/dev/fuse" {
		section, title = "takeover-"+strings.ReplaceAll(transport, "/", ""), title+", over "+transport
	}
	md := fmt.Sprintf(`## %s

One run of the real-Kafka drill (`+"`TIERFS_KAFKA=1 TIERFS_TAKEOVER_REPORT=1 go test -run TestKafkaTierfsTakeover -v ./integration`"+`,
a test of `+"`make test`"+`, not of `+"`make bench`"+`): a supervised mount ([mount] supervisor), requests through %s,
tierfs built %s; one broker, VerifiableProducer (acks=all, idempotent) asking %d records/s of a
3-partition topic, ConsoleConsumer reading it throughout; the policy demoting segments at 1 MiB/s.
%d kill -9 of the serving daemon (half of them while a move is in flight), then %d `+"`tierfs restart --binary`"+`
alternately to another build (stamped %s) and back. The broker logged no storage error and did not
stop, the producer and the consumer saw no error, every acknowledged record was read back (by the live
consumer too), and every segment passed DumpLogSegments --deep-iteration. Figures: median (min–max).

%s`, title, transport, race, takeoverRate, kills, restarts, takeoverVersion, report)
	if err := benchkit.Fragment(root, section, md); err != nil {
		fatalf(t, "%v", err)
	}
	t.Logf("wrote %s/docs/bench/%s.md: docs/BENCHMARKS.md takes it in when make bench assembles it next", root, section)
}
