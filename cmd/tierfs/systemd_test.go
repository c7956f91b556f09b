package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/supervisor"
	"github.com/tierfs/tierfs/internal/testenv"
	"github.com/tierfs/tierfs/mountutil"
)

// systemdNS is a real systemd running as PID 1 of new PID, mount,
// cgroup, UTS, IPC and network namespaces, managing only the units of
// one directory (SYSTEMD_UNIT_PATH, none of the system's: nothing of the
// host's boot runs), with the host's root read-only below it and only
// the test's directory writable: PID 1 of this machine is not systemd.
type systemdNS struct {
	pid    int // PID 1 of the namespaces, as this process sees it
	cmd    *exec.Cmd
	units  string
	cgroup []string
	out    *syncBuffer
	done   chan struct{} // closed when unshare has exited
}

// The script that becomes PID 1: it makes the mount namespace safe for
// a manager that thinks it owns the machine, then execs systemd.
const systemdInit = `set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mount --bind "$KEEP_RW" "$KEEP_RW"
mount --bind -o remount,ro /
# The cgroup trees again, rooted at the new cgroup namespace's root.
if [ "$CGROUP_MODE" = unified ]; then
	mount -t cgroup2 cgroup2 /sys/fs/cgroup
else
	umount /sys/fs/cgroup/systemd
	mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
	if [ -d /sys/fs/cgroup/unified ]; then
		umount /sys/fs/cgroup/unified
		mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
	fi
fi
exec /lib/systemd/systemd --unit=idle.target --log-target=console --log-level=info
`

func startSystemdNS(t *testing.T, rw string, units map[string]string) *systemdNS {
	t.Helper()
	for _, p := range []string{"/lib/systemd/systemd", "/usr/bin/unshare", "/usr/bin/nsenter", "/usr/bin/systemctl"} {
		_, err := os.Stat(p)
		testenv.Require(t, err == nil, p+" is needed to run systemd in a namespace (packages systemd, util-linux)")
	}
	// cgroup v2 alone, or v1 with systemd's named tree (and perhaps v2
	// beside it at unified/).
	mode, trees := "unified", []string{"/sys/fs/cgroup"}
	var fs unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &fs); err != nil || fs.Type != unix.CGROUP2_SUPER_MAGIC {
		mode, trees = "hybrid", []string{"/sys/fs/cgroup/systemd"}
		if _, err := os.Stat("/sys/fs/cgroup/unified/cgroup.procs"); err == nil {
			trees = append(trees, "/sys/fs/cgroup/unified")
		}
		_, err := os.Stat("/sys/fs/cgroup/systemd/cgroup.procs")
		testenv.Require(t, err == nil, "a cgroup tree systemd can run in (cgroup2 at /sys/fs/cgroup or name=systemd at /sys/fs/cgroup/systemd)")
	}
	s := &systemdNS{units: filepath.Join(rw, "units"), out: &syncBuffer{}, done: make(chan struct{})}
	if err := os.Mkdir(s.units, 0o755); err != nil {
		t.Fatal(err)
	}
	units["idle.target"] = "[Unit]\nDescription=nothing but what the test starts\nDefaultDependencies=no\n"
	for name, text := range units {
		writeFile(t, filepath.Join(s.units, name), text)
	}
	// A cgroup of its own in both hierarchies, below which the manager
	// makes its slices: this machine's other processes are not its.
	name := fmt.Sprintf("tierfs-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	for _, tree := range trees {
		d := filepath.Join(tree, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		s.cgroup = append(s.cgroup, d)
	}
	script := filepath.Join(rw, "init.sh")
	writeFile(t, script, systemdInit)
	// The cgroup is joined by the shell before it execs unshare, so
	// that the manager starts inside it.
	var join string
	for _, d := range s.cgroup {
		join += fmt.Sprintf("echo $$ > %s/cgroup.procs && ", d)
	}
	join += "exec unshare --pid --fork --kill-child --mount --cgroup --uts --ipc --net --mount-proc /bin/sh " + script
	s.cmd = exec.Command("/bin/sh", "-c", join)
	s.cmd.Env = append(os.Environ(), "KEEP_RW="+rw, "CGROUP_MODE="+mode, "container=tierfs-test", "SYSTEMD_UNIT_PATH="+s.units)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() { s.stop(t) })
	// PID 1 is unshare's child; it execs systemd.
	poll(t, "systemd as PID 1 of the namespace", func() (bool, error) {
		select {
		case <-s.done:
			t.Fatalf("the namespace's init exited:\n%s", s.out.String())
		default:
		}
		if s.pid == 0 {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", s.cmd.Process.Pid, s.cmd.Process.Pid))
			if err != nil {
				return false, err
			}
			if s.pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
				s.pid = 0
				return false, err
			}
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", s.pid))
		if strings.TrimSpace(string(comm)) != "systemd" {
			return false, fmt.Errorf("PID 1 is %q", comm)
		}
		_, err := s.ctl("is-system-running")
		// "running" or "degraded": it answers; "starting": not yet.
		return err == nil || strings.Contains(err.Error(), "degraded"), err
	})
	return s
}

