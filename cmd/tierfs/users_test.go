package main

// Real users and groups for the tests that need a caller other than root:
// created with the system's tools, removed in Cleanup.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/testenv"
	"github.com/tierfs/tierfs/internal/testuser"
)

// inCI: under CI a missing prerequisite is a failure, not a skip.
// requireUsers checks what creating users and mounting need: root,
// /dev/fuse and the shadow tools.
func requireUsers(t *testing.T) {
	t.Helper()
	testenv.Require(t, os.Geteuid() == 0, "creating users and mounting tierfs need root; run the tests as root")
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	testenv.Require(t, err == nil, "cannot open /dev/fuse; load the fuse module or run where FUSE is available")
	f.Close()
}

// testGroup is a real group (internal/testuser).
type testGroup struct {
	name string
	gid  uint32
	g    *testuser.Group
}

func newTestGroup(t *testing.T) *testGroup {
	t.Helper()
	g := testuser.CreateGroup(t)
	return &testGroup{name: g.Name, gid: g.GID, g: g}
}

// testUser is a real system user with a group of its own, and the
// supplementary groups it was given.
type testUser struct {
	name     string
	uid, gid uint32
	groups   []uint32
}

func newTestUser(t *testing.T, groups ...*testGroup) *testUser {
	t.Helper()
	var gs []*testuser.Group
	for _, g := range groups {
		gs = append(gs, g.g)
	}
	u := testuser.Create(t, gs...)
	return &testUser{name: u.Name, uid: u.UID, gid: u.GID, groups: u.Groups}
}

// binReachable lets other users run the test binary: TestMain builds it
// in a private temporary directory.
var binReachable sync.Once

// tierfs runs the tierfs binary as u, in /, and returns its output and
// exit status.
func (u *testUser) tierfs(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	binReachable.Do(func() {
		if err := os.Chmod(filepath.Dir(tierfsBin), 0o755); err != nil {
			t.Fatal(err)
		}
	})
	var o, e bytes.Buffer
	cmd := exec.Command(tierfsBin, args...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "GORACE=" + os.Getenv("GORACE")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}}
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("tierfs %s as %s: %v", strings.Join(args, " "), u.name, err)
	}
	return o.String(), e.String(), code
}

// dialAs connects to the unix socket at sock with u's credentials, from
// this process: on a thread of its own that takes u's ids for the
// connect(2), so that the daemon's SO_PEERCRED sees u. The raw system
// calls change that thread alone (syscall.Setuid would change them all);
// the saved uid stays 0 so that the thread can become root again before
// it goes back to the scheduler, or else it ends with its goroutine.
func (u *testUser) dialAs(sock string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// This thread's own, to come back to (read before they change:
		// getgid(2) answers for the thread).
		gid := uint32(os.Getgid())
		groups, err := unix.Getgroups()
		if err != nil {
			ch <- result{err: err}
			return
		}
		var ours []uint32
		for _, g := range groups {
			ours = append(ours, uint32(g))
		}
		if err := threadCreds(u.groups, u.gid, u.uid); err != nil {
			ch <- result{err: err}
			return
		}
		c, err := net.Dial("unix", sock)
		if threadCreds(ours, gid, 0) == nil && threadIs(0, gid) {
			runtime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// threadIs reports whether the calling thread's uids are all uid and its
// gids all gid.
func threadIs(uid, gid uint32) bool {
	r, e, su := unix.Getresuid()
	rg, eg, sg := unix.Getresgid()
	return r == int(uid) && e == int(uid) && su == int(uid) && rg == int(gid) && eg == int(gid) && sg == int(gid)
}

// threadCreds sets the calling thread's groups, gid and uid (real and
// effective; the saved uid stays root's, to come back).
func threadCreds(groups []uint32, gid, uid uint32) error {
	// Root again first, when coming back: the others need it.
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 0, 0, 0); e != 0 && uid == 0 {
		return fmt.Errorf("setresuid: %w", e)
	}
	var gp uintptr
	if len(groups) > 0 {
		gp = uintptr(unsafe.Pointer(&groups[0]))
	}
	for _, call := range []struct {
		name       string
		nr, a1, a2 uintptr
		a3         uintptr
	}{
		{"setgroups", unix.SYS_SETGROUPS, uintptr(len(groups)), gp, 0},
		{"setresgid", unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)},
		{"setresuid", unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), 0},
	} {
		if _, _, e := unix.RawSyscall(call.nr, call.a1, call.a2, call.a3); e != 0 {
			return fmt.Errorf("%s: %w", call.name, e)
		}
	}
	runtime.KeepAlive(groups)
	return nil
}

// clientAs is a client of the daemon for mnt that connects as u.
func (u *testUser) clientAs(t *testing.T, mnt string) *control.Client {
	t.Helper()
	sock, err := control.SocketPath(mnt)
	if err != nil {
		t.Fatal(err)
	}
	return control.NewClientDial(mnt, sock, func(context.Context) (net.Conn, error) { return u.dialAs(sock) })
}
