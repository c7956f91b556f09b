package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof" // TIERFS_PPROF
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/config"
	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/fuseuring"
	"github.com/tierfs/tierfs/internal/iostats"
	"github.com/tierfs/tierfs/internal/metrics"
	"github.com/tierfs/tierfs/internal/sdnotify"
	"github.com/tierfs/tierfs/internal/supervisor"
	"github.com/tierfs/tierfs/internal/version"
	"github.com/tierfs/tierfs/mountutil"
	"github.com/tierfs/tierfs/policy/engine"
	"github.com/tierfs/tierfs/tiering"
)

// controlShutdownTimeout is how long requests in flight on the control
// socket get to finish at exit.
const controlShutdownTimeout = 30 * time.Second

// Helper is what the mount(8) helper form (cmd/tierfs/fusemount.go) asks
// of Run beside `tierfs mount`'s work.
type Helper struct {
	// Mounted is called once the mount serves and the control socket
	// listens: the helper form's parent waits for that. Under a
	// supervisor it is called in the supervisor, when its first daemon
	// is there, and in that daemon.
	Mounted func()
	// Daemon, when set, adapts the command a supervisor starts a
	// daemon with (this binary and its arguments): the helper form's
	// daemons run in the foreground, and the first reports its startup
	// errors to the helper's parent.
	Daemon func(*exec.Cmd)
}

// Options are what the daemon is told beside its configuration.
type Options struct {
	// ConfigPath is the file reloads read again: absolute, since the
	// daemon may not stay in its directory. "" refuses reloads.
	ConfigPath string
	// Mountpoint as the kernel names it (symlinks resolved).
	Mountpoint string
	// Debug keeps the log level at debug whatever the file says.
	Debug bool
	// Overrides are the [mount] keys the command line sets.
	Overrides Overrides
	Log       zerolog.Logger
}

// Daemon is the tiers of one mount, the policy engine over them and its
// running configuration.
type Daemon struct {
	Store  *tiering.Store
	Engine *engine.Engine
	Policy *LivePolicy
	// Topics counts reads and bytes by Kafka topic for the metrics.
	Topics *metrics.Topics
	o      Options
}

// Open opens the tiers of cfg and makes the policy engine over them; the
// engine keeps its CLI pins where the store says.
func Open(cfg *config.Config, o Options) (*Daemon, error) {
	topics := metrics.NewTopics(len(cfg.Tiers), cfg.Metrics.MaxTopics)
	store, err := tiering.Open(cfg.Tiers, tiering.Options{
		SegmentSize: int64(cfg.PMem.SegmentSize),
		PMem:        &cfg.PMem,
		Log:         o.Log,
		Holder:      fmt.Sprintf("pid %d, mountpoint %s", os.Getpid(), o.Mountpoint),
		IOBucket:    topics.Bucket,
		// A successor adopts the open files with no name left.
		TakingOver: mountutil.TakingOver(),
	})
	if err != nil {
		return nil, fmt.Errorf("opening the tiers: %w", err)
	}
	eng, err := engine.New(Adapter{Store: store, OnList: topics.Observe}, engineConfig(cfg), store.StatePath(pinsFile), o.Log)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("policy engine: %w", err)
	}
	pol := &LivePolicy{eng: eng, cfgPath: o.ConfigPath, mountpoint: o.Mountpoint, debug: o.Debug, overrides: o.Overrides, log: o.Log, cfg: cfg}
	return &Daemon{Store: store, Engine: eng, Policy: pol, Topics: topics, o: o}, nil
}

// FUSE is what the metrics read of a mounted FUSE server: its request
// counters and its transport.
type FUSE interface {
	Stats() *iostats.Requests
	IOUring() bool
	Passthrough() (on bool, open int64, given uint64)
}

// ServeMetrics serves the Prometheus endpoint on ln (metrics.Listen,
// before the mount) for the mounted server srv, until the returned
// server is closed.
func (d *Daemon) ServeMetrics(ln net.Listener, srv FUSE) *metrics.Server {
	src := metrics.Sources{
		Store:      d.Store,
		Engine:     d.Engine,
		Thresholds: d.Policy.Thresholds,
		Requests:   srv.Stats(),
		Transport: func() string {
			if srv.IOUring() {
				return "io_uring"
			}
			return "/dev/fuse"
		},
		Passthrough: srv.Passthrough,
		Topics:      d.Topics,
	}
	if c, _ := supervisor.Current(); c != nil {
		src.Supervisor = func() (supervisor.Status, error) {
			// A scrape must not wait long on a busy supervisor.
			return supervisor.QueryWithin(d.o.Mountpoint, 2*time.Second)
		}
	}
	return metrics.Serve(ln, src)
}