// ctl runs systemctl in the namespaces.
func (s *systemdNS) ctl(args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(s.pid), "-m", "-p", "--", "systemctl"}, args...)...)
	var o bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &o
	err := cmd.Run()
	if err != nil {
		return o.String(), fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, o.String())
	}
	return o.String(), nil
}

func (s *systemdNS) mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.ctl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// show is one property of a unit.
func (s *systemdNS) show(t *testing.T, unit, prop string) string {
	t.Helper()
	return strings.TrimSpace(s.mustCtl(t, "show", "--value", "-p", prop, unit))
}

// path is p as the namespace's processes see it.
func (s *systemdNS) path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", s.pid, p)
}

// mount is the namespace's mountinfo entry at mp.
func (s *systemdNS) mount(mp string) (mountutil.MountInfo, bool) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", s.pid))
	if err != nil {
		return mountutil.MountInfo{}, false
	}
	defer f.Close()
	ms, err := mountutil.ParseMountinfo(f)
	if err != nil {
		return mountutil.MountInfo{}, false
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Mountpoint == mp {
			return ms[i], true
		}
	}
	return mountutil.MountInfo{}, false
}

// stop kills PID 1, and with it everything in the namespaces (their
// mounts go with the mount namespace), and removes the cgroups.
func (s *systemdNS) stop(t *testing.T) {
	if s.pid > 0 {
		syscall.Kill(s.pid, syscall.SIGKILL)
	}
	s.cmd.Process.Kill()
	<-s.done
	// The namespace's other processes die with its PID 1, and leave
	// their cgroups once reaped.
	deadline := time.Now().Add(waitTimeout)
	for _, d := range s.cgroup {
		for {
			var procs []byte
			filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
				if err == nil && fi.Name() == "cgroup.procs" {
					b, _ := os.ReadFile(p)
					procs = append(procs, bytes.TrimSpace(b)...)
				}
				return nil
			})
			if len(procs) == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for i := len(s.cgroup) - 1; i >= 0; i-- {
		// Depth first: the manager's slices and scopes are below.
		var dirs []string
		filepath.Walk(s.cgroup[i], func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for j := len(dirs) - 1; j >= 0; j-- {
			if err := os.Remove(dirs[j]); err != nil && !os.IsNotExist(err) {
				t.Logf("cleanup: %v", err)
			}
		}
	}
	if t.Failed() {
		t.Logf("systemd's output:\n%s", s.out.String())
	}
}

// tierfsUnit is the shipped examples/systemd/supervised/tierfs.service
// with this test's binary, configuration and mountpoint, and no
// dependencies on the host's units and mounts.
func tierfsUnit(t *testing.T, e *env, logFile string) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/systemd/supervised/tierfs.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	_, svc, ok := strings.Cut(unit, "\n[Service]\n")
	if !ok {
		t.Fatalf("tierfs.service has no [Service] section")
	}
	svc, _, _ = strings.Cut(svc, "\n[Install]")
	var lines []string
	for _, l := range strings.Split(svc, "\n") {
		switch {
		case strings.HasPrefix(l, "ExecStart="):
			l = fmt.Sprintf("ExecStart=%s mount --config %s %s", tierfsBin, e.config, e.mnt)
		case strings.HasPrefix(l, "ExecReload="):
			continue
		}
		lines = append(lines, l)
	}
	if !strings.Contains(svc, "\nRestartKillSignal=SIGUSR1") || !strings.Contains(svc, "\nFileDescriptorStoreMax=") {
		t.Fatalf("tierfs.service lost its store settings:\n%s", svc)
	}
	return "[Unit]\nDescription=tierfs under test\nDefaultDependencies=no\n\n[Service]\n" + strings.Join(lines, "\n") +
		"\nRestartSec=100ms\nStandardOutput=append:" + logFile + "\nStandardError=inherit\n" +
		// A -race binary would sleep a second at each exit.
		"Environment=GORACE=atexit_sleep_ms=0\n"
}

