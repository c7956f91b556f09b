package fs

import (
	"fmt"
	"os"
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
	for name, want := range map[string]int{"max_background": maxBackground, "congestion_threshold": maxBackground * 3 / 4} {
		p := fmt.Sprintf("/sys/fs/fuse/connections/%d/%s", unix.Minor(st.Dev), name)
		b, err := os.ReadFile(p)
		mustOK(t, err, "read "+p)
		if got := strings.TrimSpace(string(b)); got != fmt.Sprint(want) {
			t.Errorf("%s = %s, want %d", p, got, want)
		}
	}
}
