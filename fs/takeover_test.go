package fs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/supervisor"
	"github.com/tierfs/tierfs/mountutil"
)

// supervisorEnv makes the test binary a supervisor (internal/supervisor)
// whose daemons are the test server (serve) with the same configuration:
// they share the supervisor's stdin and stdout, so the test talks to
// whichever daemon serves, and each says it serves with a line of its own.
const supervisorEnv = "TIERFS_TEST_SUPERVISOR"

func superviseMain(cfgJSON string) int {
	var cfg serverConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, supervisorEnv+"=") {
			env = append(env, e)
		}
	}
	env = append(env, serverEnv+"="+cfgJSON)
	return supervisor.Run(supervisor.Config{
		Mountpoint: cfg.Mountpoint,
		Command: func() *exec.Cmd {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = env
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			return cmd
		},
		Log: zerolog.New(os.Stderr).With().Timestamp().Logger(),
	})
}

// ioLoop is a program that holds files open on the mount and writes and
// reads them back in a loop (pwrite of an unaligned block, pread of it
// and of an earlier one), keeping what each file must hold.
type ioLoop struct {
	files  []*os.File
	want   [][]byte
	ops    atomic.Int64
	maxLat atomic.Int64 // ns, the slowest call since the last reset
	// canceledOK: a call that fails with ECANCELED is counted in
	// canceled and made again (see TestTakeoverURingKill), not failed.
	canceledOK bool
	canceled   atomic.Int64
	mu         sync.Mutex
	err        error
	stop       chan struct{}
	done       chan struct{}
}

const (
	loopBlock = 4096 + 17
	loopSpan  = 256 // blocks per file before the loop writes over old ones
)

func startIOLoop(t *testing.T, paths ...string) *ioLoop {
	t.Helper()
	return startIOLoopWith(t, false, paths...)
}

func startIOLoopWith(t *testing.T, canceledOK bool, paths ...string) *ioLoop {
	t.Helper()
	l := &ioLoop{stop: make(chan struct{}), done: make(chan struct{}), canceledOK: canceledOK}
	for _, p := range paths {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		st, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		w := make([]byte, st.Size())
		if _, err := f.ReadAt(w, 0); err != nil && st.Size() > 0 {
			t.Fatal(err)
		}
		l.files = append(l.files, f)
		l.want = append(l.want, w)
	}
	go l.run()
	return l
}

func (l *ioLoop) fail(err error) {
	l.mu.Lock()
	if l.err == nil {
		l.err = err
	}
	l.mu.Unlock()
}

func (l *ioLoop) timed(f func() error) error {
	start := time.Now()
	err := f()
	for l.canceledOK && errors.Is(err, syscall.ECANCELED) {
		l.canceled.Add(1)
		err = f()
	}
	if d := int64(time.Since(start)); d > l.maxLat.Load() {
		l.maxLat.Store(d)
	}
	return err
}

func (l *ioLoop) run() {
	defer close(l.done)
	r := rand.New(rand.NewSource(1))
	buf := make([]byte, loopBlock)
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		default:
		}
		fi := i % len(l.files)
		f := l.files[fi]
		blk := (i / len(l.files)) % loopSpan
		off := int64(blk) * loopBlock
		data := make([]byte, loopBlock)
		r.Read(data)
		if err := l.timed(func() error { _, err := f.WriteAt(data, off); return err }); err != nil {
			l.fail(fmt.Errorf("op %d: write: %w", i, err))
			return
		}
		w := l.want[fi]
		if end := off + loopBlock; end > int64(len(w)) {
			w = append(w, make([]byte, end-int64(len(w)))...)
		}
		copy(w[off:], data)
		l.want[fi] = w
		// Read back what was just written, and an earlier block.
		for _, o := range []int64{off, int64(r.Intn(blk+1)) * loopBlock} {
			if err := l.timed(func() error { _, err := f.ReadAt(buf, o); return err }); err != nil {
				l.fail(fmt.Errorf("op %d: read at %d: %w", i, o, err))
				return
			}
			if !bytes.Equal(buf, w[o:o+loopBlock]) {
				l.fail(fmt.Errorf("op %d: read at %d returned other bytes than were written", i, o))
				return
			}
		}
		l.ops.Add(1)
	}
}

// progress waits until the loop has done n more rounds, failing if it
// stopped on an error.
func (l *ioLoop) progress(t *testing.T, n int64) {
	t.Helper()
	mark := l.ops.Load()
	waitFor(t, "the I/O loop to go on", func() bool {
		select {
		case <-l.done:
			return true
		default:
		}
		return l.ops.Load() >= mark+n
	})
	if err := l.result(); err != nil {
		t.Fatalf("the program using the mount saw an error: %v", err)
	}
}