// Under a real systemd, with the shipped unit: `systemctl restart`
// hands the live FUSE connection to the new process through the unit's
// file-descriptor store, three times, and after a kill -9 of the
// supervisor systemd's restart does the same, while a program reads and
// writes files it holds open on the mount: it sees no error and every
// byte is there. `systemctl stop` then unmounts and empties the store.
func TestSystemdRestartKeepsMount(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.config, string(cfg)+"\n[mount]\nsupervisor = true\n")
	logFile := filepath.Join(e.base, "tierfs.log")
	sd := startSystemdNS(t, e.base, map[string]string{"tierfs.service": tierfsUnit(t, e, logFile)})
	defer func() {
		b, _ := os.ReadFile(logFile)
		if bytes.Contains(b, []byte("WARNING: DATA RACE")) {
			t.Errorf("tierfs reported a data race")
		}
		if t.Failed() {
			t.Logf("tierfs's log:\n%s", b)
		}
	}()

	// Type=notify: start returns once the supervisor said READY=1.
	sd.mustCtl(t, "start", "tierfs.service")
	m, ok := sd.mount(e.mnt)
	if !ok || !m.IsTierfs() {
		t.Fatalf("after systemctl start: no tierfs mount at %s in the namespace (%+v)", e.mnt, m)
	}
	if n := sd.show(t, "tierfs.service", "NFileDescriptorStore"); n != "2" {
		t.Fatalf("the unit's store holds %s descriptors, want 2 (the connection and its state)", n)
	}
	mnt := sd.path(e.mnt)
	l := startRWLoop(t, segmentPaths(t, mnt, 3))
	l.progress(t, 50)

	pid := sd.show(t, "tierfs.service", "MainPID")
	var pauses []float64
	for k := 0; k < 3; k++ {
		l.maxLat.Store(0)
		// Returns once the new supervisor's daemon serves (READY=1).
		sd.mustCtl(t, "restart", "tierfs.service")
		np := sd.show(t, "tierfs.service", "MainPID")
		if np == pid || np == "0" {
			t.Fatalf("restart %d: MainPID %s, was %s: not a new process", k+1, np, pid)
		}
		pid = np
		if st := sd.show(t, "tierfs.service", "ActiveState"); st != "active" {
			t.Fatalf("restart %d: the unit is %s", k+1, st)
		}
		m2, ok := sd.mount(e.mnt)
		if !ok || m2.ID() != m.ID() || m2.Dev != m.Dev {
			t.Fatalf("restart %d: the mount at %s is %+v, was %+v: not the same connection", k+1, e.mnt, m2, m)
		}
		if n := sd.show(t, "tierfs.service", "NFileDescriptorStore"); n != "2" {
			t.Fatalf("restart %d: the unit's store holds %s descriptors, want 2", k+1, n)
		}
		l.progress(t, 30)
		pauses = append(pauses, float64(l.maxLat.Load())/1e6)
	}
	t.Logf("3 systemctl restart: the program's slowest call per restart: %s", msList(pauses))
	log, _ := os.ReadFile(logFile)
	if got := strings.Count(string(log), "systemd kept the connection: taking it over"); got != 3 {
		t.Errorf("the supervisors took the stored connection over %d times, want 3", got)
	}
	// The generation (which file handles carry) went on through the
	// store: 1 mounted, 2 to 4 by systemd's restarts, 5 now.
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(sd.pid), "-m", "-p", "--", tierfsBin, "restart", "--json", e.mnt)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tierfs restart in the namespace: %v\n%s", err, out)
	}
	var r supervisor.Result
	if err := json.Unmarshal(out, &r); err != nil || r.Gen != 5 {
		t.Fatalf("tierfs restart --json: %s (%v); want generation 5", out, err)
	}
	l.progress(t, 30)

	// kill -9 of the supervisor: its daemon dies with it, the store
	// keeps the connection, and Restart=on-failure starts the next.
	spid, err := strconv.Atoi(pid)
	if err != nil {
		t.Fatalf("MainPID %q: %v", pid, err)
	}
	if err := killInNS(sd, spid); err != nil {
		t.Fatal(err)
	}
	poll(t, "systemd to restart the killed supervisor", func() (bool, error) {
		np := sd.show(t, "tierfs.service", "MainPID")
		st := sd.show(t, "tierfs.service", "SubState")
		return np != pid && np != "0" && st == "running", fmt.Errorf("MainPID %s, %s", np, st)
	})
	l.progress(t, 30)
	if m2, ok := sd.mount(e.mnt); !ok || m2.ID() != m.ID() {
		t.Fatalf("after the supervisor's kill: the mount is %+v, was %+v", m2, m)
	}
	l.finish(t)

	// A stop unmounts (nothing holds files now) and releases the store.
	sd.mustCtl(t, "stop", "tierfs.service")
	if m2, ok := sd.mount(e.mnt); ok {
		t.Fatalf("after systemctl stop: still mounted: %+v", m2)
	}
	if n := sd.show(t, "tierfs.service", "NFileDescriptorStore"); n != "0" {
		t.Fatalf("after systemctl stop: the unit's store holds %s descriptors", n)
	}
}

