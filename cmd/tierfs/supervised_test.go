package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/metrics/metricstest"
	"github.com/tierfs/tierfs/internal/supervisor"
	"github.com/tierfs/tierfs/internal/testenv"
)

// noURing keeps a test's mount off io_uring whatever the kernel's switch
// says (another package's test may hold it on).
const noURing = "\n[mount]\nio_uring = false\n"

// heldFile creates name on the mount and keeps it open for the test.
func heldFile(t *testing.T, mnt, name string) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(mnt, name), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.WriteString("before\n"); err != nil {
		t.Fatal(err)
	}
	return f
}

// killDaemon kills the serving daemon of mnt with SIGKILL and waits for
// its supervisor to have the next one serving.
func killDaemon(t *testing.T, mnt string) supervisor.Status {
	t.Helper()
	before, err := supervisor.Query(mnt)
	if err != nil {
		t.Fatalf("the supervisor of %s: %v", mnt, err)
	}
	if err := syscall.Kill(before.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var after supervisor.Status
	poll(t, "the next daemon to serve", func() (bool, error) {
		after, err = supervisor.Query(mnt)
		return err == nil && after.Takeovers == before.Takeovers+1 && after.Pid != before.Pid, nil
	})
	return after
}

// waitMounted waits for the "mounted" line of the daemon of generation
// gen in d's log, and decodes it into v.
func waitMounted(t *testing.T, d *daemonProc, gen int, v any) {
	t.Helper()
	poll(t, "the mounted line of daemon generation "+strconv.Itoa(gen), func() (bool, error) {
		var m struct {
			Generation int `json:"generation"`
		}
		return lastMounted(d.stderr.String(), &m) && m.Generation == gen, nil
	})
	lastMountedLine(t, d.stderr.String(), v)
}

// checkHeld writes through f, held across a takeover, and reads the whole
// file back.
func checkHeld(t *testing.T, f *os.File) {
	t.Helper()
	if _, err := f.WriteString("after\n"); err != nil {
		t.Fatalf("write through a descriptor held across the takeover: %v", err)
	}
	b := make([]byte, 64)
	n, err := f.ReadAt(b, 0)
	if string(b[:n]) != "before\nafter\n" {
		t.Fatalf("read back %q (%v), want both writes", b[:n], err)
	}
}

// lastMountedLine decodes the last "mounted" line of a log into v: the
// serving daemon's, after takeovers.
func lastMountedLine(t *testing.T, log string, v any) {
	t.Helper()
	if !lastMounted(log, v) {
		t.Fatalf("no mounted line in:\n%s", log)
	}
}

func lastMounted(log string, v any) bool {
	var last []byte
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), `"message":"mounted"`) {
			last = append(last[:0], sc.Bytes()...)
		}
	}
	return last != nil && json.Unmarshal(last, v) == nil
}

// `tierfs mount` as root supervises by default: the process started is
// the supervisor, the daemon its child (generation 1, in the mounted
// line and in status), and a kill -9 of the daemon is a pause for a
// program holding a file, not an error.
func TestMountSupervisedByDefault(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy+noURing)
	d := startDaemon(t, e)
	st, _ := statusJSON(t, e.mnt)
	if st.Supervisor == nil || st.Supervisor.Generation != 1 || st.Daemon == nil || st.Daemon.Pid == d.cmd.Process.Pid {
		t.Fatalf("status of a mount with the default [mount] supervisor: supervisor %+v, daemon %+v (tierfs mount is pid %d)", st.Supervisor, st.Daemon, d.cmd.Process.Pid)
	}
	var m struct {
		Generation int    `json:"generation"`
		Off        string `json:"supervisor_off"`
	}
	lastMountedLine(t, d.stderr.String(), &m)
	if m.Generation != 1 || m.Off != "" {
		t.Errorf("the mounted line: generation %d, supervisor_off %q; want 1 and none", m.Generation, m.Off)
	}
	f := heldFile(t, e.mnt, "held.log")
	after := killDaemon(t, e.mnt)
	checkHeld(t, f)
	if after.Gen != 2 {
		t.Errorf("after one kill: generation %d, want 2", after.Gen)
	}
	waitMounted(t, d, 2, &m)
	if m.Off != "" {
		t.Errorf("the new daemon's mounted line: supervisor_off %q", m.Off)
	}
}

// supervisor = false is today's mount: the process started serves, no
// supervisor answers, and the log says why there is none.
func TestMountSupervisorOptOut(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy+"\n[mount]\nsupervisor = false\n")
	d := startDaemon(t, e)
	st, _ := statusJSON(t, e.mnt)
	if st.Supervisor != nil || st.Daemon == nil || st.Daemon.Pid != d.cmd.Process.Pid {
		t.Fatalf("status with supervisor = false: supervisor %+v, daemon %+v; want none, and pid %d", st.Supervisor, st.Daemon, d.cmd.Process.Pid)
	}
	var m struct {
		Off string `json:"supervisor_off"`
	}
	lastMountedLine(t, d.stderr.String(), &m)
	if m.Off != "[mount] supervisor = false" {
		t.Errorf("the mounted line's supervisor_off: %q", m.Off)
	}
	if !strings.Contains(d.stderr.String(), `"message":"no supervisor: a daemon's death will abort the mount"`) {
		t.Errorf("the log does not say the mount has no supervisor:\n%s", d.stderr.String())
	}
	if _, err := supervisor.Query(e.mnt); err == nil {
		t.Errorf("a supervisor answers for a mount made with supervisor = false")
	}
}

