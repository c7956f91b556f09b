package supervisor

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Config is what a supervisor needs.
type Config struct {
	// Mountpoint as the kernel names it: it names the supervisor's socket.
	Mountpoint string
	// Command makes a daemon's command (not started); its environment
	// gets EnvFD, and its ExtraFiles the supervisor's socket.
	Command func() *exec.Cmd
	Log     zerolog.Logger
	// Prepare checks the mountpoint before the first daemon mounts; it
	// is not called when the supervisor takes over a connection systemd
	// kept (the mountpoint is then a mount nobody serves yet).
	Prepare func() error
	// Mounted reads the mount table's entry for a mountpoint, without
	// touching the mount (systemd.go).
	Mounted func(mountpoint string) (MountRef, error)
	// Ready, when set, is called once, when the first daemon says its
	// mount serves and its control socket listens.
	Ready func()
}

// maxQuickDeaths: a daemon that dies before it serves, this many times
// in a row, is not started again (its configuration or tiers refuse it);
// the connection is then let go, as without a supervisor.
const maxQuickDeaths = 3

// Result answers a restart: the daemons' pids, the new one's generation
// and how long the mount waited between them.
type Result struct {
	OldPid  int     `json:"old_pid,omitempty"`
	NewPid  int     `json:"new_pid,omitempty"`
	Gen     int     `json:"generation,omitempty"`
	PauseMs float64 `json:"pause_ms,omitempty"`
	// Binary is the executable the new daemon runs ("" for the
	// supervisor's own).
	Binary string `json:"binary,omitempty"`
	// RolledBack: the binary asked for did not take over, and a daemon
	// of the previous binary serves again (NewPid); Error says why.
	RolledBack bool   `json:"rolled_back,omitempty"`
	Error      string `json:"error,omitempty"`
}

// Status is the supervisor's account of its daemon.
type Status struct {
	Pid       int       `json:"pid"`
	Gen       int       `json:"generation"`
	Takeovers int       `json:"takeovers"`
	Started   time.Time `json:"started"`
	// Pauses are the last takeovers' pauses, in milliseconds, from the
	// old daemon's death (or the drain's start) to the new one serving.
	Pauses []float64 `json:"pauses_ms"`
	// Binary is the executable daemons are started from, once `tierfs
	// restart --binary` replaced the supervisor's own ("" until then).
	Binary string `json:"binary,omitempty"`
}

// SocketPath is the supervisor's socket for mountpoint, beside the
// daemon's control socket (internal/control.SocketPath, named the same
// way; that package cannot be imported from here, mountutil imports it).
func SocketPath(mountpoint string) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(filepath.Clean(abs)))
	return filepath.Join("/run/tierfs", hex.EncodeToString(sum[:])[:16]+".supervisor.sock"), nil
}

type event struct {
	kind   string // "msg", "exit"
	d      *daemon
	m      message
	fd     [maxFds]int
	status error
}

type daemon struct {
	cmd     *exec.Cmd
	bin     *binary // nil: the supervisor's own
	trial   bool    // bin is on trial: the previous binary takes back if it fails
	sock    int
	pid     int
	gen     int
	started time.Time
	serving bool
	exiting bool
}

type request struct {
	op    string
	reply chan any
	// restart: the binary to start instead (opened and checked), and
	// how long it has to serve.
	bin          *binary
	trialTimeout time.Duration
}

