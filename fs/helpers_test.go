package fs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/splice"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/config"
	"github.com/tierfs/tierfs/internal/daemon"
	"github.com/tierfs/tierfs/internal/metrics"
	"github.com/tierfs/tierfs/internal/testenv"
	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/mountutil"
	"github.com/tierfs/tierfs/pmem"
	"github.com/tierfs/tierfs/policy"
	"github.com/tierfs/tierfs/tiering"
)

// The mount is served by a child process (this test binary re-executed):
// a page fault on a mapping of a FUSE file blocks its thread in the kernel
// until the server answers, and a Go process that serves its own mapped
// file can stop the world for GC while that thread cannot stop, so it
// would deadlock itself. Kafka and tierfs are separate processes too.
const serverEnv = "TIERFS_TEST_SERVER"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(serverEnv); cfg != "" {
		os.Exit(serve(cfg))
	}
	if cfg := os.Getenv(supervisorEnv); cfg != "" {
		os.Exit(superviseMain(cfg))
	}
	if cfg := os.Getenv(stressWorkerEnv); cfg != "" {
		os.Exit(stressWorkerMain(cfg))
	}
	if os.Getenv(iouringEnv) == "1" {
		// Every mount of the run asks for io_uring (mountOpt.iouring)
		// and must get it: the kernel's switch stays on, and other
		// packages' tests that flip it wait, until the run ends.
		restore, err := testenv.EnableURing()
		if err != nil {
			// Asked for by name, so a failure, not a skip.
			fmt.Fprintf(os.Stderr, "%s=1: %v\n", iouringEnv, err)
			os.Exit(1)
		}
		uringForRun = true
		code := m.Run()
		restore()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// iouringEnv=1 serves every test mount over FUSE over io_uring (make
// test-iouring); a mount that falls back to /dev/fuse fails its test.
const iouringEnv = "TIERFS_TEST_IOURING"

// supervisedEnv=1 serves test mounts under a supervisor (mount).
const supervisedEnv = "TIERFS_TEST_SUPERVISED"

// uringForRun: TestMain holds the io_uring switch on for the whole run.
var uringForRun bool

type serverConfig struct {
	Mountpoint string               `json:"mountpoint"`
	Tiers      []tiering.TierConfig `json:"tiers"`
	// CrashAt names a tiering.FailPoint step where the daemon kills
	// itself (kill -9) the first time it gets there.
	CrashAt string `json:"crash_at,omitempty"`
	// HoldAt names a tiering.FailPoint step where the daemon waits, the
	// HoldNth time it gets there, until the test sends "release";
	// "held" answers once it waits there.
	HoldAt  string `json:"hold_at,omitempty"`
	HoldNth int    `json:"hold_nth,omitempty"`
	// Policy, when set, runs the policy engine in the daemon.
	Policy *policy.Config `json:"policy,omitempty"`
	// PMem, when set, gives pmem tiers a pool.
	PMem *pmem.Config `json:"pmem,omitempty"`
	// AllowOther mounts with allow_other: other users may use the mount.
	AllowOther bool `json:"allow_other,omitempty"`
	// Writeback mounts with the kernel's write-back cache.
	Writeback bool `json:"writeback,omitempty"`
	// IOUring serves requests over FUSE-over-io_uring.
	IOUring bool `json:"io_uring,omitempty"`
	// DirectIO opens files for direct I/O ([mount] direct_io).
	DirectIO bool `json:"direct_io,omitempty"`
	// Supervised serves the mount from a daemon under a supervisor
	// (takeover_test.go): the test's child is the supervisor.
	Supervised bool `json:"supervised,omitempty"`
	// Passthrough mounts with [mount] passthrough; the policy (Policy's
	// pins) says which files stay where they are.
	Passthrough bool `json:"passthrough,omitempty"`
	// Metrics, when set, is where the daemon serves its Prometheus
	// endpoint ("127.0.0.1:0": a port of its own); "metrics" answers
	// the address.
	Metrics string `json:"metrics,omitempty"`
}

type request struct {
	Op   string `json:"op"`
	Path string `json:"path,omitempty"`
	Tier string `json:"tier,omitempty"`
	Ino  uint64 `json:"ino,omitempty"`
}

type reply struct {
	Err    string          `json:"err,omitempty"`
	Errno  int             `json:"errno,omitempty"`
	Status *tiering.Status `json:"status,omitempty"`
	// URing answers "uring": whether requests come over io_uring, and
	// how many did.
	URing *uringInfo `json:"uring,omitempty"`
	// Spliced answers "spliced": the WRITEs whose data went from a pipe
	// to the backing.
	Spliced uint64 `json:"spliced,omitempty"`
	// Reads answers "reads": READ requests that reached the daemon.
	Reads uint64 `json:"reads,omitempty"`
	// Pipes answers "reads" too: the splice pipes go-fuse has made.
	Pipes int `json:"pipes,omitempty"`
	// Dropped answers "dropped": the pages dropped from the kernel's
	// cache after writes completed them (drop.go), once those queued
	// are sent.
	Dropped uint64 `json:"dropped,omitempty"`
	// Direct answers "directio": whether files are opened for direct I/O.
	Direct bool `json:"direct,omitempty"`
	// Pid is the daemon's, in the line that says it serves.
	Pid int `json:"pid,omitempty"`
	// Addr answers "metrics": where the Prometheus endpoint listens.
	Addr string `json:"addr,omitempty"`
	// Adopted and ReadDirPlus answer "adopted": the nodes a daemon that
	// took over adopted (takeover.go), and the READDIRPLUS it answered.
	Adopted     uint64 `json:"adopted,omitempty"`
	ReadDirPlus uint64 `json:"readdirplus,omitempty"`
	// PT and Refs answer "handles": the passthrough handles of the open
	// file Ino, and all its references (0 when it is not open); Recorded
	// the passthrough handles in a supervised mount's registry, the
	// kernel's, inherited ones too.
	PT       int `json:"pt,omitempty"`
	Refs     int `json:"refs,omitempty"`
	Recorded int `json:"recorded,omitempty"`
}

type uringInfo struct {
	Active bool   `json:"active"`
	Served uint64 `json:"served"`
}

// serve is the child: mount, answer requests on stdin, unmount on EOF.
func serve(cfgJSON string) int {
	syscall.Umask(0)
	var cfg serverConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if mountutil.TakingOver() {
		// A successor recovers and serves; the crash was its predecessor's.
		cfg.CrashAt, cfg.HoldAt = "", ""
	}
	if cfg.CrashAt != "" {
		tiering.FailPoint = func(step string) {
			if step == cfg.CrashAt {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
	}
	held, release := make(chan struct{}), make(chan struct{})
	if cfg.HoldAt != "" {
		var seen atomic.Int64
		tiering.FailPoint = func(step string) {
			if step == cfg.HoldAt && seen.Add(1) == int64(cfg.HoldNth) {
				close(held)
				<-release
			}
		}
	}
	log := zerolog.New(os.Stderr).With().Timestamp().Logger()
	// The daemon's own constructor: the tiers and the engine wired as
	// `tierfs mount` wires them; the mount is this package's, under test.
	dc := config.Default()
	dc.Tiers = cfg.Tiers
	if cfg.PMem != nil {
		dc.PMem = *cfg.PMem
	}
	if cfg.Policy != nil {
		dc.Policy = *cfg.Policy
	}
	d, err := daemon.Open(&dc, daemon.Options{Mountpoint: cfg.Mountpoint, Log: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var metricsLn net.Listener
	if cfg.Metrics != "" {
		// Before the mount, as `tierfs mount` does.
		if metricsLn, err = metrics.Listen(cfg.Metrics); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	st := d.Store
	root := NewRoot(st, log)
	srv, err := Mount(root, cfg.Mountpoint, Options{Config: mountutil.Config{
		AllowOther: cfg.AllowOther, WritebackCache: cfg.Writeback, IOUring: cfg.IOUring, DirectIO: cfg.DirectIO, ReadAheadKB: testReadAheadKB,
		// A supervised test mount asked to serve over io_uring does.
		SupervisorIOUring: cfg.IOUring,
		SpliceWrites:      true,
		Passthrough:       cfg.Passthrough,
	}, StaysOn: d.Engine.StaysOn})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := srv.WaitMount(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	stopEngine := func() {}
	if cfg.Policy != nil {
		stopEngine = d.StartEngine()
	}
	var ms *metrics.Server
	if metricsLn != nil {
		ms = d.ServeMetrics(metricsLn, srv)
	}
	out := json.NewEncoder(os.Stdout)
	out.Encode(reply{Pid: os.Getpid()})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var req request
		var rep reply
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			rep.Err = err.Error()
		}
		switch req.Op {
		case "move":
			if err := st.Move(req.Path, req.Tier); err != nil {
				rep.Err = err.Error()
				var e syscall.Errno
				if errors.As(err, &e) {
					rep.Errno = int(e)
				}
			}
		case "status":
			s := st.Status()
			rep.Status = &s
		case "reads":
			rep.Reads = root.fs.Reads.Load()
			rep.Pipes = splice.Total()
		case "directio":
			rep.Direct = srv.DirectIO()
		case "dropped":
			rep.Dropped = srv.DroppedPages()
		case "metrics":
			if ms != nil {
				rep.Addr = ms.Addr()
			}
		case "adopted":
			if srv.tk != nil {
				rep.Adopted = srv.tk.adopted.Load()
			}
			rep.ReadDirPlus = srv.stats.Latency(reqReaddirplus).Snapshot().Count
		case "spliced":
			rep.Spliced = srv.SplicedWrites()
		case "handles":
			rep.PT, rep.Refs, rep.Recorded = st.PassthroughHandles(req.Ino), st.OpenRefs(req.Ino), st.PassthroughRecorded()
		case "uring":
			rep.URing = &uringInfo{Active: srv.IOUring(), Served: srv.URingServed()}
		case "held":
			<-held
		case "release":
			close(release)
		case "settle":
			if err := st.SettlePools(context.Background()); err != nil {
				rep.Err = err.Error()
			}
			s := st.Status()
			rep.Status = &s
		}
		out.Encode(rep)
	}
	stopEngine()
	if ms != nil {
		ms.Close()
	}
	return unmountAndClose(srv, st)
}

func unmountAndClose(srv interface {
	Unmount() error
	Wait()
}, st *tiering.Store) int {
	for deadline := time.Now().Add(10 * time.Second); ; {
		err := srv.Unmount()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "unmount:", err)
			return 1
		}
		time.Sleep(20 * time.Millisecond) // the kernel lets go of the last file a moment after close
	}
	srv.Wait()
	st.Close()
	return 0
}

// testMount is a real tierfs mount over tiers in a temporary directory.
type testMount struct {
	cfg serverConfig
	mnt string
	// roots are the tier directories; tiers each one's copy of the mount's
	// root (roots[i]/data), where the backing files are.
	roots []string
	tiers []string
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *json.Decoder
	mu    sync.Mutex
	// allowErrors: the test provokes error logs on purpose.
	allowErrors bool
	// pid is the serving daemon's (cmd's, or its child's when supervised).
	pid  int
	logs func() string
}

type mountOpt struct {
	crashAt    string
	holdAt     string // see serverConfig.HoldAt
	holdNth    int
	policy     *policy.Config
	capacities []units.ByteSize // per tier; 0 = backing size
	tierDirs   []string         // use these backing dirs instead of fresh ones
	ntiers     int
	pmem       *pmem.Config // the first tier is pmem with this pool
	allowOther bool         // mount with allow_other (and default_permissions)
	writeback  bool         // mount with the kernel's write-back cache
	iouring    bool         // serve over FUSE-over-io_uring
	devFuse    bool         // serve through /dev/fuse, even under TIERFS_TEST_IOURING=1
	directIO   bool         // open files for direct I/O
	supervised bool         // a daemon under a supervisor (takeover_test.go)
	metrics    bool         // serve the Prometheus endpoint on a port of its own
	// passthrough mounts with [mount] passthrough.
	passthrough bool
	// unsupervised: never under a supervisor, whatever supervisedEnv says.
	unsupervised bool
}

var tierNames = []string{"fast", "slow", "cold", "colder"}

// requireFUSE skips a test that needs to mount, saying why (fails under
// CI=true).
func requireFUSE(t testing.TB) {
	t.Helper()
	testenv.FUSE(t)
}

func mount(t testing.TB, o mountOpt) *testMount {
	t.Helper()
	requireFUSE(t)
	base := t.TempDir()
	n := max(2, len(o.capacities), len(o.tierDirs), o.ntiers)
	var cfg serverConfig
	for i := 0; i < n; i++ {
		d := filepath.Join(base, "tier-"+tierNames[i])
		if i < len(o.tierDirs) {
			d = o.tierDirs[i]
		} else if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		c := tiering.TierConfig{Name: tierNames[i], Type: []string{"nvme", "hdd", "hdd", "hdd"}[i], Path: d}
		if i < len(o.capacities) {
			c.Capacity = o.capacities[i]
		}
		if i == 0 && o.pmem != nil {
			c.Type = tiering.TypePMem
			if c.Capacity == 0 {
				// The pool is a share of the capacity: never of the
				// disk the tests run on.
				c.Capacity = 32 << 20
			}
		}
		cfg.Tiers = append(cfg.Tiers, c)
	}
	cfg.CrashAt = o.crashAt
	cfg.HoldAt, cfg.HoldNth = o.holdAt, o.holdNth
	cfg.Policy = o.policy
	cfg.PMem = o.pmem
	cfg.AllowOther = o.allowOther
	// The kernel gives no passthrough with the write-back cache.
	cfg.Writeback = o.writeback || os.Getenv("TIERFS_TEST_WRITEBACK") == "1" && !o.passthrough
	cfg.IOUring = (o.iouring || os.Getenv(iouringEnv) == "1") && !o.devFuse
	cfg.DirectIO = o.directIO || os.Getenv("TIERFS_TEST_DIRECTIO") == "1"
	// supervisedEnv=1 serves every mount that does not kill its daemon on
	// purpose as `tierfs mount` does by default: under a supervisor,
	// through internal/fusedev.
	cfg.Supervised = o.supervised || (os.Getenv(supervisedEnv) == "1" && o.crashAt == "" && !cfg.IOUring && !o.unsupervised)
	cfg.Passthrough = o.passthrough
	if o.metrics {
		cfg.Metrics = "127.0.0.1:0"
	}
	cfg.Mountpoint = filepath.Join(base, "mnt")
	if err := os.Mkdir(cfg.Mountpoint, 0o755); err != nil {
		t.Fatal(err)
	}
	return startServer(t, cfg)
}

func startServer(t testing.TB, cfg serverConfig) *testMount {
	t.Helper()
	b, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	env := serverEnv
	if cfg.Supervised {
		env = supervisorEnv
	}
	cmd.Env = append(os.Environ(), env+"="+string(b), "GORACE=atexit_sleep_ms=0")
	logs := &bytes.Buffer{}
	var logMu sync.Mutex
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	})
	if dir := os.Getenv("TIERFS_TEST_LOG_DIR"); dir != "" {
		// Keep the daemon's log (and a SIGQUIT stack dump) for reading.
		if lf, err := os.CreateTemp(dir, "tierfs-*.log"); err == nil {
			t.Cleanup(func() { lf.Close() })
			cmd.Stderr = io.MultiWriter(cmd.Stderr, lf)
		}
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &testMount{cfg: cfg, mnt: cfg.Mountpoint, cmd: cmd, in: in, out: json.NewDecoder(outp)}
	for _, c := range cfg.Tiers {
		m.roots = append(m.roots, c.Path)
		m.tiers = append(m.tiers, filepath.Join(c.Path, "data"))
	}
	t.Cleanup(func() {
		m.stop(t)
		logMu.Lock()
		defer logMu.Unlock()
		if i := strings.Index(logs.String(), "WARNING: DATA RACE"); i >= 0 {
			t.Errorf("the race detector in tierfs's process:\n%s", logs.String()[i:min(logs.Len(), i+12000)])
		}
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, `"level":"error"`) && !m.allowErrors {
				t.Errorf("unexpected error log from tierfs: %s", line)
			}
		}
	})
	var ready reply
	if err := m.out.Decode(&ready); err != nil {
		t.Fatalf("tierfs server did not start: %v\n%s", err, logs.String())
	}
	m.pid = ready.Pid
	m.logs = func() string {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.String()
	}
	if cfg.IOUring {
		m.assertURing(t)
	}
	return m
}