// The metrics count takeovers: none on a fresh mount, then after a
// kill -9 the new daemon's endpoint says generation 2, one takeover and
// its pause, in a form promtool accepts.
func TestMetricsCountTakeovers(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy+noURing)
	d := startDaemon(t, e)
	sc := metricstest.Get(t, metricsAddr(t, d))
	if v, ok := sc.Value("tierfs_takeovers_total"); !ok || v != 0 {
		t.Errorf("takeovers on a fresh mount: %v (present %v), want 0", v, ok)
	}
	if v, _ := sc.Value("tierfs_daemon_generation"); v != 1 {
		t.Errorf("generation on a fresh mount: %v, want 1", v)
	}
	if _, ok := sc.Value("tierfs_takeover_last_pause_seconds"); ok {
		t.Errorf("a last pause before any takeover")
	}
	f := heldFile(t, e.mnt, "held.log")
	after := killDaemon(t, e.mnt)
	checkHeld(t, f)
	// The new daemon listens anew ("127.0.0.1:0": another port).
	var m struct {
		Metrics string `json:"metrics"`
	}
	waitMounted(t, d, 2, &m)
	sc = metricstest.Get(t, strings.TrimSuffix(strings.TrimPrefix(m.Metrics, "http://"), "/metrics"))
	if v, _ := sc.Value("tierfs_takeovers_total"); v != 1 {
		t.Errorf("takeovers after one kill: %v, want 1", v)
	}
	if v, _ := sc.Value("tierfs_daemon_generation"); v != 2 {
		t.Errorf("generation after one kill: %v, want 2", v)
	}
	pause, ok := sc.Value("tierfs_takeover_last_pause_seconds")
	if want := after.Pauses[len(after.Pauses)-1] / 1000; !ok || pause != want {
		t.Errorf("last pause %v s (present %v), want the supervisor's %v s", pause, ok, want)
	}
	metricstest.Promtool(t, sc.Text)
}

