package integration

// The tierfs side of the harness: building the binary, mounting two
// tiers (a private tmpfs and a plain directory), the client commands.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/supervisor"
	"github.com/tierfs/tierfs/mountutil"
)

var (
	buildMu  sync.Mutex
	builtBin = map[bool]string{} // race → binary, built once per test binary
	// builtStamped: TierfsBinaryStamped's, by version and race.
	builtStamped = map[string]string{}
	buildDir     string
	buildDirMu   sync.Once
)

// TierfsBinary builds ./cmd/tierfs once per test process (TIERFS_BIN
// overrides) and returns its path.
func TierfsBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("TIERFS_BIN"); b != "" {
		// Relative to the repository root (go test runs in integration/).
		if !filepath.IsAbs(b) {
			b = filepath.Join(RepoRoot(t), b)
		}
		if _, err := os.Stat(b); err != nil {
			fatalf(t, "TIERFS_BIN: %v", err)
		}
		return b
	}
	race := buildRace()
	buildMu.Lock()
	defer buildMu.Unlock()
	if b, ok := builtBin[race]; ok {
		return b
	}
	var derr error
	buildDirMu.Do(func() { buildDir, derr = os.MkdirTemp("", "tierfs-kafka-bin-") })
	if derr != nil {
		fatalf(t, "%v", derr)
	}
	out := filepath.Join(buildDir, "tierfs")
	args := []string{"build", "-o", out}
	if race {
		out += "-race"
		args = []string{"build", "-race", "-o", out}
	}
	args = append(args, "./cmd/tierfs")
	goBuild(t, out, args)
	builtBin[race] = out
	return out
}

// TierfsBinaryStamped builds ./cmd/tierfs once per test process and
// version, stamped with version v (the Makefile's -ldflags; -buildvcs=false
// so that the stamp is what `tierfs version` and status show): another
// build than TierfsBinary's, as an upgrade brings. It lies beside
// TierfsBinary's, in a directory of root's that no one else can write
// (what `tierfs restart --binary` asks of a binary).
func TierfsBinaryStamped(t *testing.T, v string) string {
	t.Helper()
	race := buildRace()
	buildMu.Lock()
	defer buildMu.Unlock()
	key := fmt.Sprintf("%s race=%v", v, race)
	if b, ok := builtStamped[key]; ok {
		return b
	}
	var derr error
	buildDirMu.Do(func() { buildDir, derr = os.MkdirTemp("", "tierfs-kafka-bin-") })
	if derr != nil {
		fatalf(t, "%v", derr)
	}
	out := filepath.Join(buildDir, "tierfs-"+v)
	args := []string{"build", "-buildvcs=false", "-ldflags", "-X github.com/tierfs/tierfs/internal/version.version=" + v}
	if race {
		out += "-race"
		args = append(args, "-race")
	}
	args = append(args, "-o", out, "./cmd/tierfs")
	goBuild(t, out, args)
	builtStamped[key] = out
	return out
}

