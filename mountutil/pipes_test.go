package mountutil

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// raisePipeMax raises the sysctl to what a reader's pipe needs and never
// lowers it (a file stands in for /proc/sys/fs/pipe-max-size).
func TestRaisePipeMax(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pipe-max-size")
	for _, c := range []struct {
		held, need int
		raised     bool
		after      string
	}{
		{1048576, 1187840, true, "1187840"},
		{4194304, 1187840, false, "4194304\n"},
		{1187840, 1187840, false, "1187840\n"},
	} {
		if err := os.WriteFile(p, []byte(strconv.Itoa(c.held)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		was, raised, err := raisePipeMax(p, c.need)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		if was != c.held || raised != c.raised || string(b)[:len(c.after)] != c.after {
			t.Errorf("held %d, need %d: was %d, raised %v, now %q; want %d, %v, %q", c.held, c.need, was, raised, b, c.held, c.raised, c.after)
		}
	}
	if err := os.WriteFile(p, []byte("junk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, raised, err := raisePipeMax(p, 1<<21); err == nil || raised {
		t.Errorf("an unreadable value: raised %v, err %v; want an error and nothing written", raised, err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(p, link); err != nil {
		t.Fatal(err)
	}
	if _, _, err := raisePipeMax(link, 1<<21); err == nil {
		t.Errorf("raisePipeMax followed a symlink")
	}
}
