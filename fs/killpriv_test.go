package fs

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
)

// TestKillSuidgid: a write, truncate or O_TRUNC open by a caller without
// CAP_FSETID clears set-user-ID (and set-group-ID with group execute) and
// security.capability, as on a local filesystem; root keeps them. With
// FUSE_HANDLE_KILLPRIV_V2 (killprivFS) this is the daemon's job, no longer
// the kernel's.
func TestKillSuidgid(t *testing.T) {
	m := mount(t, mountOpt{allowOther: true})
	// Let uid 65534 reach the mountpoint.
	base := filepath.Dir(m.mnt)
	mustOK(t, os.Chmod(base, 0o755), "chmod")
	mustOK(t, os.Chmod(filepath.Dir(base), 0o755), "chmod")
	mk := func(name string, mode os.FileMode) string {
		p := m.path(name)
		mustOK(t, os.WriteFile(p, []byte("0123456789"), 0o644), "create "+name)
		mustOK(t, os.Chmod(p, mode), "chmod "+name)
		return p
	}
	nobody := func(script string) {
		t.Helper()
		cmd := exec.Command("sh", "-c", script)
		cmd.Dir = m.mnt
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("as nobody: %s: %v\n%s", script, err, out)
		}
	}
	modeOf := func(p string) os.FileMode {
		t.Helper()
		var st unix.Stat_t
		mustOK(t, unix.Stat(p, &st), "stat")
		return os.FileMode(st.Mode & 0o7777)
	}
	cases := []struct {
		name   string
		mode   os.FileMode // as chmod(2) takes it: 0o6777
		script string
		want   os.FileMode
	}{
		{"write", 0o6777, "printf x >> write", 0o777},
		{"write-sgid-noexec", 0o2666, "printf x >> write-sgid-noexec", 0o2666},
		{"truncate", 0o6777, "truncate -s 3 truncate", 0o777},
		{"otrunc", 0o6777, ": > otrunc", 0o777},
		{"root", 0o6777, "", 0o6777},
	}
	for _, c := range cases {
		p := m.path(c.name)
		mustOK(t, os.WriteFile(p, []byte("0123456789"), 0o644), "create")
		mustOK(t, unix.Chmod(p, uint32(c.mode)), "chmod")
		if c.script != "" {
			nobody(c.script)
		} else {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			mustOK(t, err, "open")
			_, err = f.Write([]byte("x"))
			mustOK(t, err, "write")
			mustOK(t, f.Close(), "close")
		}
		if got := modeOf(p); got != c.want {
			t.Errorf("%s: mode %o after, want %o", c.name, got, c.want)
		}
	}

	// security.capability goes with any write by anyone but is kept
	// until then.
	p := mk("caps", 0o777)
	cap := make([]byte, 20) // vfs_cap_data v2: magic|flags, permitted, inheritable (lo, hi)
	binary.LittleEndian.PutUint32(cap[0:], 0x02000000)
	binary.LittleEndian.PutUint32(cap[4:], 1<<unix.CAP_NET_BIND_SERVICE)
	err := unix.Setxattr(p, "security.capability", cap, 0)
	testenv.Require(t, err == nil, fmt.Sprintf("security.capability cannot be set here: %v", err))
	if _, err := unix.Getxattr(p, "security.capability", make([]byte, 64)); err != nil {
		t.Fatalf("security.capability after setting it: %v", err)
	}
	nobody("printf x >> caps")
	if _, err := unix.Getxattr(p, "security.capability", make([]byte, 64)); err != unix.ENODATA {
		t.Errorf("security.capability after a write: %v, want ENODATA", err)
	}
}
