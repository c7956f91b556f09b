package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testuser"
)

// A second daemon on the same tiers is refused before it touches them,
// naming the first (pid and mountpoint); the first goes on serving.
func TestSecondDaemonRefused(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	d := startDaemon(t, e)
	writeFile(t, filepath.Join(e.mnt, "f"), "first")
	mnt2 := filepath.Join(e.base, "mnt2")
	if err := os.Mkdir(mnt2, 0o755); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := tierfs(t, "", "mount", "--config", e.config, mnt2)
	want := fmt.Sprintf("in use by another tierfs daemon (pid %d, mountpoint %s)", d.servingPid(t), e.mnt)
	if code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("second mount: exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	if mounted(mnt2) {
		t.Errorf("the second daemon mounted")
	}
	if b, err := os.ReadFile(filepath.Join(e.mnt, "f")); err != nil || string(b) != "first" {
		t.Errorf("the first mount after the refusal: %q, %v", b, err)
	}
	out := mustTierfs(t, "", "check", "--config", e.config)
	if !strings.Contains(out, "in use by a tierfs daemon: "+want[len("in use by another tierfs daemon ("):len(want)-1]) {
		t.Errorf("check does not name the daemon holding the tiers:\n%s", out)
	}
}

// The mount's root and the tier directories are separate things: the
// README's chown of the mountpoint for the broker's user leaves the tier
// directories root's alone (a real user can reach its files through the
// mount, never on the tiers), and one opened up again is refused by check
// and mount with the fix.
func TestTierDirectoriesStayRoots(t *testing.T) {
	requireFUSE(t)
	u := testuser.Create(t)
	e := newEnv(t)
	// The user must reach the mountpoint (t.TempDir's are root's, 0700).
	for _, dir := range []string{e.base, filepath.Dir(e.base)} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, e.config, strings.Replace(mustRead(t, e.config), "[log]", "[mount]\nallow_other = true\n\n[log]", 1))
	d := startDaemon(t, e)
	if err := os.Chown(e.mnt, int(u.UID), int(u.GID)); err != nil {
		t.Fatal(err)
	}
	if out, err := u.Shell(e.mnt, "echo hello > mine && cat mine"); err != nil || out != "hello\n" {
		t.Fatalf("the user through the mount: %q, %v", out, err)
	}
	for _, dir := range []string{e.fast, e.slow} {
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 0 || st.Mode&0o077 != 0 {
			t.Errorf("tier directory %s after chown of the mountpoint: uid %d mode %04o", dir, st.Uid, st.Mode&0o7777)
		}
		if out, err := u.Shell("/", "ls "+dir+"/data || cat "+dir+"/data/mine"); err == nil {
			t.Errorf("the user reached %s on the tier: %q", dir, out)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(e.fast, "data"), &st); err != nil || st.Uid != u.UID {
		t.Errorf("the mount root's copy on the tier: uid %d (%v), want the chown's %d", st.Uid, err, u.UID)
	}
	d.cmd.Process.Signal(unix.SIGTERM)
	d.waitExit(t)

	if err := os.Chmod(e.slow, 0o755); err != nil {
		t.Fatal(err)
	}
	fix := "chown root: " + e.slow + " && chmod 0700 " + e.slow
	if _, errOut, code := tierfs(t, "", "check", "--config", e.config); code != 1 || !strings.Contains(errOut, fix) {
		t.Errorf("check of an opened tier: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := tierfs(t, "", "mount", "--config", e.config, e.mnt); code != 1 || !strings.Contains(errOut, fix) {
		t.Errorf("mount of an opened tier: exit %d, stderr %q", code, errOut)
	}
}

// check changes nothing on the tiers of a live mount: not a file, not a
// time.
func TestCheckWritesNothing(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	startDaemon(t, e)
	writeFile(t, filepath.Join(e.mnt, "f"), "x")
	snap := func() string {
		var b strings.Builder
		for _, dir := range []string{e.fast, e.slow} {
			filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
				var st unix.Stat_t
				if err == nil && unix.Lstat(p, &st) == nil {
					fmt.Fprintf(&b, "%s %v %v %o\n", p, st.Mtim, st.Ctim, st.Mode)
				}
				return nil
			})
		}
		return b.String()
	}
	before := snap()
	mustTierfs(t, "", "check", "--config", e.config, e.mnt)
	if after := snap(); after != before {
		t.Errorf("check changed the tiers of a live mount:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// Tiers that cannot work are refused by check and by mount: one on a
// filesystem without trusted xattrs (ramfs), and one directory given
// twice through a bind mount.
func TestUnusableTiersRefused(t *testing.T) {
	requireFUSE(t)
	e := newEnv(t)
	if err := unix.Mount("ramfs", e.slow, "ramfs", 0, "mode=0700"); err != nil {
		t.Fatalf("mount ramfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(e.slow, unix.MNT_DETACH) })
	for _, args := range [][]string{{"check", "--config", e.config}, {"mount", "--config", e.config, e.mnt}} {
		if _, errOut, code := tierfs(t, "", args...); code != 1 || !strings.Contains(errOut, "tier[1].path") || !strings.Contains(errOut, "without trusted extended attributes (ramfs)") {
			t.Errorf("%s on ramfs: exit %d, stderr %q", args[0], code, errOut)
		}
	}
	if err := unix.Unmount(e.slow, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(e.fast, e.slow, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	for _, args := range [][]string{{"check", "--config", e.config}, {"mount", "--config", e.config, e.mnt}} {
		if _, errOut, code := tierfs(t, "", args...); code != 1 || !strings.Contains(errOut, "same directory as tier[0]") {
			t.Errorf("%s with one directory twice: exit %d, stderr %q", args[0], code, errOut)
		}
	}
	if mounted(e.mnt) {
		t.Errorf("a refused configuration mounted")
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
