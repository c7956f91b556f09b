// Package testuser gives a test a real, unprivileged system user: made
// with useradd when the test starts and removed with userdel when it ends,
// so that permission checks in the kernel and in tierfs see a genuine
// stranger, not root with a changed uid.
package testuser

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// User is a system user that exists for the length of one test.
type User struct {
	Name     string
	UID, GID uint32
}

// Create adds a system user (and its own group) named tierfs-t-<random
// hex>; t.Cleanup removes both and fails the test if either is left. It
// needs root: without it the test skips, or fails under CI=true, where
// nothing may skip.
func Create(t testing.TB) *User {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "creating a user needs root")
	}
	for _, tool := range []string{"useradd", "userdel"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, tool+" is not installed: "+err.Error())
		}
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := "tierfs-t-" + hex.EncodeToString(b[:])
	out, err := exec.Command("useradd", "--system", "--no-create-home",
		"--shell", "/usr/sbin/nologin", "--user-group", name).CombinedOutput()
	if err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		// userdel refuses (status 8) while a process of the user lives: a
		// killed child may take a moment to be reaped.
		for deadline := time.Now().Add(10 * time.Second); ; {
			out, err := exec.Command("userdel", name).CombinedOutput()
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.ExitCode() == 8 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond) // a retry's pace, not a wait for an event
				continue
			}
			if err != nil {
				t.Errorf("userdel %s: %v\n%s", name, err, out)
			}
			break
		}
		if _, err := user.Lookup(name); !errors.As(err, new(user.UnknownUserError)) {
			t.Errorf("user %s is still there after userdel (%v)", name, err)
		}
		if _, err := user.LookupGroup(name); !errors.As(err, new(user.UnknownGroupError)) {
			t.Errorf("group %s is still there after userdel (%v)", name, err)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("look up the new user %s: %v", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("user %s: %v", name, err)
	}
	return &User{Name: name, UID: uint32(uid), GID: uint32(gid)}
}

// Command is exec.Command run as the user: its uid, its group and no
// supplementary groups (root's are dropped, not inherited).
func (u *User) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: []uint32{}},
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
	if os.Getenv("CI") == "true" {
		t.Fatal(why + " (CI=true: nothing may skip)")
	}
	t.Skip(why)
}