// Run supervises daemons until one exits for good; it returns the exit
// status. The first daemon mounts; the next ones take over.
func Run(c Config) int {
	log := c.Log.With().Str("role", "supervisor").Logger()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	sd := newUnitStore(c.Mountpoint, log)
	if sd.storing() {
		// systemctl restart (the unit's RestartKillSignal=): make way
		// for the next supervisor, leaving the mount (systemd.go).
		signal.Notify(sigs, syscall.SIGUSR1)
	}

	events := make(chan event, 16)
	reqs := make(chan request)
	ln, err := listen(c.Mountpoint, reqs, log)
	if err != nil {
		log.Error().Err(err).Msg("cannot listen for restarts; supervising anyway")
	} else {
		defer ln.close()
	}

	var (
		connFd             = -1
		ringFd             = -1
		initReq, initReply []byte
		mountCfg, ring     []byte
		gen                int
		cur                *daemon
		signalled          bool
		quick              int
		takeovers          int
		pauseFrom          time.Time
		pauses             []float64
		pending            *request
		oldPid             int
		// exe: what daemons are started from (nil: this binary);
		// trial: a binary `tierfs restart --binary` asked for, until
		// one of its daemons serves; trialErr: why it did not.
		exe, trial     *binary
		trialTimeout   time.Duration
		trialDeadline  <-chan time.Time
		trialErr       string
		ready, leaving bool
	)
	defer func() {
		if connFd >= 0 {
			unix.Close(connFd)
		}
		if ringFd >= 0 {
			unix.Close(ringFd)
		}
		exe.close()
		trial.close()
	}()
	if fd, st, ok := sd.adopt(c.Mountpoint, c.Mounted); ok {
		connFd, initReq, initReply, mountCfg, gen = fd, st.Init, st.Reply, st.Mount, st.Gen
		pauseFrom = time.Now()
		log.Info().Int("generation", gen).Msg("systemd kept the connection: taking it over")
	} else if c.Prepare != nil {
		if err := c.Prepare(); err != nil {
			log.Error().Err(err).Msg("cannot mount")
			return 1
		}
	}
	// Every way out but making way for the next supervisor lets the
	// connection go: systemd must not keep it for another.
	release := func(status int) int {
		if !leaving {
			sd.release()
		}
		return status
	}
	start := func() error {
		gen++
		if connFd >= 0 {
			sd.holdGen(gen)
		}
		bin := exe
		if trial != nil {
			bin = trial
		}
		d, err := startDaemon(c, gen, connFd, ringFd, message{Init: initReq, Reply: initReply, Mount: mountCfg, Ring: ring}, bin, events)
		if err != nil && trial != nil {
			// The new binary cannot even start: the previous one
			// takes back.
			log.Error().Err(err).Str("binary", trial.path).Msg("cannot start the new binary; starting the previous one")
			trialErr = fmt.Sprintf("%s: %v", trial.path, err)
			trial.close()
			trial = nil
			d, err = startDaemon(c, gen, connFd, ringFd, message{Init: initReq, Reply: initReply, Mount: mountCfg, Ring: ring}, exe, events)
		}
		if err != nil {
			return err
		}
		d.trial = trial != nil
		cur = d
		ev := log.Info().Int("pid", d.pid).Int("generation", gen).Bool("takeover", connFd >= 0)
		if d.bin != nil {
			ev = ev.Str("binary", d.bin.path)
		}
		ev.Msg("daemon started")
		if d.trial {
			trialDeadline = time.After(trialTimeout)
		}
		return nil
	}
	if err := start(); err != nil {
		log.Error().Err(err).Msg("cannot start the daemon")
		return release(1)
	}
	for {
		select {
		case <-trialDeadline:
			trialDeadline = nil
			if cur != nil && cur.trial && !cur.serving {
				log.Error().Int("pid", cur.pid).Str("binary", cur.bin.path).Dur("timeout", trialTimeout).Msg("the new binary does not serve; killing it, the previous binary takes back")
				trialErr = fmt.Sprintf("%s did not serve within %v", cur.bin.path, trialTimeout)
				// Its own process group (startDaemon): whatever it
				// started goes too.
				syscall.Kill(-cur.pid, syscall.SIGKILL)
			}
		case sig := <-sigs:
			if sig == syscall.SIGUSR1 && connFd >= 0 && sd.fuseStored {
				if leaving || signalled {
					continue
				}
				leaving = true
				sd.notify("STOPPING=1\nSTATUS=making way: the connection stays in systemd's store for the next supervisor")
				log.Info().Msg("systemd restarts the unit: draining the daemon; the mount stays, held by systemd")
				failPending(pending, "systemd restarts the unit")
				pending = nil
				if cur != nil {
					if !cur.serving || send(cur.sock, message{Op: "drain"}, -1) != nil {
						cur.cmd.Process.Kill()
					}
				}
				continue
			}
			if sig == syscall.SIGUSR1 {
				// Nothing kept yet: a restart is a stop.
				sig = syscall.SIGTERM
			}
			if sig != syscall.SIGHUP {
				sd.notify("STOPPING=1")
				// The operator wants the mount gone: the daemon
				// unmounts, and none follows it.
				signalled = true
			}
			if cur != nil {
				cur.cmd.Process.Signal(sig)
			}
		case r := <-reqs:
			switch r.op {
			case "status":
				st := Status{Gen: gen, Takeovers: takeovers, Pauses: pauses}
				if exe != nil {
					st.Binary = exe.path
				}
				if cur != nil {
					st.Pid, st.Started = cur.pid, cur.started
				}
				r.reply <- st
			case "restart":
				refuse := ""
				switch {
				case pending != nil || !pauseFrom.IsZero():
					refuse = "a takeover is already under way"
				case cur == nil || !cur.serving || connFd < 0:
					refuse = "the daemon is not serving yet"
				case signalled || leaving:
					refuse = "the mount is being unmounted"
				}
				if refuse != "" {
					r.bin.close()
					r.reply <- Result{Error: refuse}
					continue
				}
				pending, oldPid, pauseFrom = &r, cur.pid, time.Now()
				trial, trialTimeout, trialErr = r.bin, r.trialTimeout, ""
				if trial != nil {
					log.Info().Str("binary", trial.path).Msg("restart with a new binary asked for")
				}
				log.Info().Int("pid", cur.pid).Msg("restart asked for: draining the daemon")
				if err := send(cur.sock, message{Op: "drain"}, -1); err != nil {
					log.Warn().Err(err).Msg("cannot ask the daemon to drain; killing it")
					cur.cmd.Process.Kill()
				}
			}
		case ev := <-events:
			switch ev.kind {
			case "msg":
				switch ev.m.Op {
				case "conn":
					if connFd >= 0 || ev.fd[0] < 0 {
						closeFds(ev.fd)
						continue
					}
					connFd, initReq, initReply, mountCfg = ev.fd[0], ev.m.Init, ev.m.Reply, ev.m.Mount
					ringFd, ring = ev.fd[1], ev.m.Ring
					log.Info().Int("pid", ev.d.pid).Msg("holding the connection")
					switch {
					case sd.storing() && ringFd >= 0:
						// The store keeps /dev/fuse and the mount's record, not
						// the rings' memory a successor must map.
						log.Warn().Msg("systemd: the unit's store does not keep a supervised io_uring mount; a restart of the unit will lose it")
					case sd.storing():
						st, err := connFacts(c.Mountpoint, connFd, c.Mounted)
						if err != nil {
							log.Warn().Err(err).Msg("systemd: cannot tell the new mount; a restart of the unit will lose it")
							continue
						}
						st.Init, st.Reply, st.Mount = initReq, initReply, mountCfg
						sd.holdConn(connFd, st)
						sd.holdGen(ev.d.gen)
					}
				default:
					closeFds(ev.fd)
				}
				switch ev.m.Op {
				case "serving":
					ev.d.serving = true
					quick = 0
					if ev.d.trial {
						// The new binary serves: it is the one
						// daemons start from now on.
						log.Info().Int("pid", ev.d.pid).Str("binary", ev.d.bin.path).Msg("the new binary serves the mount")
						exe.close()
						exe, trial, trialDeadline = ev.d.bin, nil, nil
						ev.d.trial = false
					}
					if !ready {
						ready = true
						sd.notify("READY=1\n" + statusLine(ev.d, takeovers+boolInt(!pauseFrom.IsZero())))
					} else {
						sd.notify(statusLine(ev.d, takeovers+boolInt(!pauseFrom.IsZero())))
					}
					if !pauseFrom.IsZero() {
						ms := float64(time.Since(pauseFrom).Microseconds()) / 1000
						pauses = append(pauses, ms)
						if len(pauses) > 100 {
							pauses = pauses[1:]
						}
						takeovers++
						log.Info().Int("pid", ev.d.pid).Int("generation", ev.d.gen).Float64("pause_ms", ms).Msg("takeover done: the new daemon serves")
						if pending != nil {
							res := Result{OldPid: oldPid, NewPid: ev.d.pid, Gen: ev.d.gen, PauseMs: ms}
							if ev.d.bin != nil {
								res.Binary = ev.d.bin.path
							}
							if trialErr != "" {
								res.RolledBack, res.Error = true, trialErr+"; the previous binary serves again"
							}
							pending.reply <- res
							pending = nil
						}
						pauseFrom = time.Time{}
					}
				case "exiting":
					ev.d.exiting = true
				case "ready":
					if c.Ready != nil {
						c.Ready()
						c.Ready = nil
					}
				}
			case "exit":
				d := ev.d
				unix.Close(d.sock)
				if d != cur {
					continue
				}
				cur = nil
				status := exitStatus(ev.status)
				switch {
				case leaving && !d.exiting:
					log.Info().Int("pid", d.pid).Int("status", status).Msg("daemon gone; the connection waits in systemd's store for the next supervisor")
					return 0
				case d.exiting || signalled || leaving:
					log.Info().Int("pid", d.pid).Int("status", status).Msg("daemon exited; the mount is gone")
					failPending(pending, "the daemon exited and the mount is gone")
					leaving = false
					return release(status)
				case connFd < 0:
					log.Error().Int("pid", d.pid).Err(ev.status).Msg("daemon died before it mounted")
					failPending(pending, "the daemon died before it mounted")
					return max(status, 1)
				}
				if d.trial && !d.serving {
					// The new binary died before it served: the
					// previous one takes back; its death is not the
					// configuration's, and is not counted.
					if trialErr == "" {
						trialErr = fmt.Sprintf("%s exited before it served (%v)", d.bin.path, ev.status)
					}
					log.Error().Int("pid", d.pid).Str("binary", d.bin.path).Err(ev.status).Msg("the new binary did not take over; starting the previous one")
					trial.close()
					trial, trialDeadline = nil, nil
				} else if !d.serving {
					quick++
				}
				if quick >= maxQuickDeaths {
					log.Error().Int("pid", d.pid).Err(ev.status).Int("tries", quick).Msg("the daemons die before they serve; letting the connection go (the mount aborts)")
					failPending(pending, "the new daemons die before they serve")
					return release(1)
				}
				if pauseFrom.IsZero() {
					pauseFrom = time.Now()
					log.Warn().Int("pid", d.pid).Err(ev.status).Msg("daemon died; starting another on the same connection")
				}
				if err := start(); err != nil {
					log.Error().Err(err).Msg("cannot start a daemon; letting the connection go (the mount aborts)")
					failPending(pending, err.Error())
					return release(1)
				}
			}
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func failPending(p *request, msg string) {
	if p != nil {
		p.reply <- Result{Error: msg}
	}
}

func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}

// startDaemon starts generation gen with its end of a socket pair, sends
// it the start message (with the connection on a takeover) and relays
// what it says and its exit as events.
func startDaemon(c Config, gen, connFd, ringFd int, saved message, bin *binary, events chan<- event) (*daemon, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	theirs := os.NewFile(uintptr(fds[1]), "supervisor")
	defer theirs.Close()
	cmd := c.Command()
	if bin != nil {
		// Started through the descriptor that was checked (its fd 3
		// in the child, which it closes), not through the name.
		cmd.Path = "/proc/self/fd/3"
		cmd.ExtraFiles = append([]*os.File{bin.f}, cmd.ExtraFiles...)
		cmd.Env = append(cmd.Environ(), EnvExeFD+"=3")
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, theirs)
	cmd.Env = append(cmd.Environ(), fmt.Sprintf("%s=%d", EnvFD, 2+len(cmd.ExtraFiles)))
	// Its own process group: a terminal's ^C reaches the supervisor
	// alone, which passes it on once. It dies with the supervisor.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	d := &daemon{cmd: cmd, bin: bin, sock: fds[0], pid: cmd.Process.Pid, gen: gen, started: time.Now()}
	m := message{Op: "start", Gen: gen}
	if connFd >= 0 {
		m.Init, m.Reply, m.Mount, m.Ring = saved.Init, saved.Reply, saved.Mount, saved.Ring
	} else {
		ringFd = -1
	}
	if err := send(d.sock, m, connFd, ringFd); err != nil {
		cmd.Process.Kill()
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			m, fd, err := recv(d.sock)
			if err != nil {
				return // the daemon's end closed: it is gone
			}
			events <- event{kind: "msg", d: d, m: m, fd: fd}
		}
	}()
	go func() {
		err := cmd.Wait()
		// Whatever it said before it died comes first (its "conn").
		<-read
		events <- event{kind: "exit", d: d, status: err}
	}()
	return d, nil
}

// listener is the supervisor's socket: one JSON request per connection
// ({"op":"restart"} or {"op":"status"}), one JSON answer. Root's alone.
type listener struct {
	path string
	ln   net.Listener
}

func listen(mountpoint string, reqs chan<- request, log zerolog.Logger) (*listener, error) {
	path, err := SocketPath(mountpoint)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
		conn.Close()
		return nil, fmt.Errorf("%s is in use: another supervisor serves this mountpoint", path)
	}
	os.Remove(path)
	// Bound in a private directory and renamed into place once 0600.
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".bind-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmpDir)
	if err := os.Chmod(tmpDir, 0o700); err != nil {
		return nil, err
	}
	tmp := filepath.Join(tmpDir, "s")
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, err
	}
	l := &listener{path: path, ln: ln}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go serveConn(conn, reqs, log)
		}
	}()
	return l, nil
}