// goBuild runs go (or $GO) with args in the repository, building out.
func goBuild(t *testing.T, out string, args []string) {
	t.Helper()
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	cmd := exec.Command(goCmd, args...)
	cmd.Dir = RepoRoot(t)
	start := time.Now()
	if b, err := cmd.CombinedOutput(); err != nil {
		fatalf(t, "go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	t.Logf("built %s in %v", out, time.Since(start).Round(time.Millisecond))
}

// buildRace says whether the binaries the tests build have the race
// detector: as the tests do, unless TIERFS_KAFKA_RACE says.
func buildRace() bool {
	switch os.Getenv("TIERFS_KAFKA_RACE") {
	case "1":
		return true
	case "0":
		return false
	}
	return raceDetector
}

// CleanupBuilds removes the binaries TierfsBinary built; call it from
// TestMain after m.Run.
func CleanupBuilds() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// TierfsOptions shapes a two-tier mount.
type TierfsOptions struct {
	FastSize     string // tmpfs size= of the fast tier; default "256m"
	FastType     string // default "nvme"
	FastCapacity string // [[tier]] capacity of fast; default: the tmpfs size
	SlowType     string // default "hdd"
	// SlowDir, if set, is the slow tier's backing directory (an HDD's
	// mount, say) instead of <dir>/slow.
	SlowDir string
	// FastDir, if set, is the fast tier's backing directory (an
	// operator's own device, make bench BENCH_FAST_DIR) instead of a
	// tmpfs on <dir>/fast; FastSize is then unused.
	FastDir string
	// Extra is appended to the configuration (e.g. a [policy] table).
	Extra string
	// LogLevel of the daemon; default "info".
	LogLevel string
	// IOUring mounts with --io-uring (FUSE over io_uring); so does every
	// mount when TIERFS_TEST_IOURING=1. Otherwise --io-uring=false: the
	// mount is served through /dev/fuse whatever the kernel allows.
	IOUring bool
	// ConfigTransport passes neither --io-uring nor --io-uring=false: the
	// [mount] table in Extra decides, as for an operator (the benchmarks'
	// defaults). TIERFS_TEST_IOURING=1 still means --io-uring.
	ConfigTransport bool
	// DirectIO mounts with --direct-io (files opened for direct I/O); so
	// does every mount when TIERFS_TEST_DIRECTIO=1.
	DirectIO bool
}

// Tierfs is a mounted tierfs with a tmpfs fast tier and a plain-directory
// slow tier.
type Tierfs struct {
	Bin  string
	Mnt  string // the mountpoint
	Fast string // the fast tier's directory (a tmpfs)
	Slow string // the slow tier's directory
	// FastData and SlowData are each tier's copy of the mount's root
	// (<tier>/data), where the backing files are.
	FastData, SlowData string
	Config             string
	Log                string // the daemon's stderr

	dir    string
	opts   TierfsOptions
	p      *proc
	starts int
}

// MountTierfs mounts a two-tier tierfs under dir and unmounts it (and the
// tmpfs) in t.Cleanup.
func MountTierfs(t *testing.T, dir string, o TierfsOptions) *Tierfs {
	t.Helper()
	if o.FastSize == "" {
		o.FastSize = "256m"
	}
	if o.FastType == "" {
		o.FastType = "nvme"
	}
	if o.SlowType == "" {
		o.SlowType = "hdd"
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	fs := &Tierfs{
		Bin:    TierfsBinary(t),
		Mnt:    filepath.Join(dir, "mnt"),
		Fast:   filepath.Join(dir, "fast"),
		Slow:   filepath.Join(dir, "slow"),
		Config: filepath.Join(dir, "tierfs.toml"),
		dir:    dir,
		opts:   o,
	}
	if o.SlowDir != "" {
		fs.Slow = o.SlowDir
	}
	if o.FastDir != "" {
		fs.Fast = o.FastDir
	}
	fs.FastData, fs.SlowData = filepath.Join(fs.Fast, "data"), filepath.Join(fs.Slow, "data")
	for _, d := range []string{fs.Mnt, fs.Fast, fs.Slow} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			fatalf(t, "%v", err)
		}
	}

	// The fast tier: a private tmpfs, unless given.
	if o.FastDir == "" {
		MountTmpfs(t, fs.Fast, o.FastSize)
	}
	fs.writeConfig(t)
	// Registered before the daemon starts: runs after the broker's
	// cleanups, before the tmpfs's.
	t.Cleanup(func() { fs.cleanup(t) })
	fs.Start(t)
	return fs
}

// MountTmpfs mounts a private tmpfs of the given size (tmpfs's size=)
// on dir, which must exist, and unmounts it in t.Cleanup.
func MountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := unix.Mount("tierfs-fast", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV,
		"size="+size+",mode=0755"); err != nil {
		fatalf(t, "mount -t tmpfs -o size=%s tierfs-fast %s: %v", size, dir, err)
	}
	t.Cleanup(func() { unmountTmpfs(t, dir) })
}

// writeConfig writes the configuration file from fs.opts.
func (fs *Tierfs) writeConfig(t *testing.T) {
	t.Helper()
	o := fs.opts
	capacity := ""
	if o.FastCapacity != "" {
		capacity = fmt.Sprintf("capacity = %q\n", o.FastCapacity)
	}
	conf := fmt.Sprintf(`# written by the integration harness
[[tier]]
name = "fast"
type = %q
path = %q
%s
[[tier]]
name = "slow"
type = %q
path = %q

[log]
level = %q
%s`, o.FastType, fs.Fast, capacity, o.SlowType, fs.Slow, o.LogLevel, o.Extra)
	if !strings.Contains(o.Extra, "[metrics]") {
		// Several daemons run at once: each its own port.
		conf += "\n[metrics]\nlisten = \"127.0.0.1:0\"\n"
	}
	if err := os.WriteFile(fs.Config, []byte(conf), 0o644); err != nil {
		fatalf(t, "%v", err)
	}
}

