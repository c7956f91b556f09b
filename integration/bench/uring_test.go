package bench

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierfs/tierfs/integration"
	"github.com/tierfs/tierfs/integration/benchkit"
	"github.com/tierfs/tierfs/internal/testenv"
)

// The benchmarks measure tierfs over both of its FUSE transports: the
// target "tierfs" has the defaults of examples/tierfs.toml, served over
// FUSE over io_uring (one queue per CPU, each answered by daemon threads
// bound to that CPU; internal/fuseuring) once its daemon has turned the
// kernel's switch on ([mount] enable_uring_switch), the target
// "tierfs-devfuse" the same through /dev/fuse (--io-uring=false).

// Transports as `tierfs status --json` names them ("requests"."transport").
const (
	transportDevFuse = "/dev/fuse"
	transportURing   = "io_uring"
)

// exampleMount is the [mount] table of examples/tierfs.toml, the file an
// operator starts from (the package installs it as
// /etc/tierfs/tierfs.toml), without its comments: the benchmarks'
// defaults are its keys, not the code's.
func exampleMount(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(integration.RepoRoot(t), "examples", "tierfs.toml"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "["):
			in = l == "[mount]"
		case !in || l == "" || strings.HasPrefix(l, "#"):
			continue
		}
		if in {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		t.Fatal("examples/tierfs.toml has no [mount] table")
	}
	return strings.Join(out, "\n") + "\n"
}

// defaultsSwitch holds the kernel's FUSE-over-io_uring switch for t
// (testenv.HoldURingSwitch: no other test flips it meanwhile) and turns
// it off, as a stock kernel has it, so that the defaults' daemon must
// turn it on itself ([mount] enable_uring_switch in examples/tierfs.toml);
// the old value is put back after the unmounts. It returns the transport
// the defaults then get: io_uring, or /dev/fuse on a kernel without it.
func defaultsSwitch(t *testing.T) string {
	t.Helper()
	testenv.HoldURingSwitch(t)
	old, err := os.ReadFile(benchkit.URingParam)
	if errors.Is(err, os.ErrNotExist) {
		t.Logf("%s: no FUSE over io_uring in this kernel; the defaults are served through /dev/fuse", benchkit.URingParam)
		return transportDevFuse
	}
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the mounts: runs after their unmounts.
	t.Cleanup(func() {
		if err := os.WriteFile(benchkit.URingParam, old, 0o644); err != nil {
			t.Errorf("putting %s back to %q: %v", benchkit.URingParam, strings.TrimSpace(string(old)), err)
		}
	})
	if err := os.WriteFile(benchkit.URingParam, []byte("N\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return transportURing
}

// mountTierfsDefaults is integration.MountTierfs with the [mount] table of
// examples/tierfs.toml (plus extraMount's keys) and no transport flag: the
// mount an operator gets. It fails the test unless the requests come
// through want (defaultsSwitch's answer).
func mountTierfsDefaults(t *testing.T, target, dir string, o integration.TierfsOptions, extraMount, want string) *integration.Tierfs {
	t.Helper()
	o.Extra += "\n[mount]\n" + strings.TrimPrefix(exampleMount(t), "[mount]\n") + extraMount
	o.ConfigTransport = true
	fs := integration.MountTierfs(t, dir, o)
	requireTransport(t, target, fs, want)
	return fs
}

// switchTurnedOn says whether the daemon's log says that it turned the
// kernel's io_uring switch on itself.
func switchTurnedOn(fs *integration.Tierfs) bool {
	b, _ := os.ReadFile(fs.Log)
	return strings.Contains(string(b), "turned the kernel's switch for FUSE over io_uring on")
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
		hint = " (see " + fs.Log + ")"
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
