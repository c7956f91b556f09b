package tiering

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// An attribute (or the list of names) that grows between asking its size
// and reading it is read again, not dropped and not an error: a move of a
// file whose attributes change meanwhile once failed with ERANGE
// (TestStressUsageOnTmpfs).
func TestReadXattrGrowingBetweenCalls(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(path, "user.a", []byte("short"), 0); err != nil {
		t.Fatalf("user xattrs on the test directory: %v", err)
	}
	grown := false
	got, err := readXattr(func(b []byte) (int, error) {
		if b != nil && !grown {
			// Between the size and the read, someone sets a longer value.
			grown = true
			if err := unix.Setxattr(path, "user.a", []byte("a much longer value"), 0); err != nil {
				t.Fatal(err)
			}
		}
		return unix.Getxattr(path, "user.a", b)
	})
	if err != nil || string(got) != "a much longer value" {
		t.Fatalf("readXattr: %q, %v; want the grown value", got, err)
	}

	// One that keeps growing is an error in the end, not a loop.
	n := 0
	_, err = readXattr(func(b []byte) (int, error) {
		n++
		if b == nil {
			return 4, nil
		}
		return 0, unix.ERANGE
	})
	if !errors.Is(err, unix.ERANGE) || n > 20 {
		t.Fatalf("an attribute that always grows: %v after %d calls; want ERANGE after a few", err, n)
	}
}