func (l *ioLoop) result() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// finish stops the loop and checks that each file holds what was written,
// read through a new descriptor.
func (l *ioLoop) finish(t *testing.T) {
	t.Helper()
	close(l.stop)
	<-l.done
	if err := l.result(); err != nil {
		t.Fatalf("the program using the mount saw an error: %v", err)
	}
	for i, f := range l.files {
		got, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, l.want[i]) {
			t.Fatalf("%s: %d bytes, want %d: the data written is not all there", f.Name(), len(got), len(l.want[i]))
		}
	}
}

// nextDaemon reads the line the successor of the daemon old writes once
// it serves, and returns its pid.
func (m *testMount) nextDaemon(t *testing.T, old int) int {
	t.Helper()
	got := make(chan reply, 1)
	go func() {
		var r reply
		if err := m.out.Decode(&r); err != nil {
			r.Err = err.Error()
		}
		got <- r
	}()
	select {
	case r := <-got:
		if r.Err != "" || r.Pid == 0 || r.Pid == old {
			t.Fatalf("after daemon %d went, the supervisor's output said %+v, not that a new daemon serves\n%s", old, r, m.logs())
		}
		m.pid = r.Pid
		return r.Pid
	case <-time.After(30 * time.Second):
		t.Fatalf("no new daemon serves 30 s after daemon %d went\n%s", old, m.logs())
	}
	return 0
}

func pauseSummary(p []time.Duration) string {
	s := slices.Clone(p)
	slices.Sort(s)
	var b strings.Builder
	for i, d := range s {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%.1f", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("min %.1f ms, median %.1f ms, max %.1f ms (all, ms: %s)",
		float64(s[0].Microseconds())/1000, float64(s[len(s)/2].Microseconds())/1000, float64(s[len(s)-1].Microseconds())/1000, b.String())
}

func makeFiles(t *testing.T, m *testMount, n int) []string {
	t.Helper()
	mustOK(t, os.MkdirAll(m.path("topic-0"), 0o755), "mkdir")
	var paths []string
	for i := range n {
		p := m.path(fmt.Sprintf("topic-0/%020d.log", i))
		mustOK(t, os.WriteFile(p, bytes.Repeat([]byte{byte('a' + i)}, 100000+i), 0o644), "write")
		paths = append(paths, p)
	}
	return paths
}

// TestTakeoverAfterKill kills the serving daemon (kill -9) ten times while
// a program reads and writes files it holds open: the supervisor starts a
// new daemon on the same connection each time, the program sees a pause
// and no error, every byte written is there, and the mount stays mounted.
// Requests come through /dev/fuse (TestTakeoverURing* for io_uring).
func TestTakeoverAfterKill(t *testing.T) {
	testTakeovers(t, mountOpt{supervised: true, devFuse: true}, takeoverKill)
}

// TestTakeoverURingRestart replaces the daemon of a mount served over
// FUSE over io_uring ten times on request (the supervisor's restart: the
// daemon drains) while the program reads and writes: each new daemon
// serves the same rings (the mount asserts it after every takeover) and
// answers what the old one's entries held; the program sees no error.
func TestTakeoverURingRestart(t *testing.T) {
	requireURing(t)
	testTakeovers(t, mountOpt{supervised: true, iouring: true}, takeoverRestart)
}

// TestTakeoverURingKill kills the daemon of a mount served over io_uring
// ten times. What the dead daemon's rings held is answered by the next
// one and the mount stays on io_uring, but the kernel ends with ECANCELED
// a request it hands one of the dead daemon's idle entries while the
// process is torn down (docs/design.md, "Restart under a live mount"):
// the program makes such a call again and the test counts them; any
// other error fails it, and every byte written is there.
func TestTakeoverURingKill(t *testing.T) {
	requireURing(t)
	testTakeovers(t, mountOpt{supervised: true, iouring: true}, takeoverKill)
}

type takeoverKind int

const (
	takeoverKill takeoverKind = iota
	takeoverRestart
)

// takeover replaces the serving daemon (kill -9, or a restart asked of the
// supervisor) and waits until its successor serves.
func (m *testMount) takeover(t *testing.T, kind takeoverKind) {
	t.Helper()
	old := m.pid
	if kind == takeoverRestart {
		if _, err := supervisor.Restart(m.mnt, supervisor.RestartOptions{}); err != nil {
			t.Fatalf("restart: %v\n%s", err, m.logs())
		}
	} else {
		mustOK(t, syscall.Kill(old, syscall.SIGKILL), "kill -9 the daemon")
	}
	m.nextDaemon(t, old)
}

