package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/supervisor"
)

// rwLoop writes a block and reads it back, in a loop, through
// descriptors held open on the mount; it keeps what the files must hold.
type rwLoop struct {
	files  []*os.File
	want   [][]byte
	ops    atomic.Int64
	maxLat atomic.Int64
	mu     sync.Mutex
	err    error
	stop   chan struct{}
	done   chan struct{}
}

// segmentPaths makes dir/topic-0 and names n segment files in it.
func segmentPaths(t *testing.T, dir string, n int) []string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "topic-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for i := range n {
		paths = append(paths, filepath.Join(dir, "topic-0", fmt.Sprintf("%020d.log", i)))
	}
	return paths
}

// killServingDaemon kills the daemon serving mnt with SIGKILL and waits
// until its supervisor has started the next one.
func killServingDaemon(t *testing.T, mnt string) {
	t.Helper()
	st, err := supervisor.Query(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, "a new daemon after kill -9", func() (bool, error) {
		now, err := supervisor.Query(mnt)
		return err == nil && now.Pid != st.Pid && now.Takeovers == st.Takeovers+1, err
	})
}

func startRWLoop(t *testing.T, paths []string) *rwLoop {
	l := &rwLoop{stop: make(chan struct{}), done: make(chan struct{})}
	for _, p := range paths {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		l.files = append(l.files, f)
		l.want = append(l.want, nil)
	}
	go func() {
		defer close(l.done)
		r := rand.New(rand.NewSource(2))
		const blk = 4096 + 33
		buf := make([]byte, blk)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			fi := i % len(l.files)
			off := int64((i/len(l.files))%200) * blk
			data := make([]byte, blk)
			r.Read(data)
			start := time.Now()
			_, err := l.files[fi].WriteAt(data, off)
			if err == nil {
				_, err = l.files[fi].ReadAt(buf, off)
			}
			if d := int64(time.Since(start)); d > l.maxLat.Load() {
				l.maxLat.Store(d)
			}
			if err == nil && !bytes.Equal(buf, data) {
				err = fmt.Errorf("read at %d returned other bytes than were written", off)
			}
			if err != nil {
				l.mu.Lock()
				l.err = fmt.Errorf("op %d: %w", i, err)
				l.mu.Unlock()
				return
			}
			w := l.want[fi]
			if end := off + blk; end > int64(len(w)) {
				w = append(w, make([]byte, end-int64(len(w)))...)
			}
			copy(w[off:], data)
			l.want[fi] = w
			l.ops.Add(1)
		}
	}()
	return l
}

func (l *rwLoop) progress(t *testing.T, n int64) {
	t.Helper()
	mark := l.ops.Load()
	poll(t, "the program using the mount to go on", func() (bool, error) {
		select {
		case <-l.done:
			return true, nil
		default:
		}
		return l.ops.Load() >= mark+n, nil
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		t.Fatalf("the program using the mount saw an error: %v", l.err)
	}
}

func (l *rwLoop) finish(t *testing.T) {
	t.Helper()
	close(l.stop)
	<-l.done
	if l.err != nil {
		t.Fatalf("the program using the mount saw an error: %v", l.err)
	}
	for i, f := range l.files {
		got, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, l.want[i]) {
			t.Fatalf("%s: %d bytes, want %d: the data written is not all there", f.Name(), len(got), len(l.want[i]))
		}
		f.Close()
	}
}

func msList(p []float64) string {
	s := slices.Clone(p)
	slices.Sort(s)
	var b []string
	for _, v := range s {
		b = append(b, fmt.Sprintf("%.1f", v))
	}
	return fmt.Sprintf("min %.1f, median %.1f, max %.1f ms (%s)", s[0], s[len(s)/2], s[len(s)-1], strings.Join(b, " "))
}

