package mountutil

import (
	"os"
	"strings"
	"testing"
)

// A kernel's release is compared by its major and minor numbers, and one
// that does not parse counts as too old (the mount is then served
// without a supervisor, as before).
func TestKernelAtLeast(t *testing.T) {
	for _, c := range []struct {
		release string
		want    bool
	}{
		{"6.9.0", true}, {"6.9", true}, {"6.18.44-fc-v1272", true}, {"7.0.1", true},
		{"6.8.12-generic", false}, {"5.15.0-91-generic", false}, {"6", false}, {"", false}, {"linux", false},
	} {
		if got := kernelAtLeast(c.release, 6, 9); got != c.want {
			t.Errorf("kernelAtLeast(%q, 6, 9) = %v, want %v", c.release, got, c.want)
		}
	}
}

// Supervision is the default; opting out is a reason to go without,
// said; io_uring is not (the supervised mount serves /dev/fuse).
func TestSupervisionOff(t *testing.T) {
	c := DefaultConfig()
	if !c.Supervisor {
		t.Fatal("[mount] supervisor is not on by default")
	}
	c.Supervisor = false
	if why := SupervisionOff(c); why != "[mount] supervisor = false" {
		t.Errorf("opted out: %q", why)
	}
	c.Supervisor = true // io_uring = true, the default, too
	why := SupervisionOff(c)
	if os.Geteuid() != 0 {
		if !strings.Contains(why, "not root") {
			t.Errorf("not root: %q", why)
		}
		return
	}
	if why != "" && !strings.Contains(why, "FUSE_NOTIFY_RESEND") {
		t.Errorf("root: %q, want supervised or a kernel too old", why)
	}
}