func testTakeovers(t *testing.T, o mountOpt, kind takeoverKind) {
	m := mount(t, o)
	uring := o.iouring
	if got := m.call(t, request{Op: "uring"}).URing; got == nil || got.Active != uring {
		t.Fatalf("io_uring %+v, want active %v", got, uring)
	}
	paths := makeFiles(t, m, 3)
	l := startIOLoopWith(t, uring && kind == takeoverKill, paths...)
	l.progress(t, 50)
	var pauses []time.Duration
	for k := 0; k < 10; k++ {
		l.maxLat.Store(0)
		m.takeover(t, kind)
		l.progress(t, 30)
		pauses = append(pauses, time.Duration(l.maxLat.Load()))
		if !isMounted(m.mnt) {
			t.Fatalf("takeover %d: the mount is gone", k+1)
		}
		if uring {
			m.assertURing(t)
		} else if got := m.call(t, request{Op: "uring"}).URing; got == nil || got.Active {
			t.Fatalf("takeover %d: io_uring %+v on a /dev/fuse mount", k+1, got)
		}
	}
	// A name never looked up before, and a new file: the new daemon
	// serves the namespace, not only what was open.
	mustOK(t, os.WriteFile(m.path("topic-0/new"), []byte("new"), 0o644), "create after the takeovers")
	if st := m.status(t); len(st.Tiers) == 0 {
		t.Fatalf("status from the last daemon: %+v", st)
	}
	l.finish(t)
	t.Logf("pause seen by the program per takeover (its slowest call around each), 10 takeovers: %s", pauseSummary(pauses))
	if l.canceledOK {
		t.Logf("calls the kernel ended with ECANCELED (made again) over 10 kills: %d", l.canceled.Load())
	}
}

// TestTakeoverMidMove kills the daemon at each step of a move of a file
// that a program is writing and reading through a descriptor it holds:
// the new daemon's recovery (the mount's) rolls the move back or forward,
// the program goes on with no error, the file is on one tier with its
// inode number and every byte, and it moves again afterwards.
func TestTakeoverMidMove(t *testing.T) {
	for _, step := range []string{"move:staged", "move:copied", "move:synced", "move:marked", "move:renamed", "move:swapped", "move:unlinked"} {
		t.Run(step, func(t *testing.T) {
			// /dev/fuse: a kill -9 over io_uring may cost a call
			// ECANCELED (TestTakeoverURingKill).
			m := mount(t, mountOpt{supervised: true, devFuse: true, crashAt: step})
			paths := makeFiles(t, m, 1)
			var st unix.Stat_t
			mustOK(t, unix.Stat(paths[0], &st), "stat")
			l := startIOLoop(t, paths...)
			l.progress(t, 20)
			old := m.pid
			b, _ := json.Marshal(request{Op: "move", Path: "topic-0/00000000000000000000.log", Tier: "slow"})
			m.mu.Lock()
			_, err := m.in.Write(append(b, '\n'))
			m.mu.Unlock()
			mustOK(t, err, "ask for the move")
			m.nextDaemon(t, old)
			l.progress(t, 30)
			// Before the rename the source is the file; after, the
			// destination (the mount's recovery, TestMoveCrash).
			committed := step == "move:renamed" || step == "move:swapped" || step == "move:unlinked"
			if tier := m.tierOf(t, "topic-0/00000000000000000000.log"); committed != (tier == 1) {
				t.Fatalf("after a kill at %s the file is on tier %d", step, tier)
			}
			var st2 unix.Stat_t
			mustOK(t, unix.Stat(paths[0], &st2), "stat")
			if st2.Ino != st.Ino {
				t.Fatalf("inode %d became %d", st.Ino, st2.Ino)
			}
			checkClean(t, m)
			mustOK(t, m.move(t, "topic-0/00000000000000000000.log", "slow"), "move after the takeover")
			mustOK(t, m.move(t, "topic-0/00000000000000000000.log", "fast"), "move after the takeover")
			l.progress(t, 20)
			l.finish(t)
		})
	}
}

// TestSupervisorKilled: when the supervisor itself dies, its daemon dies
// with it and the connection aborts, as a daemon's death did without a
// supervisor: the program gets ENOTCONN or ECONNABORTED (over io_uring,
// where the kernel fails the calls it handed the dying daemon's rings,
// ECANCELED too) and the mount is stale.
func TestSupervisorKilled(t *testing.T) {
	m := mount(t, mountOpt{supervised: true})
	paths := makeFiles(t, m, 1)
	l := startIOLoop(t, paths...)
	l.progress(t, 20)
	daemon := m.pid
	m.cmd.Process.Kill()
	m.cmd.Wait()
	m.cmd = nil
	waitFor(t, "the daemon to die with its supervisor", func() bool {
		return syscall.Kill(daemon, 0) == syscall.ESRCH
	})
	<-l.done
	err := l.result()
	overURing := os.Getenv(iouringEnv) == "1"
	if !errors.Is(err, unix.ENOTCONN) && !errors.Is(err, unix.ECONNABORTED) && !(overURing && errors.Is(err, unix.ECANCELED)) {
		t.Fatalf("the program saw %v, want ENOTCONN or ECONNABORTED (over io_uring: %v)", err, overURing)
	}
	state, _, ierr := mountutil.Inspect(m.mnt)
	if ierr != nil || state != mountutil.Stale {
		t.Fatalf("the mountpoint is %v (%v), want stale", state, ierr)
	}
	mustOK(t, unix.Unmount(m.mnt, unix.MNT_DETACH), "detach the dead mount")
}
