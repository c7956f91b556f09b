package integration

// The Kafka side of the harness: a KRaft broker in combined mode and
// Kafka's command-line tools, run from the pinned jars.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
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
)

// Log4j2 configurations: the broker logs everything at INFO to stdout,
// which the harness sends to a file; the tools log warnings to stderr.
const (
	brokerLog4j2 = `status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.console.ref = STDOUT
`
	toolsLog4j2 = `status = warn
appender.console.type = Console
appender.console.name = STDERR
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.console.ref = STDERR
`
)

// toolJVM: small heap, C1 only and the serial collector: the tools are
// short-lived and start faster that way on two cores.
var toolJVM = []string{"-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Djava.awt.headless=true"}

// Tool runs a Kafka command-line class (org.apache.kafka.tools.…,
// kafka.tools.…) with stdin, and returns its stdout, stderr and error
// (non-nil on a non-zero exit or the timeout). Its output is also saved
// under dir/tools/ for after the test.
func (k *Kafka) Tool(dir string, timeout time.Duration, stdin io.Reader, class string, args ...string) (stdout, stderr []byte, err error) {
	toolsDir := filepath.Join(dir, "tools")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd, err := k.ToolCommand(ctx, dir, class, args...)
	if err != nil {
		return nil, nil, err
	}
	cmd.Stdin = stdin
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	start := time.Now()
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s: timed out after %v", class, timeout)
	} else if err != nil {
		err = fmt.Errorf("%s: %w", class, err)
	}
	short := class[strings.LastIndex(class, ".")+1:]
	n := toolRun.Add()
	base := filepath.Join(toolsDir, fmt.Sprintf("%03d-%s", n, short))
	_ = os.WriteFile(base+".out", o.Bytes(), 0o644)
	_ = os.WriteFile(base+".err", append([]byte(fmt.Sprintf("# %s %s\n# took %v, err=%v\n",
		class, strings.Join(args, " "), time.Since(start).Round(time.Millisecond), err)), e.Bytes()...), 0o644)
	return o.Bytes(), e.Bytes(), err
}