// Reconfigure rewrites the configuration file with extra in place of
// TierfsOptions.Extra (the [policy] table, say) and has the running
// daemon apply it (`tierfs reload`).
func (fs *Tierfs) Reconfigure(t *testing.T, extra string) {
	t.Helper()
	fs.opts.Extra = extra
	fs.writeConfig(t)
	out := fs.CLI(t, "reload", fs.Mnt)
	t.Logf("tierfs reload: %s", strings.TrimSpace(string(out)))
}

// Start runs `tierfs mount` and waits until the mount is listed in
// /proc/self/mountinfo and the control socket answers.
func (fs *Tierfs) Start(t *testing.T) {
	t.Helper()
	if fs.p != nil && !fs.p.exited() {
		fatalf(t, "tierfs is already running")
	}
	fs.starts++
	fs.Log = filepath.Join(fs.dir, fmt.Sprintf("tierfs-%d.log", fs.starts))
	logf, err := os.Create(fs.Log)
	if err != nil {
		fatalf(t, "%v", err)
	}
	defer logf.Close()
	args := []string{"mount", "--config", fs.Config}
	directIO := fs.opts.DirectIO || os.Getenv("TIERFS_TEST_DIRECTIO") == "1"
	if fs.opts.IOUring || os.Getenv("TIERFS_TEST_IOURING") == "1" {
		args = append(args, "--io-uring")
	} else if !fs.opts.ConfigTransport {
		// The default is io_uring where the kernel allows it: say
		// which transport the test measures.
		args = append(args, "--io-uring=false")
	}
	if directIO {
		args = append(args, "--direct-io")
	}
	cmd := exec.Command(fs.Bin, append(args, fs.Mnt)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A race build sleeps a second at exit by default: a daemon drained
	// by `tierfs restart` would hold the mount that long before its
	// successor may start (it holds the tiers until it is gone).
	cmd.Env = append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	// SIGTERM on our death: tierfs unmounts itself.
	if fs.p, err = startProc("tierfs", cmd, syscall.SIGTERM); err != nil {
		fatalf(t, "%v", err)
	}
	err = waitFor(mountTimeout, "the tierfs mount on "+fs.Mnt, func() (bool, error) {
		if fs.p.exited() {
			return false, fmt.Errorf("tierfs exited (%v)", fs.p.err)
		}
		ok, typ := isMounted(fs.Mnt)
		if ok && typ != mountutil.TierfsFSType {
			return false, fmt.Errorf("%s is mounted with type %q, want %q", fs.Mnt, typ, mountutil.TierfsFSType)
		}
		return ok, nil
	})
	if err == nil {
		// The control socket comes up just after the mount.
		err = waitFor(mountTimeout, "tierfs status", func() (bool, error) {
			if fs.p.exited() {
				return false, fmt.Errorf("tierfs exited (%v)", fs.p.err)
			}
			return exec.Command(fs.Bin, "status", "--json", fs.Mnt).Run() == nil, nil
		})
	}
	if err != nil {
		fatalf(t, "%v\n--- %s:\n%s", err, fs.Log, tail(fs.Log, 40))
	}
	if directIO {
		// A kernel without FUSE_DIRECT_IO_ALLOW_MMAP keeps the page
		// cache: the test would not be testing what it says.
		if dp := fs.Status(t).Requests.DataPath; dp != "direct I/O" {
			fatalf(t, "tierfs mount --direct-io: data path %q, want \"direct I/O\"\n--- %s:\n%s", dp, fs.Log, tail(fs.Log, 40))
		}
	}
	t.Logf("tierfs mounted on %s (pid %d)", fs.Mnt, fs.p.cmd.Process.Pid)
}

// Stop sends SIGTERM (tierfs unmounts itself and exits), waits, and fails
// the test if tierfs had to be killed, exited non-zero, or left the mount.
func (fs *Tierfs) Stop(t *testing.T) {
	t.Helper()
	if fs.p == nil || fs.p.exited() {
		return
	}
	if !fs.p.stop(syscall.SIGTERM, tierfsStopTimeout) {
		errorf(t, "tierfs did not exit within %v of SIGTERM; killed it", tierfsStopTimeout)
	} else if code := fs.p.exitCode(); code != 0 {
		errorf(t, "tierfs exited with status %d\n--- %s:\n%s", code, fs.Log, tail(fs.Log, 30))
	}
	if ok, _ := isMounted(fs.Mnt); ok {
		errorf(t, "%s is still mounted after tierfs exited; unmounting it", fs.Mnt)
		if err := mountutil.Unmount(fs.Mnt); err != nil {
			errorf(t, "%v", err)
		}
	}
}

// Pid is the process id of the daemon that serves the mount (0 before
// the first start): the process started, or, under a supervisor ([mount]
// supervisor, the default as root), the child it runs now; the CPU a
// benchmark charges to the daemon is that one's.
func (fs *Tierfs) Pid() int {
	if fs.p == nil {
		return 0
	}
	if st, err := supervisor.Query(fs.Mnt); err == nil && st.Pid != 0 {
		return st.Pid
	}
	return fs.p.cmd.Process.Pid
}

// Running reports whether the daemon is alive.
func (fs *Tierfs) Running() bool { return fs.p != nil && !fs.p.exited() }

// Kill ends tierfs mount with SIGKILL, as a crash would, and waits for
// it: the daemon, or the supervisor and with it its daemon (the
// supervisor's death is the old crash). The mount stays, dead: every
// access to it fails with ENOTCONN ("Transport endpoint is not
// connected") until DetachDead.
func (fs *Tierfs) Kill(t *testing.T) {
	t.Helper()
	if !fs.Running() {
		fatalf(t, "tierfs is not running")
	}
	pid, daemon := fs.p.cmd.Process.Pid, fs.Pid()
	fs.p.stop(syscall.SIGKILL, tierfsStopTimeout)
	if daemon != pid {
		// It dies with its supervisor (PR_SET_PDEATHSIG); the
		// connection aborts once it has.
		err := waitFor(tierfsStopTimeout, fmt.Sprintf("daemon %d to die with its supervisor", daemon), func() (bool, error) {
			return processGone(daemon), nil
		})
		if err != nil {
			fatalf(t, "%v", err)
		}
	}
	t.Logf("killed tierfs (pid %d) with SIGKILL", pid)
}

// processGone reports whether pid has exited: no such process, or a
// zombie (an orphan is its new parent's to reap).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// DetachDead checks that the mount is stale (its daemon is gone) and
// detaches it lazily (umount -l, through mountutil.PrepareForce), so that
// tierfs can mount on the same mountpoint again.
func (fs *Tierfs) DetachDead(t *testing.T) {
	t.Helper()
	if fs.Running() {
		fatalf(t, "tierfs is still running")
	}
	state, typ, err := mountutil.Inspect(fs.Mnt)
	if err != nil {
		fatalf(t, "inspecting %s: %v", fs.Mnt, err)
	}
	if state != mountutil.Stale {
		fatalf(t, "%s is %s (%s) after tierfs died, want stale", fs.Mnt, state, typ)
	}
	if err := mountutil.PrepareForce(fs.Mnt); err != nil {
		fatalf(t, "detaching the dead mount: %v", err)
	}
	t.Logf("detached the dead mount on %s (it was %s, %s)", fs.Mnt, state, typ)
}

func (fs *Tierfs) cleanup(t *testing.T) {
	fs.Stop(t)
	// A daemon that was killed leaves its mount behind, dead.
	if ok, _ := isMounted(fs.Mnt); ok {
		if err := mountutil.Unmount(fs.Mnt); err != nil {
			errorf(t, "%v", err)
		}
	}
	if t.Failed() {
		t.Logf("--- last lines of %s:\n%s", fs.Log, tail(fs.Log, 40))
	}
}

// unmountTmpfs unmounts the fast tier; it retries while the mount is
// busy (a dying daemon), then detaches it lazily and fails the test.
func unmountTmpfs(t *testing.T, dir string) {
	if ok, _ := isMounted(dir); !ok {
		return
	}
	err := waitFor(10*time.Second, "unmounting "+dir, func() (bool, error) {
		err := unix.Unmount(dir, 0)
		if err == nil || errors.Is(err, unix.EINVAL) {
			return true, nil
		}
		if errors.Is(err, unix.EBUSY) {
			return false, nil
		}
		return false, err
	})
	if err != nil {
		errorf(t, "%v; detaching it lazily", err)
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			errorf(t, "umount -l %s: %v", dir, err)
		}
	}
}

