package mountutil

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
)

// ownOpenRounds: mounts per run of TestURingOwnOpens.
const ownOpenRounds = 10

// A process serving a mount over io_uring opens files on it as soon as
// Start returns, many at once from every CPU, and every open is answered.
// Each open adds the file to the Go runtime's epoll; while the kernel
// sent FUSE_POLL for it, that epoll's lock was held until the answer,
// which the process's own serving goroutines could not give (stopPolls).
// A stuck runtime cannot time itself out, so another process watches each
// round: past testenv.WaitTimeout it takes the threads' kernel stacks and
// aborts the connection, and the round fails with them instead of hanging.
func TestURingOwnOpens(t *testing.T) {
	requireFUSE(t)
	testenv.URing(t)
	w := startWatchdog(t)
	for round := range ownOpenRounds {
		if !ownOpensRound(t, w, round) {
			return
		}
	}
}

func ownOpensRound(t *testing.T, w *watchdog, round int) bool {
	t.Helper()
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	// Watched from before the mount to after the unmount: any step
	// could be the one that hangs.
	w.arm(t, mp)
	mo := fuse.MountOptions{FsName: "mountutil-test", Name: "mountutil-test", MaxWrite: 1 << 20, DirectMount: true}
	rawFS := gofs.NewNodeFS(&oneFile{}, &gofs.Options{MountOptions: mo})
	s, err := Mount(mp, rawFS, mo, Config{IOUring: true}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		unix.Unmount(mp, unix.MNT_DETACH)
		t.Fatal(err)
	}
	if !s.IOUring() {
		unix.Unmount(mp, unix.MNT_DETACH)
		t.Fatal("not served over io_uring")
	}
	before := s.URingServed()

	// More openers than Ps, on every CPU (so on every queue), let go at
	// once.
	n := max(4*runtime.NumCPU(), 2*runtime.GOMAXPROCS(0)+1)
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The thread dies with the goroutine, its CPU binding too.
			runtime.LockOSThread()
			var set unix.CPUSet
			set.Set(i % runtime.NumCPU())
			unix.SchedSetaffinity(0, &set)
			<-start
			b, err := os.ReadFile(filepath.Join(mp, "f"))
			if err == nil && string(b) != "hello" {
				err = fmt.Errorf("read %q, want hello", b)
			}
			errs <- err
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	served := s.URingServed()
	unmountErr := s.Unmount()
	if report := w.disarm(t); report != "" {
		unix.Unmount(mp, unix.MNT_DETACH)
		t.Errorf("round %d hung; the watchdog aborted the connection after %v. %s", round, testenv.WaitTimeout, report)
		return false
	}
	if unmountErr != nil {
		unix.Unmount(mp, unix.MNT_DETACH)
		t.Fatal(unmountErr)
	}
	for err := range errs {
		if err != nil {
			t.Errorf("round %d: %v", round, err)
		}
	}
	if served <= before {
		t.Errorf("round %d: no request came over io_uring", round)
	}
	return !t.Failed()
}

const watchdogEnv = "TIERFS_TEST_WATCHDOG"

// watchdog is the process that aborts a FUSE connection this one hangs on.
type watchdog struct {
	in  io.WriteCloser
	out *bufio.Reader
}

func startWatchdog(t *testing.T) *watchdog {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWatchdog$", "-test.count=1")
	cmd.Env = append(os.Environ(), watchdogEnv+"="+strconv.Itoa(os.Getpid()))
	if os.Getenv("GORACE") == "" {
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close() // it exits at the end of its input
		cmd.Wait()
	})
	return &watchdog{in: in, out: bufio.NewReader(out)}
}

// arm starts the clock on the FUSE mount at mp (mounted or not yet).
func (w *watchdog) arm(t *testing.T, mp string) {
	t.Helper()
	if _, err := fmt.Fprintf(w.in, "arm %s\n", strconv.Quote(mp)); err != nil {
		t.Fatal(err)
	}
}

// disarm stops the clock: "" if it had not run out, else what the
// watchdog saw before it aborted the connection.
func (w *watchdog) disarm(t *testing.T) string {
	t.Helper()
	if _, err := fmt.Fprintln(w.in, "disarm"); err != nil {
		t.Fatal(err)
	}
	line, err := w.out.ReadString('\n')
	if err != nil {
		t.Fatalf("the watchdog: %v", err)
	}
	report, err := strconv.Unquote(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("the watchdog said %q", line)
	}
	return report
}

// TestHelperWatchdog is not a test: it is the body of the process
// startWatchdog starts. Per "arm MOUNTPOINT" line (quoted) it aborts the
// FUSE connection mounted there unless "disarm" comes within
// testenv.WaitTimeout, and answers each "disarm" with a quoted line:
// empty, or what the watched process's threads were waiting for in the
// kernel when it aborted.
func TestHelperWatchdog(t *testing.T) {
	pid := os.Getenv(watchdogEnv)
	if pid == "" {
		t.Skip("helper process only")
	}
	var timer *time.Timer
	var fired chan string
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch {
		case cmd == "arm":
			mp, err := strconv.Unquote(arg)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			ch := make(chan string, 1)
			fired = ch
			timer = time.AfterFunc(testenv.WaitTimeout, func() { ch <- abortHung(pid, mp) })
		case cmd == "disarm" && timer != nil:
			report := ""
			if !timer.Stop() {
				report = <-fired
			}
			fmt.Println(strconv.Quote(report))
		}
	}
	os.Exit(0)
}

// abortHung aborts the FUSE connection mounted at mp in process pid's
// namespace and says what it saw first: how many requests waited for an
// answer and, for each thread of pid, where it waited in the kernel.
func abortHung(pid, mp string) string {
	var b strings.Builder
	conn := ""
	if f, err := os.Open("/proc/" + pid + "/mountinfo"); err == nil {
		mounts, _ := ParseMountinfo(f)
		f.Close()
		for _, m := range mounts {
			if m.Mountpoint == mp && strings.HasPrefix(m.FSType, "fuse") {
				conn = "/sys/fs/fuse/connections/" + m.Dev[strings.IndexByte(m.Dev, ':')+1:]
			}
		}
	}
	if conn == "" {
		fmt.Fprintf(&b, "Nothing is mounted at %s.\n", mp)
	} else {
		w, _ := os.ReadFile(conn + "/waiting")
		fmt.Fprintf(&b, "%s: %s requests waiting for an answer.\n", conn, strings.TrimSpace(string(w)))
	}
	b.WriteString("The threads of the process:\n")
	tasks, _ := os.ReadDir("/proc/" + pid + "/task")
	for _, task := range tasks {
		dir := "/proc/" + pid + "/task/" + task.Name()
		comm, _ := os.ReadFile(dir + "/comm")
		stack, _ := os.ReadFile(dir + "/stack")
		fmt.Fprintf(&b, "thread %s (%s):\n%s", task.Name(), strings.TrimSpace(string(comm)), stack)
	}
	if conn != "" {
		if err := os.WriteFile(conn+"/abort", []byte("1"), 0o200); err != nil {
			fmt.Fprintf(&b, "aborting %s: %v\n", conn, err)
		}
	}
	return b.String()
}
