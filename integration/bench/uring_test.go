package bench

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/tierfs/tierfs/integration"
	"github.com/tierfs/tierfs/integration/benchkit"
)

// The benchmarks measure tierfs over both of its FUSE transports: the
// target "tierfs" is a mount served through /dev/fuse (the default), the
// target "tierfs-uring" one served over FUSE over io_uring (`tierfs mount
// --io-uring`: one queue per CPU, each answered by daemon threads bound to
// that CPU; internal/fuseuring).

// Transports as `tierfs status --json` names them ("requests"."transport").
const (
	transportDevFuse = "/dev/fuse"
	transportURing   = "io_uring"
)

// mountTierfsURing is integration.MountTierfs with --io-uring: it turns the
// kernel's switch for FUSE over io_uring on for the test (put back after
// the unmount) and fails the test unless the mount's requests really come
// over io_uring.
func mountTierfsURing(t *testing.T, dir string, o integration.TierfsOptions) *integration.Tierfs {
	t.Helper()
	restore, err := benchkit.EnableFUSEURing()
	if err != nil {
		t.Fatalf("the tierfs-uring target: %v", err)
	}
	// Registered before the mount: runs after its unmount.
	t.Cleanup(func() {
		if err := restore(); err != nil {
			t.Errorf("%v", err)
		}
	})
	o.IOUring = true
	fs := integration.MountTierfs(t, dir, o)
	requireTransport(t, "tierfs-uring", fs, transportURing)
	return fs
}

// cliStatus is `tierfs status --json` of fs, through the command.
func cliStatus(t *testing.T, fs *integration.Tierfs) *tfStatus {
	t.Helper()
	var st tfStatus
	if err := json.Unmarshal(fs.CLI(t, "status", "--json", fs.Mnt), &st); err != nil {
		t.Fatalf("tierfs status --json %s: %v", fs.Mnt, err)
	}
	return &st
}

// requireTransport fails the test unless `tierfs status --json` says that
// the requests of the target's mount come through want; it returns that
// status.
func requireTransport(t *testing.T, target string, fs *integration.Tierfs, want string) *tfStatus {
	t.Helper()
	st := cliStatus(t, fs)
	got := st.transport()
	if got == want {
		t.Logf("%s: requests come through %s", target, describeRequests(st.Requests))
		return st
	}
	hint := ""
	switch {
	case want == transportURing:
		hint = " (asked for with --io-uring; see " + fs.Log + ")"
	case os.Getenv("TIERFS_TEST_IOURING") == "1":
		hint = " (TIERFS_TEST_IOURING=1 puts every harness mount on io_uring: unset it for the benchmarks)"
	}
	t.Fatalf("the %s target's requests come through %q, want %q%s", target, got, want, hint)
	return nil
}

// transport is the mount's FUSE transport ("" when status does not say).
func (s *tfStatus) transport() string {
	if s.Requests == nil {
		return ""
	}
	return s.Requests.Transport
}

// served is how many requests were answered over io_uring.
func (s *tfStatus) served() uint64 {
	if s.Requests == nil {
		return 0
	}
	return s.Requests.ServedIOUring
}
