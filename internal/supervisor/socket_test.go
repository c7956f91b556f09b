package supervisor_test

import (
	"strings"
	"testing"

	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/supervisor"
)

// The supervisor's socket sits beside the daemon's control socket, named
// by the same hash of the mountpoint.
func TestSocketPathBesideControl(t *testing.T) {
	for _, mp := range []string{"/mnt/kafka", "/mnt//kafka/", "/mnt/x/../kafka"} {
		c, err := control.SocketPath(mp)
		if err != nil {
			t.Fatal(err)
		}
		s, err := supervisor.SocketPath(mp)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimSuffix(c, ".sock") + ".supervisor.sock"; s != want {
			t.Errorf("SocketPath(%q) = %q, want %q", mp, s, want)
		}
	}
}
