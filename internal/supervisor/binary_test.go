package supervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
)

// openBinary takes a root-owned executable that no one else can write,
// reached through root's directories without a symlink, and refuses
// every other case, saying which name is wrong; what it returns is the
// file that was checked.
func TestOpenBinaryChecks(t *testing.T) {
	testenv.Root(t, "chown and root-owned files")
	dir := t.TempDir() // root's, 0700, under /tmp (sticky)
	good := filepath.Join(dir, "tierfs")
	if err := os.WriteFile(good, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := openBinary(good)
	if err != nil {
		t.Fatalf("openBinary(%s): %v", good, err)
	}
	var a, want unix.Stat_t
	if unix.Fstat(int(b.f.Fd()), &a) != nil || unix.Stat(good, &want) != nil || a.Ino != want.Ino {
		t.Fatalf("openBinary returned another file than %s", good)
	}
	b.close()

	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	linkDir := filepath.Join(dir, "linkdir")
	if err := os.Symlink(dir, linkDir); err != nil {
		t.Fatal(err)
	}
	other := mk("other", 0o755)
	if err := os.Chown(other, 65534, 0); err != nil {
		t.Fatal(err)
	}
	openDir := filepath.Join(dir, "open")
	if err := os.Mkdir(openDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(openDir, 0o777); err != nil {
		t.Fatal(err)
	}
	inOpen := filepath.Join(openDir, "tierfs")
	if err := os.WriteFile(inOpen, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	userDir := filepath.Join(dir, "user")
	if err := os.Mkdir(userDir, 0o755); err != nil {
		t.Fatal(err)
	}
	inUser := filepath.Join(userDir, "tierfs")
	if err := os.WriteFile(inUser, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(userDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{"tierfs", "not an absolute path"},
		{link, link + " is a symbolic link"},
		{filepath.Join(linkDir, "tierfs"), linkDir + " is a symbolic link"},
		{mk("gw", 0o775), "writable by others"},
		{mk("ow", 0o757), "writable by others"},
		{mk("noexec", 0o644), "not executable"},
		{other, "owned by uid 65534, not root"},
		{inOpen, openDir + ": writable by others"},
		{inUser, userDir + ": owned by uid 65534"},
		{dir, "not a regular file"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		b, err := openBinary(c.path)
		if err == nil {
			b.close()
			t.Errorf("openBinary(%s) accepted it", c.path)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("openBinary(%s): %v, want it to say %q", c.path, err, c.want)
		}
	}
}
