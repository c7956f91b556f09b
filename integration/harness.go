// Package integration runs a real, unmodified Apache Kafka broker on a
// tierfs mount. The harness here mounts tierfs (a private tmpfs as the
// fast tier, a plain directory as the slow one), formats and starts a
// KRaft broker in combined mode with log.dirs on the mount, runs Kafka's
// own tools against it (TopicCommand, ProducerPerformance,
// ConsumerPerformance, ConsoleProducer, ConsoleConsumer, GetOffsetShell,
// DumpLogSegments) and tears everything down in t.Cleanup, however the
// test ends.
//
// The tests, each checking every acknowledged record (acks=all) and every
// segment (DumpLogSegments --deep-iteration):
//
//	kafka_test.go        produce, consume, clean restart; fast tier roomy, full, or pmem with a pool
//	policy_test.go       the policy moving sealed segments down, promoting for a reader
//	retention_test.go    retention (.deleted), topic deletion, compaction
//	restart_test.go      broker clean restart and kill -9
//	tierfs_kill_test.go  tierfs killed under the broker, remount, restart
//	cluster_test.go      three brokers on three mounts, one tierfs killed
//
// The benchmarks (Kafka throughput among them) are in integration/bench
// (make bench).
//
// The tests need root (mounts), /dev/fuse, Java 17+ and the Kafka jars
// that `make kafka-jars` fetches from Maven Central into
// .cache/kafka/<version>/libs. They run only with TIERFS_KAFKA=1 (`make
// test-kafka` sets it) and skip otherwise.
//
// Environment:
//
//	TIERFS_KAFKA=1          run the tests
//	TIERFS_KAFKA_LIBS=DIR   the Kafka jars (default: .cache/kafka/<pin>/libs)
//	TIERFS_BIN=FILE         use this tierfs binary instead of building one
//	                        (a relative path is taken from the repository root)
//	TIERFS_KAFKA_RACE=0|1   build tierfs without/with -race; default: as
//	                        the test binary was built (go test -race, as
//	                        make test-kafka runs it, finds races in the
//	                        daemon under a real broker's load)
//	TIERFS_KAFKA_KEEP=1     keep the work directory (logs, configs, the
//	                        tiers' contents) after the test, mounts removed;
//	                        a test that fails always keeps it
//	TIERFS_TEST_IOURING=1   every mount served over FUSE over io_uring
//	TIERFS_TEST_DIRECTIO=1  every mount with --direct-io (files opened for direct I/O)
//	JAVA=FILE               the java command (default: java on PATH)
package integration

import (
	"bytes"
	"errors"
	"fmt"
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

	"github.com/tierfs/tierfs/mountutil"
)

// EnvEnable is the variable that turns the Kafka tests on.
const EnvEnable = "TIERFS_KAFKA"

// SkipMessage is what the tests say when EnvEnable is not set.
const SkipMessage = "set TIERFS_KAFKA=1 or run make test-kafka: needs the Kafka jars from Maven Central"

// Timeouts. Generous: a JVM on two busy cores starts slowly.
const (
	mountTimeout       = 30 * time.Second
	brokerStartTimeout = 120 * time.Second
	brokerStopTimeout  = 60 * time.Second
	tierfsStopTimeout  = 30 * time.Second
	pollInterval       = 50 * time.Millisecond
)

// ---------------------------------------------------------------------------
// Locating things

// RepoRoot is the directory holding the module's go.mod, found from the
// working directory upwards (go test runs in the package directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		fatalf(t, "getwd: %v", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.Contains(b, []byte("module github.com/tierfs/tierfs")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			fatalf(t, "no go.mod of github.com/tierfs/tierfs above the working directory")
		}
		dir = parent
	}
}

var pinRE = regexp.MustCompile(`<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>`)

// PinnedKafkaVersion is kafka.version in integration/kafka/pom.xml, the
// one place the Kafka version is pinned.
func PinnedKafkaVersion(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "integration", "kafka", "pom.xml"))
	if err != nil {
		return "", err
	}
	m := pinRE.FindSubmatch(b)
	if m == nil {
		return "", errors.New("integration/kafka/pom.xml has no <kafka.version>")
	}
	return string(m[1]), nil
}

