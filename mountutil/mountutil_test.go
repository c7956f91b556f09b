package mountutil

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tierfs/tierfs/internal/testenv"
)

const syntheticMountinfo = `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
30 27 0:40 / /mnt/with\040space rw,relatime shared:5 master:2 - tmpfs tm\134pfs rw
31 27 0:41 / /data rw,nosuid,nodev,relatime - fuse.tierfs tierfs rw,user_id=0,group_id=0
32 31 0:42 / /data/inner rw - fuse tierfs rw
33 27 0:43 / /tab\011here rw - ext4 /dev/sdb1 rw

34 27 0:44 / /odd\777x rw - nfs4 server:/export rw
`

func TestParseMountinfo(t *testing.T) {
	got, err := ParseMountinfo(strings.NewReader(syntheticMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	type mi struct{ mp, fstype, source string }
	want := []mi{
		{"/proc", "proc", "proc"},
		{"/", "ext4", "/dev/sda1"},
		{"/mnt/with space", "tmpfs", `tm\pfs`},
		{"/data", "fuse.tierfs", "tierfs"},
		{"/data/inner", "fuse", "tierfs"},
		{"/tab\there", "ext4", "/dev/sdb1"},
		{`/odd\777x`, "nfs4", "server:/export"}, // \777 > 0xff: left alone
	}
	if len(got) != len(want) {
		t.Fatalf("got %d mounts, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if g := (mi{got[i].Mountpoint, got[i].FSType, got[i].Source}); g != want[i] {
			t.Errorf("mount %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, m := range got[3:5] {
		if !m.IsTierfs() {
			t.Errorf("%+v: IsTierfs = false", m)
		}
	}
	if got[1].IsTierfs() {
		t.Errorf("%+v: IsTierfs = true", got[1])
	}
	// The device and the ID, which tell a FUSE connection's mount.
	if got[4].Dev != "0:42" || got[4].ID() != 32 {
		t.Errorf("%+v: Dev %q, ID %d; want 0:42, 32", got[4], got[4].Dev, got[4].ID())
	}
}

func TestParseMountinfoMalformed(t *testing.T) {
	for _, in := range []string{
		"garbage\n",
		"22 27 0:21 / /proc rw,relatime proc proc rw\n",  // no separator
		"22 27 0:21 / /proc rw,relatime -\n",             // no fstype
		"x 27 0:21 / /proc rw,relatime - proc proc rw\n", // bad ID
	} {
		if _, err := ParseMountinfo(strings.NewReader(in)); err == nil {
			t.Errorf("ParseMountinfo(%q): no error", in)
		}
	}
}

func TestInnermost(t *testing.T) {
	mounts, err := ParseMountinfo(strings.NewReader(syntheticMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{"/", "/"},
		{"/etc/passwd", "/"},
		{"/data", "/data"},
		{"/data/topic-0/x.log", "/data"},
		{"/data/inner", "/data/inner"},
		{"/data/inner/a", "/data/inner"},
		{"/data/innerx", "/data"},
		{"/mnt/with space/f", "/mnt/with space"},
		{"/proc/self", "/proc"},
		{"/procfoo", "/"},
	} {
		m, ok := innermost(mounts, tc.path)
		if !ok || m.Mountpoint != tc.want {
			t.Errorf("innermost(%q) = %+v, %v; want %q", tc.path, m, ok, tc.want)
		}
	}

	// Two mounts stacked on one path, listed top first: the one whose
	// parent is the other is on top.
	stacked, err := ParseMountinfo(strings.NewReader(
		"50 40 0:50 / /s rw - tmpfs top rw\n" +
			"40 27 0:40 / /s rw - fuse.tierfs tierfs rw\n" +
			"27 1 8:1 / / rw - ext4 /dev/sda1 rw\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := innermost(stacked, "/s/x"); m.Source != "top" {
		t.Errorf("stacked: innermost = %+v, want the top tmpfs", m)
	}
	if m, _ := lookup(stacked, "/s"); m.Source != "top" {
		t.Errorf("stacked: lookup = %+v, want the top tmpfs", m)
	}
}

func TestInspectUnmounted(t *testing.T) {
	dir := t.TempDir()
	state, fstype, err := Inspect(dir)
	if err != nil || state != Unmounted || fstype != "" {
		t.Fatalf("Inspect(%s) = %v, %q, %v; want unmounted", dir, state, fstype, err)
	}
	if err := Prepare(dir); err != nil {
		t.Fatalf("Prepare(%s): %v", dir, err)
	}
	if err := Unmount(dir); err != nil {
		t.Fatalf("Unmount(%s) of a plain directory: %v", dir, err)
	}

	missing := filepath.Join(dir, "missing")
	if state, _, err := Inspect(missing); err != nil || state != Unmounted {
		t.Fatalf("Inspect(%s) = %v, %v; want unmounted", missing, state, err)
	}
	if err := Prepare(missing); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Prepare(%s) = %v; want a does-not-exist error", missing, err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Prepare(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("Prepare(%s) = %v; want a not-a-directory error", file, err)
	}
}

func TestInspectMounted(t *testing.T) {
	for _, p := range []string{"/", "/proc", "/proc/../proc/"} {
		state, fstype, err := Inspect(p)
		if err != nil || state != Mounted || fstype == "" {
			t.Errorf("Inspect(%s) = %v, %q, %v; want mounted", p, state, fstype, err)
		}
	}
	if _, fstype, _ := Inspect("/proc"); fstype != "proc" {
		t.Errorf("fstype of /proc = %q, want proc", fstype)
	}
	if err := Prepare("/proc"); err == nil || !strings.Contains(err.Error(), "already mounted (fstype proc)") {
		t.Errorf("Prepare(/proc) = %v; want an already-mounted error", err)
	}
	m, err := FindMount("/proc/self/status")
	if err != nil || m.Mountpoint != "/proc" || m.FSType != "proc" {
		t.Errorf("FindMount(/proc/self/status) = %+v, %v", m, err)
	}
	if _, err := FindTierfsMount(t.TempDir()); err == nil {
		t.Errorf("FindTierfsMount(tempdir): no error")
	}
}

// helperEnv names the mountpoint the re-executed test binary mounts on.
const helperEnv = "TIERFS_MOUNTUTIL_TEST_HELPER_MOUNTPOINT"

// TestHelperMount is not a test: it is the body of the helper process
// started by startHelper. It mounts an empty go-fuse filesystem and
// serves it until it is unmounted or killed.
func TestHelperMount(t *testing.T) {
	mp := os.Getenv(helperEnv)
	if mp == "" {
		t.Skip("helper process only")
	}
	server, err := fs.Mount(mp, &fs.Inode{}, &fs.Options{
		MountOptions: fuse.MountOptions{
			Name:        "tierfs",
			FsName:      "tierfs",
			DirectMount: true,
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper: mount: %v\n", err)
		os.Exit(3)
	}
	fmt.Println("mounted")
	server.Wait()
	os.Exit(0)
}

func requireFUSE(t *testing.T) {
	t.Helper()
	testenv.FUSE(t)
}

var waitFor = testenv.WaitFor

type helper struct {
	mp     string
	cmd    *exec.Cmd
	waited chan error
}

// startHelper re-executes the test binary to mount a tiny go-fuse
// filesystem on a fresh directory and waits until it is mounted.
func startHelper(t *testing.T) *helper {
	t.Helper()
	requireFUSE(t)
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperMount$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mp)
	if os.Getenv("GORACE") == "" {
		// Under -race the runtime sleeps 1s at exit by default.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{mp: mp, cmd: cmd, waited: make(chan error, 1)}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "mounted" {
				lines <- sc.Text()
			}
		}
		close(lines)
		h.waited <- cmd.Wait()
	}()
	// Registered after t.TempDir, so this runs before the directory is
	// removed: never leave a mount behind.
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = syscall.Unmount(mp, syscall.MNT_DETACH)
	})
	select {
	case _, ok := <-lines:
		if !ok {
			t.Fatalf("helper exited before mounting: %v", <-h.waited)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("helper did not mount within 30s")
	}
	waitFor(t, "Inspect to report the helper mount", func() bool {
		s, _, _ := Inspect(mp)
		return s == Mounted
	})
	return h
}

func (h *helper) kill(t *testing.T) {
	t.Helper()
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.waited:
	case <-time.After(30 * time.Second):
		t.Fatal("helper did not exit after SIGKILL")
	}
}

func TestLiveMountThenStale(t *testing.T) {
	h := startHelper(t)
	mp := h.mp

	state, fstype, err := Inspect(mp)
	if err != nil || state != Mounted || fstype != TierfsFSType {
		t.Fatalf("Inspect(live) = %v, %q, %v; want mounted fuse.tierfs", state, fstype, err)
	}
	if err := Prepare(mp); err == nil || !strings.Contains(err.Error(), "already mounted (fstype fuse.tierfs)") {
		t.Fatalf("Prepare(live) = %v; want an already-mounted error", err)
	}
	if err := PrepareForce(mp); err == nil {
		t.Fatalf("PrepareForce(live) = nil; a live mount must not be taken over")
	}
	for _, p := range []string{mp, filepath.Join(mp, "topic-0", "00000000000000000000.log")} {
		m, err := FindMount(p)
		if err != nil || m.Mountpoint != mp || m.FSType != TierfsFSType || m.Source != "tierfs" {
			t.Errorf("FindMount(%s) = %+v, %v", p, m, err)
		}
		if m, err := FindTierfsMount(p); err != nil || m.Mountpoint != mp {
			t.Errorf("FindTierfsMount(%s) = %+v, %v", p, m, err)
		}
	}

	h.kill(t)

	waitFor(t, "the mount to go stale", func() bool {
		s, _, _ := Inspect(mp)
		return s == Stale
	})
	state, fstype, err = Inspect(mp)
	if err != nil || state != Stale || fstype != TierfsFSType {
		t.Fatalf("Inspect(dead) = %v, %q, %v; want stale fuse.tierfs", state, fstype, err)
	}
	if _, err := os.Stat(mp); !errors.Is(err, syscall.ENOTCONN) {
		t.Logf("note: stat on the stale mount gave %v", err)
	}
	err = Prepare(mp)
	wantMsg := fmt.Sprintf("mountpoint %s is stale (transport endpoint is not connected): a previous tierfs died; run `fusermount3 -u %s` or `umount -l %s`", mp, mp, mp)
	if err == nil || err.Error() != wantMsg {
		t.Fatalf("Prepare(stale) = %v\nwant %s", err, wantMsg)
	}
	if m, err := FindMount(filepath.Join(mp, "x")); err != nil || m.Mountpoint != mp {
		t.Errorf("FindMount below stale mount = %+v, %v", m, err)
	}

	if err := Unmount(mp); err != nil {
		t.Fatalf("Unmount(stale): %v", err)
	}
	state, _, err = Inspect(mp)
	if err != nil || state != Unmounted {
		t.Fatalf("Inspect after Unmount = %v, %v; want unmounted", state, err)
	}
	if err := Prepare(mp); err != nil {
		t.Fatalf("Prepare after Unmount: %v", err)
	}
	if err := Unmount(mp); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
}

func TestPrepareForceStale(t *testing.T) {
	h := startHelper(t)
	h.kill(t)
	waitFor(t, "the mount to go stale", func() bool {
		s, _, _ := Inspect(h.mp)
		return s == Stale
	})
	if err := PrepareForce(h.mp); err != nil {
		t.Fatalf("PrepareForce(stale): %v", err)
	}
	if s, _, err := Inspect(h.mp); err != nil || s != Unmounted {
		t.Fatalf("Inspect after PrepareForce = %v, %v; want unmounted", s, err)
	}
}

func TestUnmountLive(t *testing.T) {
	h := startHelper(t)
	if err := Unmount(h.mp); err != nil {
		t.Fatalf("Unmount(live): %v", err)
	}
	if s, _, err := Inspect(h.mp); err != nil || s != Unmounted {
		t.Fatalf("Inspect after Unmount = %v, %v; want unmounted", s, err)
	}
	// The server notices the unmount and its Wait returns.
	select {
	case err := <-h.waited:
		if err != nil {
			t.Errorf("helper exited with %v after unmount", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("helper still serving 30s after unmount")
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Unmounted: "unmounted", Mounted: "mounted", Stale: "stale", State(9): "State(9)"} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(s), got, want)
		}
	}
}
