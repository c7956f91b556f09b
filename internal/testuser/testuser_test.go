package testuser

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCreate: the user exists while the test runs, its commands run with
// its ids and no supplementary groups, it cannot read root's 0600 file, and
// it and its group are gone afterwards.
func TestCreate(t *testing.T) {
	var name string
	t.Run("user", func(t *testing.T) {
		u := Create(t)
		name = u.Name
		if _, err := user.Lookup(u.Name); err != nil {
			t.Fatalf("user %s not found while the test runs: %v", u.Name, err)
		}
		out, err := u.Shell("/", "id -u; id -g; id -G")
		if err != nil {
			t.Fatalf("id as %s: %v\n%s", u.Name, err, out)
		}
		want := strconv.Itoa(int(u.UID)) + "\n" + strconv.Itoa(int(u.GID)) + "\n" + strconv.Itoa(int(u.GID)) + "\n"
		if out != want {
			t.Errorf("id as %s printed %q, want %q", u.Name, out, want)
		}
		secret := filepath.Join(t.TempDir(), "secret")
		if err := os.WriteFile(secret, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		// Only the file's own mode keeps the user out.
		for d := filepath.Dir(secret); d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		out, err = u.Shell("/", "cat "+secret)
		if err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("%s read root's 0600 file: %v %q", u.Name, err, out)
		}
	})
	if name == "" {
		return // skipped
	}
	// The subtest's cleanup has run: the user and its group are gone.
	if _, err := user.Lookup(name); err == nil {
		t.Errorf("user %s left behind", name)
	}
	if _, err := user.LookupGroup(name); err == nil {
		t.Errorf("group %s left behind", name)
	}
}