// Kafka is a set of Kafka jars and the java to run them with.
type Kafka struct {
	Version string
	Libs    string // directory of jars; the class path is Libs/*
	Java    string
	// ToolJVM, when not nil, replaces the tools' java options (a small
	// heap, C1 only, the serial collector: quick to start).
	ToolJVM []string
}

// RequireKafka skips the test unless TIERFS_KAFKA=1, and fails it when
// the prerequisites (root, /dev/fuse, java, the jars) are missing: asked
// to run, the test must not pass by doing nothing.
func RequireKafka(t *testing.T) *Kafka {
	t.Helper()
	if os.Getenv(EnvEnable) != "1" {
		t.Skip(SkipMessage)
	}
	if os.Geteuid() != 0 {
		fatalf(t, "the Kafka tests need root (they mount a tmpfs and tierfs)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		fatalf(t, "/dev/fuse: %v (modprobe fuse?)", err)
	}
	root := RepoRoot(t)
	version, err := PinnedKafkaVersion(root)
	if err != nil {
		fatalf(t, "%v", err)
	}
	libs := os.Getenv("TIERFS_KAFKA_LIBS")
	if libs == "" {
		libs = filepath.Join(root, ".cache", "kafka", version, "libs")
		if _, err := os.Stat(filepath.Join(libs, ".complete")); err != nil {
			fatalf(t, "the Kafka %s jars are not in %s: run `make kafka-jars` (or `make test-kafka`)", version, libs)
		}
	} else if m, _ := filepath.Glob(filepath.Join(libs, "kafka_2.13-*.jar")); len(m) == 0 {
		fatalf(t, "TIERFS_KAFKA_LIBS=%s holds no kafka_2.13-*.jar", libs)
	}
	java := os.Getenv("JAVA")
	if java == "" {
		java = "java"
	}
	if java, err = exec.LookPath(java); err != nil {
		fatalf(t, "java: %v (install Java 17+: apt-get install openjdk-17-jre-headless)", err)
	}
	return &Kafka{Version: version, Libs: libs, Java: java}
}

// ---------------------------------------------------------------------------
// Failures, repeated at the end

// failures holds each test's failure messages (*testing.T -> *failureLog).
// A failed test's cleanups print the last lines of every broker's and
// tierfs's log; WorkDir's cleanup, the last to run, then says again why
// the test failed, so that the reason is at the end of the output, where
// a CI excerpt shows it.
var failures sync.Map

type failureLog struct {
	mu   sync.Mutex
	msgs []string
}

func noteFailure(t testing.TB, msg string) {
	v, _ := failures.LoadOrStore(t, &failureLog{})
	l := v.(*failureLog)
	l.mu.Lock()
	l.msgs = append(l.msgs, msg)
	l.mu.Unlock()
}

// takeFailures returns the messages noted for t and forgets them.
func takeFailures(t *testing.T) []string {
	v, ok := failures.LoadAndDelete(t)
	if !ok {
		return nil
	}
	l := v.(*failureLog)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.msgs
}

// errorf is t.Errorf, and the message is noted for the summary.
func errorf(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	noteFailure(t, msg)
	t.Error(msg)
}

// fatalf is t.Fatalf, and the message is noted for the summary.
func fatalf(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	noteFailure(t, msg)
	t.Fatal(msg)
}

// summarizeFailures repeats, as the last lines of a failed test, the
// head of each failure message noted for it.
func summarizeFailures(t *testing.T) {
	msgs := takeFailures(t)
	if len(msgs) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s failed (%d failures, each printed in full above):", t.Name(), len(msgs))
	for i, m := range msgs {
		fmt.Fprintf(&b, "\n  %d. %s", i+1, strings.ReplaceAll(firstLines(m, 6), "\n", "\n     "))
	}
	t.Log(b.String())
}

// firstLines cuts msg to its first n lines (a message may carry a log's
// tail; the summary repeats only its head).
func firstLines(msg string, n int) string {
	lines := strings.SplitAfter(msg, "\n")
	if len(lines) <= n {
		return msg
	}
	return strings.Join(lines[:n], "") + fmt.Sprintf("[... %d more lines above]", len(lines)-n)
}

// ---------------------------------------------------------------------------
// Work directory and processes

// WorkDir makes a fresh directory for one test. It is removed at the end
// (unless TIERFS_KAFKA_KEEP=1), but never while anything is still mounted
// under it: then the test fails and the directory stays.
func WorkDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tierfs-kafka-")
	if err != nil {
		fatalf(t, "work dir: %v", err)
	}
	// Symlinks resolved, as mountinfo names mountpoints.
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	t.Logf("work dir: %s", dir)
	wd, err := startWatchdog(dir)
	if err != nil {
		os.Remove(dir)
		fatalf(t, "%v", err)
	}
	// Registered first, so it runs after every other cleanup (LIFO).
	t.Cleanup(func() {
		defer summarizeFailures(t)
		wd.stop(syscall.SIGTERM, 5*time.Second)
		if left := mountsUnder(dir); len(left) > 0 {
			errorf(t, "mounts left under %s, not removing it: %v", dir, left)
			return
		}
		switch {
		case os.Getenv("TIERFS_KAFKA_KEEP") == "1":
			t.Logf("keeping the work dir %s (TIERFS_KAFKA_KEEP=1)", dir)
		case t.Failed():
			t.Logf("the test failed: keeping the work dir %s (logs of the broker, the tools and tierfs; the tiers)", dir)
		default:
			if err := os.RemoveAll(dir); err != nil {
				errorf(t, "removing the work dir: %v", err)
			}
		}
	})
	return dir
}

