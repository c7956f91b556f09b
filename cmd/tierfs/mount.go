package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	tfs "github.com/tierfs/tierfs/fs"
	"github.com/tierfs/tierfs/internal/config"
	"github.com/tierfs/tierfs/mountutil"
	"github.com/tierfs/tierfs/policy/engine"
	"github.com/tierfs/tierfs/tiering"
)

// controlShutdownTimeout is how long requests in flight on the control
// socket (a move) get to finish at exit.
const controlShutdownTimeout = 30 * time.Second

func setupMount(fs *flag.FlagSet) func([]string) int {
	cfgPath := fs.String("config", "", "the configuration `FILE` (TOML; required)")
	debug := fs.Bool("debug", false, "log every FUSE request and set the log level to debug")
	fs.Bool("writeback-cache", false, "let the kernel cache writes and send them in batches: faster small writes, "+
		"but written data not yet fsynced is lost if the daemon dies (overrides [mount] writeback_cache)")
	fs.Bool("io-uring", true, "serve FUSE requests over io_uring where the kernel allows it (overrides [mount] io_uring)")
	fs.Bool("direct-io", false, "open files for direct I/O: read and write bypass the page cache, sendfile and mmap use it; "+
		"faster writes, slower consumers (overrides [mount] direct_io)")
	return func(args []string) int {
		// The kernel applied the caller's umask to the modes FUSE
		// passes in already; applying ours again would be wrong.
		unix.Umask(0)
		if *cfgPath == "" {
			return usageError(fs, "--config is required")
		}
		if len(args) != 1 {
			return usageError(fs, "want exactly one MOUNTPOINT")
		}
		return mount(*cfgPath, args[0], *debug, mountFlagOverrides(fs))
	}
}

// mountFlags are the flags of `tierfs mount` that stand for a [mount]
// key: given, either way (--writeback-cache=false too), the flag wins
// over the file.
var mountFlags = []struct{ flag, key string }{
	{"writeback-cache", "writeback_cache"},
	{"io-uring", "io_uring"},
	{"direct-io", "direct_io"},
}

// mountOverrides maps the [mount] keys whose flag was given to the
// flag's value.
type mountOverrides map[string]bool

// mountFlagOverrides collects the [mount] flags given on fs's command
// line (flag.Visit: only those that were set).
func mountFlagOverrides(fs *flag.FlagSet) mountOverrides {
	o := mountOverrides{}
	fs.Visit(func(f *flag.Flag) {
		for _, m := range mountFlags {
			if f.Name != m.flag {
				continue
			}
			if g, ok := f.Value.(flag.Getter); ok {
				if v, ok := g.Get().(bool); ok {
					o[m.key] = v
				}
			}
		}
	})
	return o
}

// apply returns m with the overridden keys set from the flags.
func (o mountOverrides) apply(m mountutil.Config) mountutil.Config {
	if v, ok := o["writeback_cache"]; ok {
		m.WritebackCache = v
	}
	if v, ok := o["io_uring"]; ok {
		m.IOUring = v
	}
	if v, ok := o["direct_io"]; ok {
		m.DirectIO = v
	}
	return m
}

// note marks a reload's "mount.KEY: OLD -> NEW" change of a key that a
// flag overrides: the file's new value does not apply to this daemon,
// nor to a next mount given the same flag.
func (o mountOverrides) note(change string) string {
	for _, m := range mountFlags {
		if _, ok := o[m.key]; ok && strings.HasPrefix(change, "mount."+m.key+":") {
			return change + " (--" + m.flag + " on the command line overrides it)"
		}
	}
	return change
}

// fsOptions are the FUSE mount's settings for the effective [mount]
// table (flags applied).
func fsOptions(m mountutil.Config, debug bool) tfs.Options {
	return tfs.Options{
		AllowOther:     m.AllowOther,
		Debug:          debug,
		WritebackCache: m.WritebackCache,
		ReadAheadKB:    m.ReadAheadKB,
		IOUring:        m.IOUring,
		DirectIO:       m.DirectIO,
	}
}