// StatusJSON is `tierfs status --json`.
type StatusJSON struct {
	Mountpoint string `json:"mountpoint"`
	Tiers      []struct {
		Name          string `json:"name"`
		Type          string `json:"type"`
		Path          string `json:"path"`
		CapacityBytes int64  `json:"capacity_bytes"`
		UsedBytes     int64  `json:"used_bytes"`
		FreeBytes     int64  `json:"free_bytes"`
		Files         int64  `json:"files"`
	} `json:"tiers"`
	OpenFiles int         `json:"open_files"`
	Policy    *PolicyJSON `json:"policy"`
	Requests  struct {
		Transport        string `json:"transport"`
		DataPath         string `json:"data_path"`
		Passthrough      bool   `json:"passthrough"`
		PassthroughGiven uint64 `json:"passthrough_given"`
	} `json:"requests"`
	Daemon *struct {
		Pid     int    `json:"pid"`
		Version string `json:"version"`
	} `json:"daemon"`
	Moves MovesJSON `json:"moves"`
}

// MovesJSON is the move ledger in `tierfs status --json`: every move
// since the mount, the policy's, the operator's and the spills.
type MovesJSON struct {
	Started    int64    `json:"started"`
	InFlight   int64    `json:"in_flight"`
	Moved      int64    `json:"moved"`
	Skipped    int64    `json:"skipped"`
	Failed     int64    `json:"failed"`
	Spills     int64    `json:"spills"`
	BytesMoved int64    `json:"bytes_moved"`
	LastErrors []string `json:"last_errors"`
	ByReason   []struct {
		Reason     string           `json:"reason"`
		Outcomes   map[string]int64 `json:"outcomes"`
		BytesMoved int64            `json:"bytes_moved"`
	} `json:"by_reason"`
}