// watchdogScript waits for the test process ($1) to be gone, then
// unmounts whatever is still mounted under the work dir ($2), deepest
// first. It covers a test binary that dies without running its cleanups
// (go test -timeout, SIGKILL): the kernel then sends the broker SIGKILL
// and tierfs SIGTERM (their parent-death signals), and tierfs unmounts
// itself; the watchdog gives it up to 10 s, then removes the rest (the
// tmpfs of the fast tier, a tierfs mount that stayed) lazily.
const watchdogScript = `pid=$1 dir=$2
trap 'exit 0' TERM
while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
mounts() { awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
i=0
while [ $i -lt 20 ] && mounts | grep -q '/mnt$'; do sleep 0.5; i=$((i + 1)); done
for m in $(mounts); do umount "$m" 2>/dev/null || umount -l "$m"; done
`

// startWatchdog starts the watchdog for dir in a session of its own, so
// that no signal meant for the test reaches it.
func startWatchdog(dir string) (*proc, error) {
	cmd := exec.Command("sh", "-c", watchdogScript, "tierfs-kafka-watchdog", strconv.Itoa(os.Getpid()), dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the watchdog: %w", err)
	}
	p := &proc{name: "watchdog", cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// mountsUnder lists the mountpoints at or under dir.
func mountsUnder(dir string) []string {
	ms, err := mountutil.Mounts()
	if err != nil {
		return []string{"(cannot read mountinfo: " + err.Error() + ")"}
	}
	var out []string
	for _, m := range ms {
		if m.Mountpoint == dir || strings.HasPrefix(m.Mountpoint, dir+"/") {
			out = append(out, m.Mountpoint+" ("+m.FSType+")")
		}
	}
	return out
}

// isMounted reports whether mountinfo lists a mount on path, and its type.
func isMounted(path string) (bool, string) {
	ms, err := mountutil.Mounts()
	if err != nil {
		return false, ""
	}
	found, typ := false, ""
	for _, m := range ms {
		if m.Mountpoint == path {
			found, typ = true, m.FSType
		}
	}
	return found, typ
}

// proc is a child process the harness waits for in the background.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result; read after done
}

// startProc starts cmd in a process group of its own (a Ctrl-C at the
// terminal reaches the test, which then stops things in order) and with
// a parent-death signal, so that nothing outlives a test binary that
// dies without running its cleanups.
func startProc(name string, cmd *exec.Cmd, deathSig syscall.Signal) (*proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the exit status, or 128+signal; -1 while running.
func (p *proc) exitCode() int {
	if !p.exited() {
		return -1
	}
	st, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ok && st.Signaled() {
		return 128 + int(st.Signal())
	}
	return p.cmd.ProcessState.ExitCode()
}

// stop sends sig and waits up to timeout; then SIGKILL. It reports
// whether the process exited on sig (false: it had to be killed).
func (p *proc) stop(sig syscall.Signal, timeout time.Duration) bool {
	if p.exited() {
		return true
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return false
}

// waitFor polls cond every pollInterval until it is true, it returns an
// error, or timeout passes.
func waitFor(timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %v", what, timeout)
		}
		time.Sleep(pollInterval)
	}
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
