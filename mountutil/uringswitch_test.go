package mountutil

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/fuseuring"
	"github.com/tierfs/tierfs/internal/testenv"
	"github.com/tierfs/tierfs/internal/units"
)

// enableURingSwitch writes Y over N, leaves Y alone, never creates the
// switch, and follows no symlink to it.
func TestEnableURingSwitchFile(t *testing.T) {
	dir := t.TempDir()
	param := filepath.Join(dir, "enable_uring")
	if err := os.WriteFile(param, []byte("N\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	was, err := enableURingSwitch(param, 0)
	if err != nil || was != "N" {
		t.Fatalf("on N: was %q, %v", was, err)
	}
	if b, _ := os.ReadFile(param); string(b) != "Y\n" {
		t.Errorf("after: %q, want \"Y\\n\"", b)
	}
	was, err = enableURingSwitch(param, 0)
	if err != nil || was != "Y" {
		t.Fatalf("on Y: was %q, %v", was, err)
	}

	missing := filepath.Join(dir, "none")
	if _, err := enableURingSwitch(missing, 0); err == nil || !strings.Contains(err.Error(), "no FUSE over io_uring") {
		t.Errorf("missing switch: %v", err)
	}
	if _, err := os.Lstat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the missing switch was created: %v", err)
	}

	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("N\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := enableURingSwitch(link, 0); err == nil {
		t.Error("a symlink to the switch was followed")
	}
	if b, _ := os.ReadFile(target); string(b) != "N\n" {
		t.Errorf("the symlink's target was written: %q", b)
	}
}

// enable_uring_switch without io_uring is refused, naming the key.
func TestEnableURingSwitchNeedsIOUring(t *testing.T) {
	c := DefaultConfig()
	c.EnableURingSwitch = true
	if err := c.Validate(); err != nil {
		t.Errorf("with io_uring: %v", err)
	}
	c.IOUring = false
	err := c.Validate()
	var ke *units.KeyError
	if !errors.As(err, &ke) || ke.Key != "mount.enable_uring_switch" {
		t.Fatalf("without io_uring: %v, want an error on mount.enable_uring_switch", err)
	}
}

// supervisor_io_uring without a supervisor, or without io_uring, is
// refused, naming the key, rather than silently doing nothing.
func TestSupervisorIOUringNeedsBoth(t *testing.T) {
	c := DefaultConfig()
	c.SupervisorIOUring = true
	if err := c.Validate(); err != nil {
		t.Errorf("with supervisor and io_uring: %v", err)
	}
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"supervisor = false", func(c *Config) { c.Supervisor = false }, "supervisor = false"},
		{"io_uring = false", func(c *Config) { c.IOUring = false }, "io_uring = false"},
	} {
		c := DefaultConfig()
		c.SupervisorIOUring = true
		tc.set(&c)
		err := c.Validate()
		var ke *units.KeyError
		if !errors.As(err, &ke) || ke.Key != "mount.supervisor_io_uring" || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error on mount.supervisor_io_uring naming %q", tc.name, err, tc.want)
		}
	}
}

// A mount with enable_uring_switch on a kernel whose switch is off turns
// it on, says so in the log, and is served over io_uring; unmounting
// leaves the switch on (another mount may rely on it).
func TestMountTurnsURingSwitchOn(t *testing.T) {
	requireFUSE(t)
	testenv.HoldURingSwitch(t)
	old, err := os.ReadFile(fuseuring.EnableParam)
	testenv.Require(t, !errors.Is(err, os.ErrNotExist), "this kernel has no FUSE over io_uring (CONFIG_FUSE_IO_URING)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(fuseuring.EnableParam, old, 0o644); err != nil {
			t.Errorf("putting the switch back to %q: %v", old, err)
		}
	})
	if err := os.WriteFile(fuseuring.EnableParam, []byte("N"), 0o644); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	mo := fuse.MountOptions{FsName: "mountutil-test", Name: "mountutil-test", MaxWrite: 1 << 20, DirectMount: true}
	rawFS := gofs.NewNodeFS(&oneFile{}, &gofs.Options{MountOptions: mo})
	c := DefaultConfig()
	c.EnableURingSwitch = true
	s, err := Mount(mp, rawFS, mo, c, zerolog.New(&logBuf))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		unix.Unmount(mp, unix.MNT_DETACH)
		t.Fatal(err)
	}
	mounted := true
	defer func() {
		if mounted {
			unix.Unmount(mp, unix.MNT_DETACH)
		}
	}()
	if !s.IOUring() {
		t.Errorf("not served over io_uring; log:\n%s", logBuf.String())
	}
	if !strings.Contains(logBuf.String(), "turned the kernel's switch for FUSE over io_uring on") {
		t.Errorf("the log does not say that the switch was turned on:\n%s", logBuf.String())
	}
	if err := s.Unmount(); err != nil {
		t.Fatal(err)
	}
	mounted = false
	if b, err := os.ReadFile(fuseuring.EnableParam); err != nil || strings.TrimSpace(string(b)) != "Y" {
		t.Errorf("the switch after the unmount: %q, %v; want Y", b, err)
	}
}