// ToolCommand returns the command that runs a Kafka command-line class
// (as Tool does), in a process group of its own and killed if the test
// process dies; the caller starts it, with its own stdin and stdout.
// ctx kills it (exec.CommandContext).
func (k *Kafka) ToolCommand(ctx context.Context, dir, class string, args ...string) (*exec.Cmd, error) {
	toolsDir := filepath.Join(dir, "tools")
	if err := os.MkdirAll(toolsDir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(toolsDir, "log4j2.properties")
	if _, err := os.Stat(cfg); err != nil {
		if err := os.WriteFile(cfg, []byte(toolsLog4j2), 0o644); err != nil {
			return nil, err
		}
	}
	jargs := append([]string{}, toolJVM...)
	if k.ToolJVM != nil {
		jargs = append([]string{}, k.ToolJVM...)
	}
	jargs = append(jargs, "-Dlog4j2.configurationFile="+cfg, "-cp", filepath.Join(k.Libs, "*"), class)
	jargs = append(jargs, args...)
	cmd := exec.CommandContext(ctx, k.Java, jargs...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) Add() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return c.n
}

var toolRun counter

// MustTool is Tool that fails the test on an error.
func (k *Kafka) MustTool(t *testing.T, dir string, timeout time.Duration, stdin io.Reader, class string, args ...string) []byte {
	t.Helper()
	out, errOut, err := k.Tool(dir, timeout, stdin, class, args...)
	if err != nil {
		fatalf(t, "%v\n--- stderr:\n%s\n--- stdout (tail):\n%s", err, lastLines(errOut, 40), lastLines(out, 20))
	}
	return out
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf(t, "%v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// NewClusterID returns a random Kafka Uuid in its string form (22
// characters of unpadded URL-safe base64), never starting with '-'
// (argparse would take it for an option), as Uuid.randomUuid does.
func NewClusterID() string {
	for {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			panic(err)
		}
		s := base64.RawURLEncoding.EncodeToString(b[:])
		if s[0] != '-' {
			return s
		}
	}
}

// BrokerOptions shapes a single-node KRaft broker.
type BrokerOptions struct {
	// SegmentBytes is log.segment.bytes; default 1 MiB (the smallest
	// Kafka 4.x accepts), so segments roll often.
	SegmentBytes int64
	// Extra server.properties lines.
	Extra map[string]string
	// Heap is -Xmx; default "512m".
	Heap string
	// JVM is more java options (e.g. "-XX:+UseSerialGC").
	JVM []string
}

// Broker is a single Kafka node in KRaft combined mode (broker and
// controller) with its log.dirs on a tierfs mount.
type Broker struct {
	K          *Kafka
	NodeID     int
	Port       int // PLAINTEXT listener
	CtrlPort   int // CONTROLLER listener
	ClusterID  string
	Dir        string // configuration and logs of the process
	LogDir     string // log.dirs
	Props      string // server.properties
	Log        string // the current run's broker log
	BrokerLogs []string

	heap     string
	jvm      []string
	p        *proc
	launched time.Time
}

// Bootstrap is the bootstrap.servers value.
func (b *Broker) Bootstrap() string { return "127.0.0.1:" + strconv.Itoa(b.Port) }

// NewBroker writes server.properties for a broker whose log dir is
// logDir (on the mount), formats the storage (StorageTool format
// --standalone), and registers its stop in t.Cleanup. Start it with Start.
func NewBroker(t *testing.T, k *Kafka, dir, logDir string, o BrokerOptions) *Broker {
	t.Helper()
	if o.SegmentBytes == 0 {
		o.SegmentBytes = 1 << 20
	}
	if o.Heap == "" {
		o.Heap = "512m"
	}
	b := &Broker{
		K: k, NodeID: 1, Port: FreePort(t), CtrlPort: FreePort(t), ClusterID: NewClusterID(),
		Dir: filepath.Join(dir, "broker"), LogDir: logDir, heap: o.Heap, jvm: o.JVM,
	}
	for b.CtrlPort == b.Port {
		b.CtrlPort = FreePort(t)
	}
	b.Props = filepath.Join(b.Dir, "server.properties")
	if err := os.MkdirAll(b.Dir, 0o755); err != nil {
		fatalf(t, "%v", err)
	}
	props := [][2]string{
		{"process.roles", "broker,controller"},
		{"node.id", strconv.Itoa(b.NodeID)},
		{"controller.quorum.bootstrap.servers", fmt.Sprintf("127.0.0.1:%d", b.CtrlPort)},
		{"listeners", fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", b.Port, b.CtrlPort)},
		{"advertised.listeners", fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", b.Port, b.CtrlPort)},
		{"controller.listener.names", "CONTROLLER"},
		{"inter.broker.listener.name", "PLAINTEXT"},
		{"listener.security.protocol.map", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"},
		{"log.dirs", logDir},
		{"num.partitions", "1"},
		{"num.recovery.threads.per.data.dir", "1"},
		{"log.segment.bytes", strconv.FormatInt(o.SegmentBytes, 10)},
		{"log.retention.check.interval.ms", "5000"},
		{"offsets.topic.replication.factor", "1"},
		{"offsets.topic.num.partitions", "8"},
		{"transaction.state.log.replication.factor", "1"},
		{"transaction.state.log.min.isr", "1"},
		{"transaction.state.log.num.partitions", "4"},
		{"share.coordinator.state.topic.replication.factor", "1"},
		{"share.coordinator.state.topic.min.isr", "1"},
		{"group.initial.rebalance.delay.ms", "0"},
		{"auto.create.topics.enable", "false"},
	}
	b.writeProps(t, props, o.Extra)
	out := k.MustTool(t, dir, 2*time.Minute, nil, "kafka.tools.StorageTool",
		"format", "--cluster-id", b.ClusterID, "--config", b.Props, "--standalone")
	t.Logf("StorageTool format: %s", strings.TrimSpace(string(out)))
	t.Cleanup(func() { b.cleanup(t) })
	return b
}

// writeProps writes server.properties (props, each overridden by extra,
// then the rest of extra in key order) and the broker's log4j2
// configuration.
func (b *Broker) writeProps(t *testing.T, props [][2]string, extra map[string]string) {
	t.Helper()
	var sb strings.Builder
	sb.WriteString("# written by the tierfs integration harness\n")
	seen := map[string]bool{}
	for _, kv := range props {
		v := kv[1]
		if x, ok := extra[kv[0]]; ok {
			v = x
		}
		seen[kv[0]] = true
		fmt.Fprintf(&sb, "%s=%s\n", kv[0], v)
	}
	keys := make([]string, 0, len(extra))
	for key := range extra {
		if !seen[key] {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	for _, key := range keys {
		fmt.Fprintf(&sb, "%s=%s\n", key, extra[key])
	}
	if err := os.WriteFile(b.Props, []byte(sb.String()), 0o644); err != nil {
		fatalf(t, "%v", err)
	}
	if err := os.WriteFile(filepath.Join(b.Dir, "log4j2.properties"), []byte(brokerLog4j2), 0o644); err != nil {
		fatalf(t, "%v", err)
	}
}

var serverStartedRE = regexp.MustCompile(`\[KafkaRaftServer nodeId=\d+\] Kafka Server started`)

// Start runs kafka.Kafka and waits until it serves: the log says "Kafka
// Server started" and the PLAINTEXT port accepts connections.
func (b *Broker) Start(t *testing.T) {
	t.Helper()
	b.Launch(t)
	b.WaitStarted(t)
}

// Launch runs kafka.Kafka and returns at once; WaitStarted waits until it
// serves. (The nodes of a KRaft quorum must start together: none serves
// before a majority of the voters is up.)
func (b *Broker) Launch(t *testing.T) {
	t.Helper()
	if b.p != nil && !b.p.exited() {
		fatalf(t, "the broker is already running")
	}
	b.Log = filepath.Join(b.Dir, fmt.Sprintf("broker-%d.log", len(b.BrokerLogs)+1))
	b.BrokerLogs = append(b.BrokerLogs, b.Log)
	logf, err := os.Create(b.Log)
	if err != nil {
		fatalf(t, "%v", err)
	}
	defer logf.Close()
	args := append([]string{"-Xmx" + b.heap, "-Xms" + b.heap,
		"-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"}, b.jvm...)
	args = append(args, "-Dlog4j2.configurationFile="+filepath.Join(b.Dir, "log4j2.properties"),
		"-cp", filepath.Join(b.K.Libs, "*"), "kafka.Kafka", b.Props)
	cmd := exec.Command(b.K.Java, args...)
	cmd.Dir = b.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	b.launched = time.Now()
	if b.p, err = startProc("kafka", cmd, syscall.SIGKILL); err != nil {
		fatalf(t, "%v", err)
	}
}

// WaitStarted waits until the broker Launch started serves.
func (b *Broker) WaitStarted(t *testing.T) {
	t.Helper()
	if b.p == nil {
		fatalf(t, "the broker was not launched")
	}
	err := waitFor(brokerStartTimeout, "the broker to start", func() (bool, error) {
		if b.p.exited() {
			return false, fmt.Errorf("the broker exited with status %d", b.p.exitCode())
		}
		if !fileMatches(b.Log, serverStartedRE) {
			return false, nil
		}
		c, err := net.DialTimeout("tcp", b.Bootstrap(), time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if err != nil {
		fatalf(t, "%v\n--- %s:\n%s", err, b.Log, tail(b.Log, 60))
	}
	t.Logf("broker %d started in %v (pid %d, %s, log %s)", b.NodeID, time.Since(b.launched).Round(time.Millisecond),
		b.p.cmd.Process.Pid, b.Bootstrap(), b.Log)
}

// fileMatches reports whether re matches a line of the file.
func fileMatches(path string, re *regexp.Regexp) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if re.Match(sc.Bytes()) {
			return true
		}
	}
	return false
}

// Running reports whether the broker process is alive.
func (b *Broker) Running() bool { return b.p != nil && !b.p.exited() }

var shutdownCompleteRE = regexp.MustCompile(`\[BrokerServer id=\d+\] shut down completed`)

// Stop shuts the broker down cleanly: SIGTERM (the JVM runs Kafka's
// shutdown hook, which exits 143), wait, SIGKILL after a deadline. It
// fails the test unless the shutdown completed.
func (b *Broker) Stop(t *testing.T) {
	t.Helper()
	if b.p == nil || b.p.exited() {
		return
	}
	start := time.Now()
	if !b.p.stop(syscall.SIGTERM, brokerStopTimeout) {
		errorf(t, "the broker did not exit within %v of SIGTERM; killed it\n--- %s:\n%s",
			brokerStopTimeout, b.Log, tail(b.Log, 40))
		return
	}
	code := b.p.exitCode()
	if code != 0 && code != 128+int(syscall.SIGTERM) {
		errorf(t, "the broker exited with status %d", code)
	}
	if !fileMatches(b.Log, shutdownCompleteRE) {
		errorf(t, "the broker log has no %q\n--- %s:\n%s", shutdownCompleteRE, b.Log, tail(b.Log, 40))
	}
	t.Logf("broker stopped in %v (status %d)", time.Since(start).Round(time.Millisecond), code)
}

// WaitExit waits up to timeout for the broker to exit by itself and
// returns its exit status (128+signal for a signal); ok is false if it
// is still running.
func (b *Broker) WaitExit(timeout time.Duration) (code int, ok bool) {
	if b.p == nil {
		return 0, false
	}
	select {
	case <-b.p.done:
		return b.p.exitCode(), true
	case <-time.After(timeout):
		return -1, false
	}
}

// Pid is the broker's process id (0 before the first start).
func (b *Broker) Pid() int {
	if b.p == nil {
		return 0
	}
	return b.p.cmd.Process.Pid
}

// Kill ends the broker with SIGKILL, as a crash would.
func (b *Broker) Kill(t *testing.T) {
	t.Helper()
	if b.p == nil || b.p.exited() {
		return
	}
	b.p.stop(syscall.SIGKILL, brokerStopTimeout)
}

func (b *Broker) cleanup(t *testing.T) {
	if b.Running() {
		b.Stop(t)
	}
	if t.Failed() && b.Log != "" {
		t.Logf("--- last lines of %s:\n%s", b.Log, tail(b.Log, 60))
	}
}

// What a broker logs when its log directory (the filesystem under it)
// misbehaves. failedDirRE counts at any level; storageErrorRE at WARN and
// above (at INFO, Kafka says "Failed to delete log ... because it does not
// exist" in normal operation: two cleaner passes over the same base
// offset reuse one .deleted name).
var (
	failedDirRE = regexp.MustCompile(`KafkaStorageException|Shutdown broker because|Stopping serving logs in dir|[Oo]ffline log dir|failed log dir|Operation not supported|Stale file handle|Input/output error|Transport endpoint is not connected|No space left on device`)
	// A KRaft controller that a peer's raft client asks for its API
	// versions before the controller's own raft manager is up answers
	// with a NullPointerException (Kafka 4.1's ControllerServer.startup,
	// SimpleApiVersionManager.features; seen once, three brokers starting
	// on a loaded machine). Memory only, nothing of storage: the ERROR
	// line is dropped when the next line is that exception.
	controllerApiVersionsRE = regexp.MustCompile(`\] ERROR \[ControllerApis nodeId=\d+\] Unexpected error handling request RequestHeader\(apiKey=API_VERSIONS,`)
	controllerStartupRaceRE = regexp.MustCompile(`^java\.lang\.NullPointerException: Cannot invoke "kafka\.raft\.KafkaRaftManager\.client\(\)" because the return value of "kafka\.server\.ControllerServer\.raftManager\(\)" is null$`)
	storageErrorRE          = regexp.MustCompile(`Error while|Failed to|IOException|AccessDeniedException|FileSystemException|NoSuchFileException|[Cc]orrupt|invalid`)
)

// ProblemLines returns, from every run's broker log, the lines at ERROR or
// FATAL, the WARN lines matching storageErrorRE and the lines matching
// failedDirRE, each with the stack trace lines that follow it (up to 12).
func (b *Broker) ProblemLines() []string {
	return ProblemLinesIn(b.BrokerLogs...)
}

// ProblemLinesIn is ProblemLines for the given broker logs.
func ProblemLinesIn(paths ...string) []string {
	var out []string
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		trace := 0
		pending := "" // a problem line held to see the line after it
		for sc.Scan() {
			l := sc.Text()
			if pending != "" {
				p := pending
				pending = ""
				if controllerStartupRaceRE.MatchString(l) {
					trace = -1 // Kafka's own race: drop it and its trace
					continue
				}
				out = append(out, filepath.Base(path)+": "+p)
				trace = 12
			}
			isTrace := strings.HasPrefix(l, "\t") || strings.HasPrefix(l, "Caused by:") ||
				strings.HasPrefix(l, "java.") || strings.HasPrefix(l, "org.apache.kafka.common.errors.")
			if trace < 0 && isTrace {
				continue
			}
			if trace > 0 && isTrace {
				out = append(out, "    "+l)
				trace--
				continue
			}
			trace = 0
			if isProblem(l) {
				if controllerApiVersionsRE.MatchString(l) {
					pending = l
					continue
				}
				out = append(out, filepath.Base(path)+": "+l)
				trace = 12
			}
		}
		if pending != "" {
			out = append(out, filepath.Base(path)+": "+pending)
		}
		f.Close()
	}
	return out
}

// isProblem classifies one line of a broker log ("[date] LEVEL message
// (logger)").
func isProblem(l string) bool {
	if strings.HasPrefix(l, "\t") {
		return false // a line of the configuration dump
	}
	level := ""
	if i := strings.Index(l, "] "); i > 0 && i < 40 {
		level, _, _ = strings.Cut(l[i+2:], " ")
	}
	switch level {
	case "ERROR", "FATAL":
		return true
	case "WARN":
		if storageErrorRE.MatchString(l) {
			return true
		}
	}
	return failedDirRE.MatchString(l)
}

// CheckBrokerLog fails the test if a broker log has problem lines.
func (b *Broker) CheckBrokerLog(t *testing.T) {
	t.Helper()
	if p := b.ProblemLines(); len(p) > 0 {
		if len(p) > 200 {
			p = append(p[:200], fmt.Sprintf("... and %d more lines", len(p)-200))
		}
		errorf(t, "the broker logged %d problem lines (a filesystem bug?):\n%s", len(p), strings.Join(p, "\n"))
	}
}

// ---------------------------------------------------------------------------
// Kafka's tools, parsed

// CreateTopic creates a topic with replication factor 1.
func (b *Broker) CreateTopic(t *testing.T, dir, topic string, partitions int, configs ...string) {
	t.Helper()
	args := []string{"--bootstrap-server", b.Bootstrap(), "--create", "--topic", topic,
		"--partitions", strconv.Itoa(partitions), "--replication-factor", "1"}
	for _, c := range configs {
		args = append(args, "--config", c)
	}
	b.K.MustTool(t, dir, 2*time.Minute, nil, "org.apache.kafka.tools.TopicCommand", args...)
}

var perfSentRE = regexp.MustCompile(`(?m)^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\)`)

// PerfResult is ProducerPerformance's summary.
type PerfResult struct {
	Records       int64
	RecordsPerSec float64
	MBPerSec      float64
	Line          string
}

// ProducerPerf runs ProducerPerformance (acks=all, idempotent) and
// returns its final summary. Any exception it prints fails the test.
func (b *Broker) ProducerPerf(t *testing.T, dir, topic string, records, recordSize int, extraProps ...string) PerfResult {
	t.Helper()
	args := []string{"--topic", topic, "--num-records", strconv.Itoa(records),
		"--record-size", strconv.Itoa(recordSize), "--throughput", "-1",
		"--producer-props", "bootstrap.servers=" + b.Bootstrap(), "acks=all", "enable.idempotence=true",
		"linger.ms=5", "batch.size=65536"}
	args = append(args, extraProps...)
	out, errOut, err := b.K.Tool(dir, 5*time.Minute, nil, "org.apache.kafka.tools.ProducerPerformance", args...)
	if err != nil {
		fatalf(t, "%v\n--- stderr:\n%s\n--- stdout:\n%s", err, lastLines(errOut, 40), lastLines(out, 10))
	}
	if bytes.Contains(errOut, []byte("Exception")) || bytes.Contains(out, []byte("Exception")) {
		fatalf(t, "ProducerPerformance reported exceptions:\n%s\n%s", lastLines(errOut, 40), lastLines(out, 10))
	}
	ms := perfSentRE.FindAllSubmatch(out, -1)
	if len(ms) == 0 {
		fatalf(t, "no summary in ProducerPerformance's output:\n%s", lastLines(out, 10))
	}
	m := ms[len(ms)-1]
	r := PerfResult{Line: string(m[0])}
	r.Records, _ = strconv.ParseInt(string(m[1]), 10, 64)
	r.RecordsPerSec, _ = strconv.ParseFloat(string(m[2]), 64)
	r.MBPerSec, _ = strconv.ParseFloat(string(m[3]), 64)
	if r.Records != int64(records) {
		fatalf(t, "ProducerPerformance sent %d records, want %d: %s", r.Records, records, r.Line)
	}
	return r
}

// ConsumerPerf consumes n records of topic from the beginning with
// ConsumerPerformance and returns how many it consumed.
func (b *Broker) ConsumerPerf(t *testing.T, dir, topic string, n int64) int64 {
	t.Helper()
	out := b.K.MustTool(t, dir, 3*time.Minute, nil, "org.apache.kafka.tools.ConsumerPerformance",
		"--bootstrap-server", b.Bootstrap(), "--topic", topic, "--messages", strconv.FormatInt(n, 10),
		"--timeout", "60000", "--group", "perf-"+NewClusterID())
	// Header line, then: start.time, end.time, data.consumed.in.MB,
	// MB.sec, data.consumed.in.nMsg, ...
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "start.time") || i+1 >= len(lines) {
			continue
		}
		hdr := strings.Split(l, ",")
		val := strings.Split(lines[i+1], ",")
		for j, h := range hdr {
			if strings.TrimSpace(h) == "data.consumed.in.nMsg" && j < len(val) {
				v, err := strconv.ParseInt(strings.TrimSpace(val[j]), 10, 64)
				if err != nil {
					fatalf(t, "ConsumerPerformance: %v in %q", err, lines[i+1])
				}
				return v
			}
		}
	}
	fatalf(t, "no data.consumed.in.nMsg in ConsumerPerformance's output:\n%s", out)
	return 0
}

// EndOffsets returns every partition's log end offset of topic
// (GetOffsetShell --time -1), keyed "topic-N". It retries while the
// partitions have no leader yet (just after a start).
func (b *Broker) EndOffsets(t *testing.T, dir, topic string) map[string]int64 {
	t.Helper()
	var res map[string]int64
	var last string
	err := waitFor(90*time.Second, "GetOffsetShell for "+topic, func() (bool, error) {
		out, errOut, err := b.K.Tool(dir, time.Minute, nil, "org.apache.kafka.tools.GetOffsetShell",
			"--bootstrap-server", b.Bootstrap(), "--topic", topic, "--time", "-1")
		if err != nil {
			last = fmt.Sprintf("%v: %s", err, lastLines(errOut, 10))
			return false, nil
		}
		res = map[string]int64{}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Split(l, ":")
			if len(f) != 3 {
				continue
			}
			off, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				return false, fmt.Errorf("GetOffsetShell line %q: %v", l, err)
			}
			res[f[0]+"-"+f[1]] = off
		}
		return len(res) > 0, nil
	})
	if err != nil {
		fatalf(t, "%v (last: %s)", err, last)
	}
	return res
}

// Sum adds up a map's values.
func Sum(m map[string]int64) int64 {
	var s int64
	for _, v := range m {
		s += v
	}
	return s
}