// StartEngine runs the policy engine until stop, which cancels the
// copies under way (their sources stay the files) and returns once they
// have stopped: only then may the tiers close.
func (d *Daemon) StartEngine() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Engine.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// Server is a mounted FUSE server as the daemon drives it (fs.Server,
// with how requests reach it).
type Server interface {
	FUSE
	Unmount() error
	Wait()
	WritebackCache() bool
	DirectIO() bool
	// Requests is the transport and data path, for status.
	Requests() *control.RequestsStatus
}

// MountFunc mounts store at mountpoint with the effective [mount] table;
// staysOn is the policy's word on which files stay on their tier (the
// files [mount] passthrough may serve from the kernel).
// It is the caller's: package fs translates, the daemon does not import
// it (fs's own tests start daemons).
type MountFunc func(store *tiering.Store, mountpoint string, m mountutil.Config, debug bool, staysOn func(rel string, ino uint64, tier string) bool, log zerolog.Logger) (Server, error)

// Run is `tierfs mount`: it loads the configuration, opens the tiers,
// mounts them, serves the control socket and the policy until the mount
// is unmounted or a signal asks for it (SIGHUP reloads), then shuts down
// in order. helper is the mount(8) helper form's (nil for `tierfs
// mount`). err is a failure before the mount served; status the exit
// status after.
func Run(cfgPath, mountpoint string, debug bool, ov Overrides, mount MountFunc, helper *Helper) (status int, err error) {
	started := time.Now()
	// The kernel applied the caller's umask to the modes FUSE passes in
	// already; applying ours again would be wrong.
	unix.Umask(0)
	// Reloads read the file again, from wherever the daemon is then.
	if abs, err := filepath.Abs(cfgPath); err == nil {
		cfgPath = abs
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return 1, err
	}
	mp, err := filepath.Abs(mountpoint)
	if err != nil {
		return 1, err
	}
	sup, err := supervisor.Current()
	if err != nil {
		return 1, err
	}
	// A daemon taking a live mount over must not touch the mountpoint
	// before it serves: nobody else would answer (supervise.go).
	takeover := mountutil.TakingOver()
	// A supervisor that systemd hands the connection it kept: the same.
	handed := sup == nil && cfg.Mount.Supervisor && helper == nil && supervisor.Handed(mp)
	if !takeover && !handed {
		if err := cfg.CheckMountpoint(mp); err != nil {
			return 1, err
		}
	}
	log := NewLogger(LogOutput(cfg.Log.File))
	SetLogLevel(cfg.Log.Level, debug)
	supervisorOff := ""
	check := func() error { return cfg.CheckMountpoint(mp) }
	if sup == nil {
		m := ov.Apply(cfg.Mount)
		if m.Supervisor && cfg.Sets("mount.supervisor") {
			// Asked for by name: supervised wherever it can be done
			// at all, io_uring given up for it (MountSupervised).
			if os.Geteuid() != 0 {
				return 1, errors.New("mount.supervisor = true: the supervised daemon mounts by hand and needs root (leave the key out to mount without a supervisor where there cannot be one)")
			}
			return runSupervisor(mp, handed, check, log, helper)
		}
		if supervisorOff = mountutil.SupervisionOff(m); supervisorOff == "" {
			return runSupervisor(mp, handed, check, log, helper)
		}
		// Served as before supervision: a daemon's death aborts the
		// mount (docs/operating.md, stale mounts).
		ev := log.Warn()
		if !m.Supervisor {
			ev = log.Info()
		}
		ev.Str("reason", supervisorOff).Msg("no supervisor: a daemon's death will abort the mount")
	}
	// Under systemd (Type=notify) without a supervisor this process is
	// the service's: it says when it serves. (A supervisor's daemon has
	// no $NOTIFY_SOCKET: the supervisor speaks for it.)
	notifier := sdnotify.FromEnv()
	if !takeover {
		if err := mountutil.Prepare(mp); err != nil {
			return 1, err
		}
	}
	// Name the mountpoint as the kernel (and so /proc/self/mountinfo,
	// which clients search) will: symlinks resolved.
	mp = resolveMountpoint(mp, takeover)
	gid, err := cfg.Mount.ControlGID()
	if err != nil {
		return 1, fmt.Errorf("mount.control_group: %w", err)
	}

	if addr := os.Getenv("TIERFS_PPROF"); addr != "" {
		// Profiling for performance work: go tool pprof http://ADDR/debug/pprof/profile
		go func() {
			if err := http.ListenAndServe(addr, nil); err != nil {
				log.Warn().Err(err).Str("addr", addr).Msg("TIERFS_PPROF: pprof server failed")
			}
		}()
		log.Info().Str("addr", addr).Msg("pprof server on (TIERFS_PPROF)")
	}

	var tierNames []string
	for _, t := range cfg.Tiers {
		tierNames = append(tierNames, t.Name)
	}
	d, err := Open(cfg, Options{ConfigPath: cfgPath, Mountpoint: mp, Debug: debug, Overrides: ov, Log: log})
	if err != nil {
		return 1, err
	}
	// The metrics' port is taken before the mount: a second daemon on
	// the host whose port is taken fails here, saying so.
	var metricsLn net.Listener
	if addr := cfg.Metrics.Listen; addr != "" {
		if metricsLn, err = metrics.Listen(addr); err != nil {
			d.Store.Close()
			return 1, err
		}
	}

	// From here a signal must unmount, not kill us with the mount left
	// behind; one that arrives before the loop below waits in sigs.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	if notifier != nil {
		// The supervised unit's RestartKillSignal=: with no supervisor
		// to keep the connection, a restart is a stop and a start.
		signal.Notify(sigs, syscall.SIGUSR1)
	}
	defer signal.Stop(sigs)

	mcfg := ov.Apply(cfg.Mount)
	server, err := mount(d.Store, mp, mcfg, debug, d.Engine.StaysOn, log)
	if err != nil {
		if metricsLn != nil {
			metricsLn.Close()
		}
		d.Store.Close()
		return 1, fmt.Errorf("mounting on %s: %w", mp, err)
	}
	metricsAddr := "off"
	var ms *metrics.Server
	if metricsLn != nil {
		ms = d.ServeMetrics(metricsLn, server)
		metricsAddr = "http://" + ms.Addr() + "/metrics"
	}
	closeMetrics := func() {
		if ms != nil {
			ms.Close()
		}
	}
	served := make(chan struct{})
	go func() {
		server.Wait()
		close(served)
	}()

	cs := control.NewServer(d.Store, d.Policy, mp, log)
	cs.Requests = server.Requests
	cs.Daemon = &control.DaemonStatus{Pid: os.Getpid(), Version: version.Read().Short(), Started: started}
	if err := cs.SetAccess(gid, cfg.Mount.ControlGroup, mcfg.AllowOther); err != nil {
		log.Warn().Err(err).Str("mountpoint", mp).Msg("cannot stat the mount; the control socket answers path requests only for root and control_group")
	}
	control.WarnAccess(cfg.Mount, gid, log)
	ctl, err := control.Listen(mp, cs, cfg.Mount.SocketMode(), gid)
	if err != nil {
		log.Error().Err(err).Msg("cannot start the control server; unmounting")
		closeMetrics()
		if _, uerr := unmountServer(server, mp, served, log); uerr != nil {
			log.Error().Err(uerr).Msg("unmount failed")
		} else {
			<-served
			d.Store.Close()
		}
		return 1, err
	}
	stopEngine := d.StartEngine()
	uring := server.IOUring()
	ml := log.Info().Str("mountpoint", mp).Strs("tiers", tierNames).Str("control", ctl.Path()).
		Bool("writeback_cache", server.WritebackCache()).Int("read_ahead_kb", mcfg.ReadAheadKB).Bool("io_uring", uring).Bool("direct_io", server.DirectIO()).Str("requests", server.Requests().Transport).
		Str("metrics", metricsAddr)
	if why := URingOff(mcfg.IOUring, uring); why != "" {
		ml = ml.Str("io_uring_off", why)
	}
	if sup != nil {
		ml = ml.Int("generation", sup.Gen())
	} else {
		ml = ml.Str("supervisor_off", supervisorOff)
	}
	ml.Int("pid", os.Getpid()).Str("version", version.Read().Short()).Msg("mounted")
	if sup != nil {
		if err := sup.Ready(); err != nil {
			log.Warn().Err(err).Msg("cannot tell the supervisor that the mount is ready")
		}
	}
	if helper != nil && helper.Mounted != nil {
		helper.Mounted()
	}
	if notifier != nil {
		if err := notifier.Notify("READY=1\nSTATUS=serving " + mp); err != nil {
			log.Warn().Err(err).Msg("systemd: cannot say the mount serves")
		}
	}

	reason, forced := waitForExit(server, mp, served, sigs, func() { d.Policy.Reload() }, log)
	if notifier != nil {
		notifier.Notify("STOPPING=1")
	}

	ctx, cancel := context.WithTimeout(context.Background(), controlShutdownTimeout)
	defer cancel()
	if err := ctl.Close(ctx); err != nil {
		log.Warn().Err(err).Msg("closing the control socket")
	}
	stopEngine()
	closeMetrics()
	if forced {
		// The FUSE server may still run: leave the tiers' descriptors
		// to the exit.
		status = 1
	} else if err := d.Store.Close(); err != nil {
		log.Error().Err(err).Msg("closing the tiers")
		status = 1
	}
	log.Info().Str("mountpoint", mp).Str("reason", reason).Int("status", status).Msg("exiting")
	return status, nil
}