// `tierfs restart` replaces the daemon of a supervised mount ten times
// while a program reads and writes files it holds open: each time a new
// daemon serves, the program sees a pause and no error, and every byte is
// there; a kill -9 of the daemon is taken over the same way; SIGTERM to
// `tierfs mount` (the supervisor) unmounts as before.
func TestRestartCommand(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.config, string(cfg)+"\n[mount]\nsupervisor = true\n")
	d := startDaemon(t, e)
	l := startRWLoop(t, segmentPaths(t, e.mnt, 3))
	l.progress(t, 50)

	var told, seen []float64
	for k := 0; k < 10; k++ {
		l.maxLat.Store(0)
		out := mustTierfs(t, "", "restart", "--json", e.mnt)
		var r supervisor.Result
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("tierfs restart --json printed %q: %v", out, err)
		}
		if r.OldPid == 0 || r.NewPid == 0 || r.OldPid == r.NewPid || r.Gen != k+2 || r.PauseMs <= 0 {
			t.Fatalf("restart %d: %+v", k+1, r)
		}
		if syscall.Kill(r.OldPid, 0) != syscall.ESRCH {
			t.Fatalf("restart %d: the old daemon %d still runs", k+1, r.OldPid)
		}
		l.progress(t, 30)
		told = append(told, r.PauseMs)
		seen = append(seen, float64(l.maxLat.Load())/1e6)
		if !mounted(e.mnt) {
			t.Fatalf("restart %d: the mount is gone", k+1)
		}
	}
	// A [mount] change in the file waits for the next mount: the new
	// daemon serves with the table the connection was made with (else
	// INIT would not match, and the mount would be lost), and says so.
	writeFile(t, e.config, string(cfg)+"\n[mount]\nsupervisor = true\nwriteback_cache = true\n")
	// The human form says the same.
	out := mustTierfs(t, "", "restart", e.mnt)
	if !strings.Contains(out, "daemon replaced: pid ") || !strings.Contains(out, "generation 12") {
		t.Errorf("tierfs restart printed %q", out)
	}
	l.progress(t, 30)
	if !strings.Contains(d.stderr.String(), "[mount] differs from the one the mount was made with") {
		t.Errorf("the daemon that took over with a changed [mount] did not say it keeps the mount's")
	}

	// kill -9 of the daemon: the supervisor starts the next one.
	killServingDaemon(t, e.mnt)
	l.progress(t, 30)
	// status names the daemon that serves now and the supervisor's count
	// (issue 20): the control socket is the new daemon's.
	now, err := supervisor.Query(e.mnt)
	if err != nil {
		t.Fatal(err)
	}
	sj, _ := statusJSON(t, e.mnt)
	if sj.Daemon == nil || sj.Daemon.Pid != now.Pid || sj.Daemon.Version == "" || sj.Daemon.Started.IsZero() {
		t.Errorf("status --json daemon: %+v, want pid %d, a version and a start", sj.Daemon, now.Pid)
	}
	if sv := sj.Supervisor; sv == nil || sv.Generation != now.Gen || sv.Takeovers != now.Takeovers || sv.Takeovers < 12 {
		t.Errorf("status --json supervisor: %+v, want generation %d and %d takeovers (12 or more)", sv, now.Gen, now.Takeovers)
	}
	if text := mustTierfs(t, "", "status", e.mnt); !strings.Contains(text, fmt.Sprintf("Daemon: pid %d,", now.Pid)) ||
		!strings.Contains(text, fmt.Sprintf("%d takeovers", now.Takeovers)) {
		t.Errorf("tierfs status does not name the daemon and the takeovers:\n%s", text)
	}
	l.finish(t)
	t.Logf("tierfs restart, 10 takeovers: pause the supervisor measured (drain to the new daemon serving): %s; the program's slowest call around each: %s", msList(told), msList(seen))

	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.waitExit(t); code != 0 {
		t.Fatalf("tierfs mount exited %d after SIGTERM", code)
	}
	if mounted(e.mnt) {
		t.Fatalf("still mounted after SIGTERM")
	}
}