func mount(cfgPath, mountpoint string, debug bool, flags mountOverrides) int {
	// Reloads read the file again, from wherever the daemon is then.
	if abs, err := filepath.Abs(cfgPath); err == nil {
		cfgPath = abs
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return fail("mount", err)
	}
	mp, err := filepath.Abs(mountpoint)
	if err != nil {
		return fail("mount", err)
	}
	if err := cfg.CheckMountpoint(mp); err != nil {
		return fail("mount", err)
	}
	if err := mountutil.Prepare(mp); err != nil {
		return fail("mount", err)
	}
	// Name the mountpoint as the kernel (and so /proc/self/mountinfo,
	// which clients search) will: symlinks resolved.
	if resolved, err := filepath.EvalSymlinks(mp); err == nil {
		mp = resolved
	}
	gid, err := cfg.Mount.ControlGID()
	if err != nil {
		return fail("mount", fmt.Errorf("mount.control_group: %w", err))
	}

	log := newLogger(logOutput(cfg.Log.File))
	setLogLevel(cfg.Log.Level, debug)
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
	store, err := tiering.Open(cfg.Tiers, tiering.Options{
		SegmentSize: int64(cfg.PMem.SegmentSize),
		PMem:        &cfg.PMem,
		Log:         log,
		Holder:      fmt.Sprintf("pid %d, mountpoint %s", os.Getpid(), mp),
	})
	if err != nil {
		return fail("mount", fmt.Errorf("opening the tiers: %w", err))
	}
	eng, err := engine.New(store, engineConfig(cfg), filepath.Join(cfg.Tiers[0].Path, ".tierfs", pinsFile), log)
	if err != nil {
		store.Close()
		return fail("mount", fmt.Errorf("policy engine: %w", err))
	}
	pol := &livePolicy{eng: eng, cfgPath: cfgPath, mountpoint: mp, debug: debug, mountFlags: flags, log: log, cfg: cfg}

	// From here a signal must unmount, not kill us with the mount left
	// behind; one that arrives before the loop below waits in sigs.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	root := tfs.NewRoot(store, log)
	mcfg := flags.apply(cfg.Mount)
	server, err := tfs.Mount(root, mp, fsOptions(mcfg, debug))
	if err != nil {
		store.Close()
		return fail("mount", fmt.Errorf("mounting on %s: %w", mp, err))
	}
	served := make(chan struct{})
	go func() {
		server.Wait()
		close(served)
	}()

	cs := newControlServer(store, pol, mp, log)
	cs.requests = func() *requestsStatus {
		r := &requestsStatus{Transport: "/dev/fuse", DataPath: server.DataPath()}
		if server.IOUring() {
			r.Transport, r.ServedIOUring = "io_uring", server.URingServed()
			r.Queues, r.ThreadsPerQueue = server.URingQueues()
		}
		return r
	}
	cs.access.group, cs.access.groupName, cs.access.allowOther = gid, cfg.Mount.ControlGroup, mcfg.AllowOther
	if cs.access.mount, err = newMountView(mp); err != nil {
		// Only privileged callers get answers about paths then.
		log.Warn().Err(err).Str("mountpoint", mp).Msg("cannot stat the mount; the control socket answers path requests only for root and control_group")
	}
	warnControlAccess(cfg.Mount, gid, log)
	ctl, err := listenControl(mp, cs, cfg.Mount.SocketMode(), gid)
	if err != nil {
		log.Error().Err(err).Msg("cannot start the control server; unmounting")
		if uerr := unmountServer(server, mp, served, log); uerr != nil {
			log.Error().Err(uerr).Msg("unmount failed")
		} else {
			<-served
			store.Close()
		}
		return fail("mount", err)
	}
	engCtx, stopEngine := context.WithCancel(context.Background())
	defer stopEngine()
	engDone := make(chan struct{})
	go func() {
		defer close(engDone)
		eng.Run(engCtx)
	}()
	ml := log.Info().Str("mountpoint", mp).Strs("tiers", tierNames).Str("control", ctl.path).
		Bool("writeback_cache", server.WritebackCache()).Int("read_ahead_kb", mcfg.ReadAheadKB).Bool("io_uring", server.IOUring()).Bool("direct_io", server.DirectIO()).Str("requests", cs.requests().Transport)
	if why := uringOff(mcfg.IOUring, server.IOUring()); why != "" {
		ml = ml.Str("io_uring_off", why)
	}
	ml.Int("pid", os.Getpid()).Str("version", versionString()).Msg("mounted")
	notifyMounted()

	reason, forced := waitForExit(server, mp, served, sigs, func() { pol.Reload() }, log)

	ctx, cancel := context.WithTimeout(context.Background(), controlShutdownTimeout)
	defer cancel()
	if err := ctl.Close(ctx); err != nil {
		log.Warn().Err(err).Msg("closing the control socket")
	}
	// Run cancels the copies under way (their sources stay the files)
	// and returns once they have stopped; only then may the tiers close.
	stopEngine()
	<-engDone
	status := 0
	if forced {
		// The FUSE server may still run: leave the tiers' descriptors
		// to the exit.
		status = 1
	} else if err := store.Close(); err != nil {
		log.Error().Err(err).Msg("closing the tiers")
		status = 1
	}
	log.Info().Str("mountpoint", mp).Str("reason", reason).Int("status", status).Msg("exiting")
	return status
}

// warnControlAccess says in the log what a widened control socket lets
// others do.
func warnControlAccess(m mountutil.Config, gid int, log zerolog.Logger) {
	if mode := m.SocketMode(); mode&0o002 != 0 {
		log.Warn().Str("control_mode", fmt.Sprintf("%04o", mode)).
			Msg("the control socket is world-writable (mount.control_mode): any local user may connect; each sees and acts on only the files it could through the mount, and reload stays root's and control_group's")
	}
	if gid >= 0 {
		if _, err := user.LookupGroupId(strconv.Itoa(gid)); err != nil {
			log.Warn().Int("gid", gid).Msg("mount.control_group: no group in the group database has this gid; only processes already holding it are its members")
		}
	}
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
			if err := unmountServer(server, mp, served, log); err != nil {
				log.Error().Err(err).Msg("cannot unmount; exiting anyway")
				return reason, true
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
// lazily, so that the mountpoint is free at once; the server then keeps
// serving the files still open until they are closed (served closes).
func unmountServer(server interface{ Unmount() error }, mp string, served <-chan struct{}, log zerolog.Logger) error {
	err := server.Unmount()
	if err == nil {
		return nil
	}
	select {
	case <-served:
		return nil // unmounted meanwhile
	default:
	}
	log.Warn().Err(err).Str("mountpoint", mp).Msg("unmount failed (busy?); detaching lazily")
	if err := mountutil.Unmount(mp); err != nil {
		return err
	}
	select {
	case <-served:
	default:
		log.Info().Str("mountpoint", mp).Msg("detached; serving the files still open until they are closed (signal again to exit now)")
	}
	return nil
}

// newLogger logs to w: for people on a terminal, JSON otherwise. It lets
// every level through: setLogLevel filters, and a reload changes it.
func newLogger(w *os.File) zerolog.Logger {
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