// killInNS sends SIGKILL to the process the namespace calls pid.
func killInNS(sd *systemdNS, pid int) error {
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(sd.pid), "-p", "--", "kill", "-KILL", strconv.Itoa(pid)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kill -9 %d in the namespace: %v: %s", pid, err, out)
	}
	return nil
}

// Without [mount] supervisor, under the same unit, tierfs itself says
// READY=1 once it serves (else systemctl start would time out), and a
// restart (SIGUSR1) is a stop and a start: the mount is made again.
func TestSystemdNotifyWithoutSupervisor(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy+"\n[mount]\nsupervisor = false\n")
	logFile := filepath.Join(e.base, "tierfs.log")
	unit := tierfsUnit(t, e, logFile) + "TimeoutStartSec=20s\n"
	sd := startSystemdNS(t, e.base, map[string]string{"tierfs.service": unit})
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("tierfs's log:\n%s", b)
		}
	}()
	sd.mustCtl(t, "start", "tierfs.service")
	m, ok := sd.mount(e.mnt)
	if !ok || !m.IsTierfs() {
		t.Fatalf("after systemctl start: no tierfs mount at %s", e.mnt)
	}
	if st := sd.show(t, "tierfs.service", "StatusText"); st != "serving "+e.mnt {
		t.Errorf("the unit's status is %q", st)
	}
	pid := sd.show(t, "tierfs.service", "MainPID")
	sd.mustCtl(t, "restart", "tierfs.service")
	// The kernel may give the new mount the old one's ID and device:
	// the log tells the two apart.
	if _, ok := sd.mount(e.mnt); !ok || sd.show(t, "tierfs.service", "MainPID") == pid {
		t.Fatalf("after systemctl restart: no mount, or the same process")
	}
	log, _ := os.ReadFile(logFile)
	if n := strings.Count(string(log), `"message":"mounted"`); n != 2 || !strings.Contains(string(log), `"reason":"signal user defined signal 1","status":0`) {
		t.Fatalf("after systemctl restart: %d mounts logged, want 2, the first unmounted on SIGUSR1", n)
	}
	if _, err := os.ReadDir(sd.path(e.mnt)); err != nil {
		t.Fatalf("the new mount does not answer: %v", err)
	}
	sd.mustCtl(t, "stop", "tierfs.service")
	if m2, ok := sd.mount(e.mnt); ok {
		t.Fatalf("after systemctl stop: still mounted: %+v", m2)
	}
}
