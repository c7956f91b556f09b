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

// The benchmarks judge tierfs on the defaults an operator gets: the
// target "tierfs" has examples/tierfs.toml's [mount] table as it ships,
// so it is supervised ([mount] supervisor, default true) and served
// through /dev/fuse (a supervised mount uses io_uring only with
// supervisor_io_uring: a daemon's kill -9 over io_uring can fail calls in
// flight). FUSE over io_uring is an opt-in row of its own: unsupervised,
// with the daemon turning the kernel's switch on (enable_uring_switch).

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

// uringSwitchOff holds the kernel's FUSE-over-io_uring switch for t
// (testenv.HoldURingSwitch: no other test flips it meanwhile) and turns
// it off, as a stock kernel has it, so that the io_uring opt-in's daemon
// must turn it on itself ([mount] enable_uring_switch); the old value is
// put back after the unmounts. It returns the transport that opt-in then
// gets: io_uring, or /dev/fuse on a kernel without it.
func uringSwitchOff(t *testing.T) string {
	t.Helper()
	testenv.HoldURingSwitch(t)
	old, err := os.ReadFile(benchkit.URingParam)
	if errors.Is(err, os.ErrNotExist) {
		t.Logf("%s: no FUSE over io_uring in this kernel; the io_uring opt-in is served through /dev/fuse", benchkit.URingParam)
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

// The [mount] keys of the opt-in rows, appended to examples/tierfs.toml's
// (which sets none of them).
const (
	// mountUnsupervised: no supervisor, requests through /dev/fuse
	// whatever the switch says (the defaults before supervision).
	mountUnsupervised = "supervisor = false\nio_uring = false\n"
	// mountURingSwitch: no supervisor, and the daemon turns the
	// kernel's io_uring switch on itself.
	mountURingSwitch = "supervisor = false\nenable_uring_switch = true\n"
)

// mountTierfsDefaults is integration.MountTierfs with the [mount] table of
// examples/tierfs.toml (plus extraMount's keys) and no transport flag: the
// mount an operator gets. It fails the test unless the requests come
// through want and the mount is supervised or not as supervised says.
func mountTierfsDefaults(t *testing.T, target, dir string, o integration.TierfsOptions, extraMount, want string, supervised bool) *integration.Tierfs {
	t.Helper()
	o.Extra += "\n[mount]\n" + strings.TrimPrefix(exampleMount(t), "[mount]\n") + extraMount
	o.ConfigTransport = true
	fs := integration.MountTierfs(t, dir, o)
	requireSupervision(t, target, requireTransport(t, target, fs, want), supervised)
	return fs
}

// requireSupervision fails the test unless st (`tierfs status --json`)
// says that the target's mount is supervised (its supervisor section)
// or, with want false, that it is not; it returns st.
func requireSupervision(t *testing.T, target string, st *tfStatus, want bool) *tfStatus {
	t.Helper()
	switch got := st.Supervisor != nil; {
	case got && !want:
		t.Fatalf("the %s target is supervised (generation %d), want no supervisor", target, st.Supervisor.Generation)
	case !got && want:
		t.Fatalf("the %s target has no supervisor (`tierfs status --json` has no supervisor section), want a supervised mount, [mount] supervisor's default: root and Linux 6.9+ (see its log)", target)
	case got:
		t.Logf("%s: supervised, daemon generation %d, %d takeovers", target, st.Supervisor.Generation, st.Supervisor.Takeovers)
	}
	return st
}

// requireNoTakeover fails the test unless the supervised mount's first
// daemon served throughout (no takeover: the figures are one daemon's).
func requireNoTakeover(t *testing.T, target string, st *tfStatus) {
	t.Helper()
	if s := st.Supervisor; s == nil || s.Generation != 1 || s.Takeovers != 0 {
		t.Errorf("the %s target: supervisor %+v, want generation 1 and no takeover during the runs", target, s)
	}
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