// assertURing fails t unless the mount, asked to serve over io_uring, does:
// the kernel agreed at INIT, and a request made now is answered over a
// ring, not through /dev/fuse (where a connection whose rings failed to
// register falls back).
func (m *testMount) assertURing(t testing.TB) {
	t.Helper()
	before := m.call(t, request{Op: "uring"}).URing
	if before == nil || !before.Active {
		t.Fatalf("the mount asked for io_uring and serves through /dev/fuse (the kernel did not agree at INIT, or the rings could not be set up; the daemon's log says which)")
	}
	// A name never looked up before: the kernel must ask the daemon.
	probe := filepath.Join(m.mnt, fmt.Sprintf(".transport-probe-%d", probeSeq.Add(1)))
	if _, err := os.Lstat(probe); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lstat %s: %v, want ENOENT", probe, err)
	}
	if after := m.call(t, request{Op: "uring"}).URing; after.Served <= before.Served {
		t.Fatalf("the mount agreed on io_uring, but a LOOKUP was not answered over it (served %d before, %d after): requests come through /dev/fuse", before.Served, after.Served)
	}
}

var probeSeq atomic.Int64

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }

// stop unmounts (the child does, on EOF) and waits for the child.
func (m *testMount) stop(t testing.TB) {
	if m.cmd == nil {
		return
	}
	m.in.Close()
	done := make(chan error, 1)
	go func() { done <- m.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("tierfs server: %v", err)
		}
	case <-time.After(30 * time.Second):
		m.cmd.Process.Kill()
		<-done
		t.Errorf("tierfs server did not exit")
	}
	m.cmd = nil
	// Whatever happened, leave no mount behind.
	if isMounted(m.mnt) {
		_ = unix.Unmount(m.mnt, unix.MNT_DETACH)
		t.Errorf("mount %s left behind", m.mnt)
	}
}