func serveConn(conn net.Conn, reqs chan<- request, log zerolog.Logger) {
	defer conn.Close()
	if uc, ok := conn.(*net.UnixConn); ok {
		// Root's socket (0600), and root's peer: the file mode can be
		// changed by hand.
		if raw, err := uc.SyscallConn(); err == nil {
			var cred *unix.Ucred
			raw.Control(func(fd uintptr) { cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
			if cred == nil || cred.Uid != 0 {
				json.NewEncoder(conn).Encode(Result{Error: "only root may restart the daemon"})
				return
			}
		}
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return
	}
	var in struct {
		Op        string `json:"op"`
		Binary    string `json:"binary,omitempty"`
		TimeoutMs int64  `json:"timeout_ms,omitempty"`
	}
	if err := json.Unmarshal(line, &in); err != nil || (in.Op != "restart" && in.Op != "status") {
		json.NewEncoder(conn).Encode(Result{Error: fmt.Sprintf("unknown request %q", strings.TrimSpace(string(line)))})
		return
	}
	r := request{op: in.Op, reply: make(chan any, 1), trialTimeout: DefaultTrialTimeout}
	if in.TimeoutMs > 0 {
		r.trialTimeout = time.Duration(in.TimeoutMs) * time.Millisecond
	}
	if in.Op == "restart" && in.Binary != "" {
		// Checked before anything stops: a binary refused here leaves
		// the daemon serving untouched.
		b, err := openBinary(in.Binary)
		if err != nil {
			log.Warn().Err(err).Msg("restart: binary refused")
			json.NewEncoder(conn).Encode(Result{Error: "binary refused: " + err.Error()})
			return
		}
		r.bin = b
	}
	reqs <- r
	json.NewEncoder(conn).Encode(<-r.reply)
}

func (l *listener) close() {
	l.ln.Close()
	os.Remove(l.path)
}

// ask sends one request to the supervisor of mountpoint and decodes its
// answer into out.
func ask(mountpoint string, req any, out any, timeout time.Duration) error {
	path, err := SocketPath(mountpoint)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("no supervisor serves %s (mounted with [mount] supervisor = true?): %w", mountpoint, err)
		}
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return err
	}
	return json.NewDecoder(conn).Decode(out)
}