// waitForExit serves until the filesystem is unmounted from outside or a
// SIGINT or SIGTERM asks us to unmount it; SIGHUP calls reload. It
// returns why it stopped, and forced when the FUSE server may still be
// running (a second signal came while files kept a lazily detached mount
// alive).
func waitForExit(server interface{ Unmount() error }, mp string, served <-chan struct{}, sigs <-chan os.Signal, reload func(), log zerolog.Logger) (reason string, forced bool) {
	for {
		select {
		case <-served:
			return "unmounted", false
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				log.Info().Msg("SIGHUP: reloading the configuration")
				reload()
				continue
			}
			reason = "signal " + sig.String()
			log.Info().Str("signal", sig.String()).Str("mountpoint", mp).Msg("unmounting")
			lazy, err := unmountServer(server, mp, served, log)
			if err != nil {
				log.Error().Err(err).Msg("cannot unmount; exiting anyway")
				return reason, true
			}
			if !lazy {
				// Unmounted: the serving ends by itself. A second
				// signal here is not an operator's "exit now" but
				// the same stop again (systemd signals every process
				// of the unit, the supervisor passes its own on).
				<-served
				return reason, false
			}
			for {
				select {
				case <-served:
					return reason, false
				case sig := <-sigs:
					if sig == syscall.SIGHUP {
						continue
					}
					log.Warn().Str("signal", sig.String()).Msg("exiting while files are still open on the detached mount; their users will get errors")
					return reason + ", then " + sig.String(), true
				}
			}
		}
	}
}