// buildStamped builds tierfs again into dir, stamped with version v (the
// Makefile's -ldflags; -buildvcs=false so that the stamp is what shows),
// and returns its path: a different build, as an upgrade would bring.
func buildStamped(t *testing.T, dir, v string) string {
	t.Helper()
	out := filepath.Join(dir, "tierfs-"+v)
	args := []string{"build", "-buildvcs=false", "-ldflags", "-X github.com/tierfs/tierfs/internal/version.version=" + v, "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

// `tierfs restart --binary` hands a supervised mount to a daemon of
// another build while a program reads and writes held files: status
// shows the new version, a kill -9 after brings up the new build again,
// and going back works the same way. A binary that exits at once, or
// never serves, or that the supervisor refuses (a symlink, writable by
// others) leaves the mount served by the previous binary: the program
// sees no error, and every byte is there.
func TestRestartBinary(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.config, string(cfg)+"\n[mount]\nsupervisor = true\n")
	bdir := t.TempDir() // root's, 0700: the supervisor accepts what is in it
	const newVersion = "v9.9.9-restart-test"
	newBin := buildStamped(t, bdir, newVersion)
	d := startDaemon(t, e)
	l := startRWLoop(t, segmentPaths(t, e.mnt, 2))
	l.progress(t, 50)
	oldVersion := statusVersion(t, e.mnt)
	if strings.Contains(oldVersion, newVersion) {
		t.Fatalf("the first daemon already says %q", oldVersion)
	}

	restartTo := func(bin, wantVersion string) supervisor.Result {
		t.Helper()
		before, err := supervisor.Query(e.mnt)
		if err != nil {
			t.Fatal(err)
		}
		out := mustTierfs(t, "", "restart", "--json", "--binary", bin, e.mnt)
		var r supervisor.Result
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("tierfs restart --json printed %q: %v", out, err)
		}
		if r.Binary != bin || r.RolledBack || r.Error != "" || r.NewPid == before.Pid || r.Gen != before.Gen+1 {
			t.Fatalf("restart --binary %s: %+v (before: pid %d, generation %d)", bin, r, before.Pid, before.Gen)
		}
		l.progress(t, 30)
		if v := statusVersion(t, e.mnt); !strings.Contains(v, wantVersion) {
			t.Fatalf("after restart --binary %s the daemon says %q, want %q", bin, v, wantVersion)
		}
		// It was started through a descriptor of the checked file; the
		// descriptor does not stay open in it.
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", r.NewPid))
		for _, fd := range fds {
			if target, _ := os.Readlink(fd); target == bin {
				t.Errorf("the daemon of %s holds its binary open (%s)", bin, fd)
			}
		}
		sj, _ := statusJSON(t, e.mnt)
		if sj.Supervisor == nil || sj.Supervisor.Binary != bin || sj.Daemon == nil || sj.Daemon.Pid != r.NewPid {
			t.Fatalf("status --json after restart --binary %s: supervisor %+v, daemon %+v", bin, sj.Supervisor, sj.Daemon)
		}
		return r
	}
	r := restartTo(newBin, newVersion)
	t.Logf("restart --binary to %s: pause %.1f ms", newVersion, r.PauseMs)

	// kill -9: the supervisor starts the new build again, not its own.
	killServingDaemon(t, e.mnt)
	l.progress(t, 30)
	waitDaemon(t, e.mnt)
	if v := statusVersion(t, e.mnt); !strings.Contains(v, newVersion) {
		t.Fatalf("after kill -9 of the upgraded daemon, the next says %q, want %q", v, newVersion)
	}

	// Binaries that do not take over: the previous binary (the new
	// build) serves again, and restart says so and fails.
	exitsAtOnce := filepath.Join(bdir, "exits-at-once")
	writeFile(t, exitsAtOnce, "#!/bin/sh\nexit 3\n")
	never := filepath.Join(bdir, "never-serves")
	writeFile(t, never, "#!/bin/sh\nexec sleep 600\n")
	for _, c := range []struct {
		bin, timeout, want string
	}{
		{exitsAtOnce, "10s", "exited before it served"},
		{never, "300ms", "did not serve within 300ms"},
	} {
		if err := os.Chmod(c.bin, 0o755); err != nil {
			t.Fatal(err)
		}
		before, err := supervisor.Query(e.mnt)
		if err != nil {
			t.Fatal(err)
		}
		out, errOut, code := tierfs(t, "", "restart", "--binary", c.bin, "--timeout", c.timeout, e.mnt)
		if code != 1 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "the previous binary serves again") {
			t.Fatalf("restart --binary %s: exit %d, stdout %q, stderr %q; want exit 1 saying %q and that the previous binary serves again", c.bin, code, out, errOut, c.want)
		}
		l.progress(t, 30)
		if !mounted(e.mnt) {
			t.Fatalf("restart --binary %s: the mount is gone", c.bin)
		}
		now, err := supervisor.Query(e.mnt)
		if err != nil {
			t.Fatal(err)
		}
		if now.Pid == before.Pid || now.Binary != newBin {
			t.Fatalf("after the failed restart --binary %s: supervisor %+v, want a new daemon of %s", c.bin, now, newBin)
		}
		if v := statusVersion(t, e.mnt); !strings.Contains(v, newVersion) {
			t.Fatalf("after the failed restart --binary %s the daemon says %q, want %q", c.bin, v, newVersion)
		}
		t.Logf("restart --binary %s rolled back: %s", filepath.Base(c.bin), strings.TrimSpace(errOut))
	}

	// Refused before anything stops: the same daemon serves on.
	link := filepath.Join(bdir, "link")
	if err := os.Symlink(newBin, link); err != nil {
		t.Fatal(err)
	}
	writable := filepath.Join(bdir, "writable")
	if b, err := os.ReadFile(newBin); err != nil {
		t.Fatal(err)
	} else {
		writeFile(t, writable, string(b))
	}
	if err := os.Chmod(writable, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ bin, want string }{
		{link, "is a symbolic link"},
		{writable, "writable by others"},
		{filepath.Join(bdir, "missing"), "no such file"},
	} {
		before, err := supervisor.Query(e.mnt)
		if err != nil {
			t.Fatal(err)
		}
		_, errOut, code := tierfs(t, "", "restart", "--binary", c.bin, e.mnt)
		if code != 1 || !strings.Contains(errOut, "binary refused") || !strings.Contains(errOut, c.want) {
			t.Fatalf("restart --binary %s: exit %d, stderr %q; want it refused: %q", c.bin, code, errOut, c.want)
		}
		now, err := supervisor.Query(e.mnt)
		if err != nil {
			t.Fatal(err)
		}
		if now.Pid != before.Pid || now.Gen != before.Gen {
			t.Fatalf("a refused binary replaced the daemon: %+v -> %+v", before, now)
		}
	}

	// And back to the first build.
	restartTo(tierfsBin, oldVersion)
	l.finish(t)
	if s := d.stderr.String(); !strings.Contains(s, `"message":"the new binary serves the mount"`) ||
		!strings.Contains(s, `"message":"the new binary did not take over; starting the previous one"`) {
		t.Errorf("the supervisor's log does not tell the upgrades and the rollbacks")
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.waitExit(t); code != 0 {
		t.Fatalf("tierfs mount exited %d after SIGTERM", code)
	}
}

// statusVersion is the serving daemon's version line, from status --json.
func statusVersion(t *testing.T, mnt string) string {
	t.Helper()
	sj, _ := statusJSON(t, mnt)
	if sj.Daemon == nil {
		t.Fatalf("status --json names no daemon")
	}
	return sj.Daemon.Version
}

// waitDaemon waits until the control socket answers for the daemon the
// supervisor says serves (it listens just after the mount is served).
func waitDaemon(t *testing.T, mnt string) {
	t.Helper()
	c, err := control.NewClient(mnt)
	if err != nil {
		t.Fatal(err)
	}
	poll(t, "the new daemon's control socket", func() (bool, error) {
		st, err := supervisor.Query(mnt)
		if err != nil {
			return false, err
		}
		cs, err := c.Status(context.Background())
		return err == nil && cs.Daemon != nil && cs.Daemon.Pid == st.Pid, nil
	})
}