// systemd's stop signals every process of the unit: the daemon gets
// SIGTERM from systemd and again from its supervisor. That is one stop:
// the mount goes, both exit 0, and the daemon closes its tiers cleanly.
func TestMountStopSignalledTwice(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy+noURing)
	d := startDaemon(t, e)
	daemon := d.servingPid(t)
	if daemon == d.cmd.Process.Pid {
		t.Fatal("not supervised")
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(daemon, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.waitExit(t); code != 0 {
		t.Fatalf("tierfs mount exited %d:\n%s", code, d.stderr.String())
	}
	if mounted(e.mnt) {
		t.Errorf("still mounted")
	}
	if !strings.Contains(d.stderr.String(), `"reason":"signal terminated","status":0`) {
		t.Errorf("the daemon did not exit cleanly on the signal:\n%s", d.stderr.String())
	}
}

// With the kernel's io_uring switch on, supervision still wins by
// default: the mount is supervised and served through /dev/fuse, on which
// a kill -9 fails no call; supervisor_io_uring = true keeps the
// supervisor and takes io_uring; supervisor = false takes io_uring alone.
func TestSupervisionAndURing(t *testing.T) {
	requireFUSE(t)
	testenv.SetURingSwitch(t, "Y")
	for _, c := range []struct {
		conf      string
		supervise bool
		transport string
	}{
		{"", true, "/dev/fuse"},
		{"\n[mount]\nsupervisor_io_uring = true\n", true, "io_uring"},
		{"\n[mount]\nsupervisor = false\n", false, "io_uring"},
	} {
		e := newEnv(t)
		e.setConfig(t, "", idlePolicy+c.conf)
		startDaemon(t, e)
		st, _ := statusJSON(t, e.mnt)
		if (st.Supervisor != nil) != c.supervise || st.Requests == nil || st.Requests.Transport != c.transport {
			t.Errorf("%q with the switch on: supervisor %+v, requests %+v; want supervised %v over %s", c.conf, st.Supervisor, st.Requests, c.supervise, c.transport)
		}
	}
}

// Status says whether large writes are spliced from /dev/fuse to the tiers
// (the default, supervised mount) and counts them; splice_writes = false
// turns it off, and the log of a daemon that lacked CAP_SYS_RESOURCE says
// what it did to fs.pipe-max-size.
func TestStatusShowsSplicedWrites(t *testing.T) {
	requireFUSE(t)
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("splice_writes=%v", on), func(t *testing.T) {
			e := newEnv(t)
			e.setConfig(t, "", idlePolicy+fmt.Sprintf("\n[mount]\nsplice_writes = %v\n", on))
			d := startDaemon(t, e)
			// 16 MiB: 1 MiB WRITEs, all but the first few spliced (the
			// readers already waiting in read(2) read theirs).
			if err := os.WriteFile(filepath.Join(e.mnt, "seg.log"), bytes.Repeat([]byte("k"), 16<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			st, _ := statusJSON(t, e.mnt)
			r := st.Requests
			if st.Supervisor == nil || r == nil || r.Transport != "/dev/fuse" {
				t.Fatalf("supervisor %+v, requests %+v; want the default supervised mount through /dev/fuse", st.Supervisor, r)
			}
			out := mustTierfs(t, "", "status", e.mnt)
			if !on {
				if r.SpliceWrites || r.SplicedWrites != 0 || !strings.Contains(out, "Requests: through /dev/fuse.\n") {
					t.Errorf("splice_writes = false: requests %+v; status:\n%s", r, out)
				}
				return
			}
			if !r.SpliceWrites || r.SplicedWrites < 2 {
				t.Errorf("requests %+v after 16 MiB written; want splicing on and WRITEs spliced", r)
			}
			if want := fmt.Sprintf("Requests: through /dev/fuse; writes of 64 KiB and more spliced to the tiers, %d so far.", r.SplicedWrites); !strings.Contains(out, want) {
				t.Errorf("status output lacks %q:\n%s", want, out)
			}
			if log := d.stderr.String(); strings.Contains(log, "cannot make pipes") {
				t.Errorf("the daemon could not make its pipes:\n%s", log)
			}
		})
	}
}

// [mount] passthrough through `tierfs mount`: the daemon wires the
// policy's pins to the mount, a read-only open of a pinned file gets a
// passthrough handle, and status says so; an unpinned one gets none.
func TestStatusShowsPassthrough(t *testing.T) {
	requireFUSE(t)
	for _, sup := range []string{"", "supervisor = false\n"} {
		t.Run(map[string]string{"": "supervised", "supervisor = false\n": "unsupervised"}[sup], func(t *testing.T) {
			testStatusShowsPassthrough(t, sup)
		})
	}
}

func testStatusShowsPassthrough(t *testing.T, mountLines string) {
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy+"pin = [\"keep*\"]\n\n[mount]\n"+mountLines+"passthrough = true\n")
	d := startDaemon(t, e)
	if st, _ := statusJSON(t, e.mnt); (st.Supervisor != nil) != (mountLines == "") {
		t.Fatalf("supervisor %+v with [mount] %q", st.Supervisor, mountLines)
	}
	for _, name := range []string{"keep.dat", "other.dat"} {
		if err := os.WriteFile(filepath.Join(e.mnt, name), bytes.Repeat([]byte("p"), 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The writers' RELEASEs come in the background; a reader beside a
	// writer is served through the daemon.
	waitForOpen := func(want int64) *control.RequestsStatus {
		var r *control.RequestsStatus
		testenv.WaitFor(t, fmt.Sprintf("%d passthrough handles open", want), func() bool {
			st, _ := statusJSON(t, e.mnt)
			r = st.Requests
			return r != nil && r.PassthroughOpen == want
		})
		return r
	}
	var f *os.File
	testenv.WaitFor(t, "a passthrough handle on keep.dat", func() bool {
		var err error
		if f, err = os.Open(filepath.Join(e.mnt, "keep.dat")); err != nil {
			t.Fatal(err)
		}
		st, _ := statusJSON(t, e.mnt)
		if st.Requests != nil && st.Requests.PassthroughOpen == 1 {
			return true
		}
		f.Close()
		return false
	})
	o, err := os.Open(filepath.Join(e.mnt, "other.dat"))
	if err != nil {
		t.Fatal(err)
	}
	r := waitForOpen(1)
	if !r.Passthrough || r.PassthroughGiven < 1 {
		t.Fatalf("requests %+v; want passthrough on, one handle given", r)
	}
	out := mustTierfs(t, "", "status", e.mnt)
	want := fmt.Sprintf("Passthrough: pinned files opened read-only are read by the kernel from their tier; 1 such handles open, %d given since the mount.", r.PassthroughGiven)
	if !strings.Contains(out, want) {
		t.Errorf("status output lacks %q:\n%s", want, out)
	}
	o.Close()
	f.Close()
	waitForOpen(0)
	if log := d.stderr.String(); strings.Contains(log, `"level":"error"`) {
		t.Errorf("the daemon logged errors:\n%s", log)
	}
}

// `tierfs mount --writeback-cache` over a file that asks for passthrough:
// the kernel refuses the two on one mount, so the mount serves with the
// write-back cache and without passthrough, and says so.
func TestPassthroughGivesWayToWritebackFlag(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy+"pin = [\"keep*\"]\n\n[mount]\npassthrough = true\n")
	d := startDaemon(t, e, "--writeback-cache")
	st, _ := statusJSON(t, e.mnt)
	if st.Requests == nil || st.Requests.Passthrough || st.Requests.DataPath != "write-back cache" {
		t.Fatalf("requests %+v; want the write-back cache and no passthrough", st.Requests)
	}
	if log := d.stderr.String(); !strings.Contains(log, "passthrough: not with the write-back cache") {
		t.Fatalf("no warning in the daemon's log:\n%s", log)
	}
}