// unmountServer unmounts mp. When the mount is busy it is detached
// lazily (lazy), so that the mountpoint is free at once; the server then
// keeps serving the files still open until they are closed (served
// closes).
func unmountServer(server interface{ Unmount() error }, mp string, served <-chan struct{}, log zerolog.Logger) (lazy bool, err error) {
	err = server.Unmount()
	if err == nil {
		return false, nil
	}
	select {
	case <-served:
		return false, nil // unmounted meanwhile
	default:
	}
	log.Warn().Err(err).Str("mountpoint", mp).Msg("unmount failed (busy?); detaching lazily")
	if err := mountutil.Unmount(mp); err != nil {
		return false, err
	}
	select {
	case <-served:
		return false, nil
	default:
		log.Info().Str("mountpoint", mp).Msg("detached; serving the files still open until they are closed (signal again to exit now)")
	}
	return true, nil
}

// LogOutput is where the daemon logs: [log] file, appended to, or stderr.
func LogOutput(file string) *os.File {
	if file == "" {
		return os.Stderr
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tierfs: log.file: %v; logging to stderr\n", err)
		return os.Stderr
	}
	return f
}

// URingOff says why the mount is not served over io_uring ("" when it
// is): not asked for, or what the kernel lacks.
func URingOff(asked, inEffect bool) string {
	switch {
	case inEffect:
		return ""
	case !asked:
		return "io_uring is off in [mount] or on the command line"
	}
	if err := fuseuring.Available(); err != nil {
		return err.Error()
	}
	return "the kernel did not offer FUSE over io_uring at INIT"
}

// NewLogger logs to w: for people on a terminal, JSON otherwise. It lets
// every level through: SetLogLevel filters, and a reload changes it.
func NewLogger(w *os.File) zerolog.Logger {
	var out io.Writer = w
	if isTerminal(w) {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.DateTime}
	}
	return zerolog.New(out).Level(zerolog.TraceLevel).With().Timestamp().Logger()
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
