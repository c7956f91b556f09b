// Package testuser gives a test a real, unprivileged system user: made
// with useradd when the test starts and removed with userdel when it ends,
// so that permission checks in the kernel and in tierfs see a genuine
// stranger, not root with a changed uid.
package testuser

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tierfs/tierfs/internal/testenv"
)

// User is a system user that exists for the length of one test.
type User struct {
	Name     string
	UID, GID uint32
	// Groups are the supplementary groups it was made a member of.
	Groups []uint32
}

// Group is a system group that exists for the length of one test.
type Group struct {
	Name string
	GID  uint32
}

// Create adds a system user (and its own group) named tierfs-t-<random
// hex>, a member of groups; t.Cleanup removes both and fails the test if
// either is left. It needs root: without it the test skips, or fails under
// CI=true, where nothing may skip.
func Create(t testing.TB, groups ...*Group) *User {
	t.Helper()
	require(t, "useradd", "userdel")
	name := randomName(t)
	args := []string{"--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group"}
	u := &User{Name: name}
	var names []string
	for _, g := range groups {
		names = append(names, g.Name)
		u.Groups = append(u.Groups, g.GID)
	}
	if len(names) > 0 {
		args = append(args, "--groups", strings.Join(names, ","))
	}
	if err := run("useradd", append(args, name)...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := run("userdel", name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		// userdel removes the user's own group where USERGROUPS_ENAB
		// says so; make sure.
		if _, err := user.LookupGroup(name); err == nil {
			if err := run("groupdel", name); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		if _, err := user.Lookup(name); !errors.As(err, new(user.UnknownUserError)) {
			t.Errorf("user %s is still there after userdel (%v)", name, err)
		}
	})
	pw, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("look up the new user %s: %v", name, err)
	}
	uid, err1 := strconv.ParseUint(pw.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(pw.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("user %s: %v", name, err)
	}
	u.UID, u.GID = uint32(uid), uint32(gid)
	return u
}

// CreateGroup adds a system group named tierfs-t-<random hex>, removed in
// t.Cleanup.
func CreateGroup(t testing.TB) *Group {
	t.Helper()
	require(t, "groupadd", "groupdel")
	name := randomName(t)
	if err := run("groupadd", "--system", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := run("groupdel", name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	g, err := user.LookupGroup(name)
	if err != nil {
		t.Fatal(err)
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return &Group{Name: name, GID: uint32(gid)}
}

func require(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "creating users and groups needs root")
	}
	for _, tool := range tools {
		if _, err := sbinTool(tool); err != nil {
			skipOrFail(t, tool+" is not installed (Debian package passwd)")
		}
	}
}

func randomName(t testing.TB) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return "tierfs-t-" + hex.EncodeToString(b[:])
}

// sbinTool finds a tool that may live in /usr/sbin, which a test's PATH
// need not have.
func sbinTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// accountsMu serialises this process's changes to /etc/passwd and
// /etc/group: the tools take a lock and fail while it is held.
var accountsMu sync.Mutex

// run runs an account tool, again while another process holds the
// account files' lock (the tools then fail saying so: exit 1 or 10), or
// while a process of the user being removed still lives (userdel: 8).
func run(name string, args ...string) error {
	path, err := sbinTool(name)
	if err != nil {
		return err
	}
	accountsMu.Lock()
	defer accountsMu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, err := exec.Command(path, args...).CombinedOutput()
		var ee *exec.ExitError
		retry := errors.As(err, &ee) && (bytes.Contains(out, []byte("lock")) || (name == "userdel" && ee.ExitCode() == 8))
		if retry && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // a retry's pace, not a wait for an event
			continue
		}
		if err != nil {
			return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}
}

// Command is exec.Command run as the user: its uid, its group and its
// supplementary groups only (root's are dropped, not inherited).
func (u *User) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: append([]uint32{}, u.Groups...)},
	}
	return cmd
}

// Shell runs script with sh -c as the user in dir and returns its
// combined output.
func (u *User) Shell(dir, script string) (string, error) {
	cmd := u.Command("sh", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func skipOrFail(t testing.TB, why string) {
	t.Helper()
	testenv.Require(t, false, why)
}