// kill is kill -9 of the daemon; the mount is detached afterwards.
func (m *testMount) kill(t testing.TB) {
	m.cmd.Process.Kill()
	m.cmd.Wait()
	m.cmd = nil
	_ = unix.Unmount(m.mnt, unix.MNT_DETACH)
}

// expectCrash sends req to a daemon that must die on it (at its CrashAt
// step), then clears the dead mount.
func (m *testMount) expectCrash(t testing.TB, req request) {
	t.Helper()
	b, _ := json.Marshal(req)
	m.in.Write(append(b, '\n'))
	var rep reply
	if err := m.out.Decode(&rep); err == nil {
		t.Fatalf("daemon answered %+v instead of crashing at %s", rep, m.cfg.CrashAt)
	}
	m.waitCrash(t)
}

// waitCrash waits for the daemon to kill itself and clears the dead mount.
func (m *testMount) waitCrash(t testing.TB) {
	t.Helper()
	err := m.cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("daemon ended with %v, want SIGKILL", err)
	}
	m.cmd = nil
	if err := unix.Unmount(m.mnt, unix.MNT_DETACH); err != nil {
		t.Fatalf("detach dead mount: %v", err)
	}
}

// restart mounts the same tiers again, without a crash point.
func (m *testMount) restart(t testing.TB) *testMount {
	t.Helper()
	cfg := m.cfg
	cfg.CrashAt = ""
	return startServer(t, cfg)
}