// RestartOptions shape a restart.
type RestartOptions struct {
	// Binary, if set, is the absolute path of the executable the new
	// daemon runs (an upgrade); it is checked by the supervisor (root's,
	// writable by no one else, no symlink on the way).
	Binary string
	// TrialTimeout is how long the new binary has to serve before the
	// previous one takes back; 0: DefaultTrialTimeout.
	TrialTimeout time.Duration
}

// Restart asks the supervisor of mountpoint to replace its daemon. On a
// rollback (RolledBack) the error says why, and r says which daemon of
// the previous binary serves.
func Restart(mountpoint string, o RestartOptions) (Result, error) {
	var r Result
	req := struct {
		Op        string `json:"op"`
		Binary    string `json:"binary,omitempty"`
		TimeoutMs int64  `json:"timeout_ms,omitempty"`
	}{Op: "restart", Binary: o.Binary, TimeoutMs: o.TrialTimeout.Milliseconds()}
	if err := ask(mountpoint, req, &r, 5*time.Minute); err != nil {
		return r, err
	}
	if r.Error != "" {
		return r, errors.New(r.Error)
	}
	return r, nil
}

// Query asks the supervisor of mountpoint for its status.
func Query(mountpoint string) (Status, error) {
	return QueryWithin(mountpoint, 30*time.Second)
}

// QueryWithin is Query, waiting at most d for the answer.
func QueryWithin(mountpoint string, d time.Duration) (Status, error) {
	var s Status
	err := ask(mountpoint, struct {
		Op string `json:"op"`
	}{"status"}, &s, d)
	return s, err
}
