package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The mount's read-ahead is what the daemon set (Options.ReadAheadKB),
// not the kernel's 128 KiB: sequential readers get 1 MiB requests.
func TestReadAheadSet(t *testing.T) {
	m := mount(t, mountOpt{})
	var st unix.Stat_t
	mustOK(t, unix.Stat(m.mnt, &st), "stat mountpoint")
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	b, err := os.ReadFile(p)
	mustOK(t, err, "read "+p)
	if got := strings.TrimSpace(string(b)); got != fmt.Sprint(testReadAheadKB) {
		t.Fatalf("%s = %s, want %d", p, got, testReadAheadKB)
	}
}

// The mount lets maxBackground asynchronous requests (read-ahead) be in
// flight, not the kernel's 12: the FUSE connection's max_background and
// congestion_threshold (three quarters of it) say so.
func TestMaxBackgroundSet(t *testing.T) {
	m := mount(t, mountOpt{})
	var st unix.Stat_t
	mustOK(t, unix.Stat(m.mnt, &st), "stat mountpoint")
	conn := fuseConnDir(t, unix.Minor(st.Dev))
	for name, want := range map[string]int{"max_background": maxBackground, "congestion_threshold": maxBackground * 3 / 4} {
		p := filepath.Join(conn, name)
		b, err := os.ReadFile(p)
		mustOK(t, err, "read "+p)
		if got := strings.TrimSpace(string(b)); got != fmt.Sprint(want) {
			t.Errorf("%s = %s, want %d", p, got, want)
		}
	}
}

// fuseConnDir is the fusectl directory of FUSE connection minor. Where
// fusectl is not mounted (a fresh machine may not have it), it mounts it
// for the test and unmounts it after.
func fuseConnDir(t *testing.T, minor uint32) string {
	t.Helper()
	const conns = "/sys/fs/fuse/connections"
	dir := filepath.Join(conns, fmt.Sprint(minor))
	if _, err := os.Stat(dir); err == nil {
		return dir
	}
	if err := unix.Mount("fusectl", conns, "fusectl", 0, ""); err != nil {
		t.Fatalf("%s is not there, and mounting fusectl on %s failed: %v", dir, conns, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(conns, 0); err != nil {
			t.Errorf("unmounting the fusectl this test mounted on %s: %v", conns, err)
		}
	})
	return dir
}