// PolicyMoved counts the moves the policy's plans made (demotions,
// promotions, pins kept); PolicyBytes their bytes.
func (m MovesJSON) PolicyMoved() (n int64) {
	for _, r := range m.ByReason {
		if planned(r.Reason) {
			n += r.Outcomes["moved"]
		}
	}
	return n
}

// PolicyBytes is the bytes the moves of PolicyMoved moved.
func (m MovesJSON) PolicyBytes() (n int64) {
	for _, r := range m.ByReason {
		if planned(r.Reason) {
			n += r.BytesMoved
		}
	}
	return n
}

func planned(reason string) bool { return reason == "demote" || reason == "promote" || reason == "pin" }

// PolicyJSON is the "policy" part of `tierfs status --json`.
type PolicyJSON struct {
	Enabled    bool              `json:"enabled"`
	Queued     []json.RawMessage `json:"queued"`
	InFlight   []json.RawMessage `json:"in_flight"`
	PlanErrors []string          `json:"plan_errors"`
}

// Status is `tierfs status --json`.
func (fs *Tierfs) Status(t *testing.T) StatusJSON {
	t.Helper()
	var st StatusJSON
	if err := json.Unmarshal(fs.CLI(t, "status", "--json", fs.Mnt), &st); err != nil {
		fatalf(t, "tierfs status --json: %v", err)
	}
	return st
}

// Ls is `tierfs ls --json -r` of the mount, by path relative to it.
func (fs *Tierfs) Ls(t *testing.T) map[string]LsEntry {
	t.Helper()
	var ls []LsEntry
	if err := json.Unmarshal(fs.CLI(t, "ls", "--json", "-r", fs.Mnt), &ls); err != nil {
		fatalf(t, "tierfs ls --json -r: %v", err)
	}
	out := make(map[string]LsEntry, len(ls))
	for _, e := range ls {
		out[e.Path] = e
	}
	return out
}

// LsEntry is one element of `tierfs ls --json`.
type LsEntry struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	Tier string `json:"tier"`
}

// CLI runs a tierfs client command and returns its stdout.
func (fs *Tierfs) CLI(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(fs.Bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		fatalf(t, "tierfs %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// ErrorLines returns the daemon's log lines at level error or above.
func (fs *Tierfs) ErrorLines() []string {
	var out []string
	for i := 1; i <= fs.starts; i++ {
		path := filepath.Join(fs.dir, fmt.Sprintf("tierfs-%d.log", i))
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, `"level":"error"`) || strings.Contains(l, `"level":"fatal"`) ||
				strings.Contains(l, `"level":"panic"`) || strings.HasPrefix(l, "panic:") ||
				strings.HasPrefix(l, "fatal error:") || strings.HasPrefix(l, "WARNING: DATA RACE") {
				out = append(out, filepath.Base(path)+": "+l)
			}
		}
	}
	return out
}