func isMounted(p string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}

func (m *testMount) call(t testing.TB, req request) reply {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	b, _ := json.Marshal(req)
	if _, err := m.in.Write(append(b, '\n')); err != nil {
		t.Fatalf("tierfs server: %v", err)
	}
	var rep reply
	if err := m.out.Decode(&rep); err != nil {
		t.Fatalf("tierfs server: %v", err)
	}
	return rep
}

// move is tiering.Store.Move in the daemon.
func (m *testMount) move(t testing.TB, rel, tier string) error {
	rep := m.call(t, request{Op: "move", Path: rel, Tier: tier})
	if rep.Err == "" {
		return nil
	}
	if rep.Errno != 0 {
		return fmt.Errorf("%s: %w", rep.Err, syscall.Errno(rep.Errno))
	}
	return errors.New(rep.Err)
}

func (m *testMount) status(t testing.TB) tiering.Status {
	return *m.call(t, request{Op: "status"}).Status
}

func (m *testMount) path(rel string) string { return filepath.Join(m.mnt, rel) }

// tierOf names the tier whose backing holds rel, failing unless exactly one does.
func (m *testMount) tierOf(t testing.TB, rel string) int {
	t.Helper()
	found := -1
	for i, d := range m.tiers {
		if _, err := os.Lstat(filepath.Join(d, rel)); err == nil {
			if found >= 0 {
				t.Fatalf("%s on tiers %d and %d", rel, found, i)
			}
			found = i
		}
	}
	if found < 0 {
		t.Fatalf("%s on no tier", rel)
	}
	return found
}

// testReadAheadKB is the read-ahead the test daemons set on their mounts.
const testReadAheadKB = 1024

var waitFor = testenv.WaitFor
