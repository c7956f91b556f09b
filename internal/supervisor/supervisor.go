// Package supervisor keeps a FUSE connection alive across daemons: with
// [mount] supervisor, `tierfs mount` becomes a small process that starts
// the serving daemon as its child, holds the /dev/fuse descriptor the
// daemon mounted with (passed over a unix socket, SCM_RIGHTS) and, when
// the daemon dies or is asked to make way (`tierfs restart`), starts a new
// one and hands it the same descriptor with the INIT the kernel and the
// first daemon agreed on. The kernel never sees the daemon go: requests
// wait for the new one, which asks for those the old one had read and
// not answered (internal/fusedev).
//
// The supervisor does nothing else (no configuration, no tiers), so that
// it has nothing to crash on; when it dies its daemon is killed with it
// (PR_SET_PDEATHSIG) and the connection aborts, as a daemon's death did
// before.
package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// EnvFD names the child's end of the supervisor's socket, in the child's
// environment.
const EnvFD = "TIERFS_SUPERVISOR_FD"

// message is one datagram between the supervisor and its daemon.
type message struct {
	// Daemon → supervisor: "conn" (with the descriptor: the mount is
	// made and INIT answered), "serving", "ready" (its control socket
	// listens too), "exiting" (the connection is
	// gone: do not start another), "drained". Supervisor → daemon:
	// "start" (with the descriptor on a takeover), "drain".
	Op    string `json:"op"`
	Gen   int    `json:"gen,omitempty"`
	Init  []byte `json:"init,omitempty"`
	Reply []byte `json:"reply,omitempty"`
	// Mount is the first daemon's [mount] table as it mounted with
	// (JSON): its successors serve the connection with the same, so that
	// they negotiate what INIT did whatever the file says now.
	Mount []byte `json:"mount,omitempty"`
	// Ring is the layout of the io_uring entries' memory (fuseuring.
	// Layout, JSON) when the connection is served over io_uring; the
	// memory itself is the message's second descriptor.
	Ring []byte `json:"ring,omitempty"`
	Pid  int    `json:"pid,omitempty"`
}

// maxMessage bounds a datagram: an INIT request and its answer are a few
// hundred bytes.
const maxMessage = 64 << 10

// send sends m with the descriptors fds (those below 0 left out, so the
// first that is not is the connection).
func send(sock int, m message, fds ...int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	var rights []int
	for _, fd := range fds {
		if fd >= 0 {
			rights = append(rights, fd)
		}
	}
	if len(rights) > 0 {
		oob = unix.UnixRights(rights...)
	}
	return unix.Sendmsg(sock, b, oob, nil, 0)
}

// maxFds is how many descriptors a message carries at most: the
// connection and the io_uring entries' memory.
const maxFds = 2

// recv reads one message and the descriptors it carries (-1 for those
// it does not: fd[0] the connection, fd[1] the rings' memory).
func recv(sock int) (message, [maxFds]int, error) {
	none := [maxFds]int{-1, -1}
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return message{}, none, err
		}
		if n == 0 {
			return message{}, none, errors.New("closed")
		}
		fd, got := none, 0
		if oobn > 0 {
			cms, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err == nil {
				for _, cm := range cms {
					if fds, err := unix.ParseUnixRights(&cm); err == nil {
						for _, f := range fds {
							if got < maxFds {
								fd[got] = f
								got++
							} else {
								unix.Close(f)
							}
						}
					}
				}
			}
		}
		var m message
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			closeFds(fd)
			return message{}, none, fmt.Errorf("bad message from the supervisor's peer: %w", err)
		}
		return m, fd, nil
	}
}

func closeFds(fds [maxFds]int) {
	for _, f := range fds {
		if f >= 0 {
			unix.Close(f)
		}
	}
}

// Child is a daemon's side of its supervisor.
type Child struct {
	sock  int
	gen   int
	fd    int // the connection, on a takeover; -1 for a fresh mount
	init  []byte
	reply []byte
	mount []byte
	// ringFd and ring: the io_uring entries' memory and its layout, on
	// a takeover of a connection served over io_uring.
	ringFd int
	ring   []byte

	mu    sync.Mutex
	drain func()
}

var (
	childOnce sync.Once
	child     *Child
	childErr  error
)

// Current is the daemon's supervisor, nil when the daemon runs on its own
// (no EnvFD in its environment). The first call reads the supervisor's
// "start" message.
func Current() (*Child, error) {
	childOnce.Do(func() {
		v := os.Getenv(EnvFD)
		if v == "" {
			return
		}
		// Nothing this process starts is a daemon of ours.
		os.Unsetenv(EnvFD)
		// Started from a descriptor (restart --binary): the process
		// runs; the descriptor is not to leak into what it opens.
		if v := os.Getenv(EnvExeFD); v != "" {
			os.Unsetenv(EnvExeFD)
			if fd, err := strconv.Atoi(v); err == nil && fd > 2 {
				unix.Close(fd)
			}
		}
		sock, err := strconv.Atoi(v)
		if err != nil {
			childErr = fmt.Errorf("%s=%q: %w", EnvFD, v, err)
			return
		}
		unix.CloseOnExec(sock)
		m, fd, err := recv(sock)
		if err != nil {
			childErr = fmt.Errorf("the supervisor's start message: %w", err)
			return
		}
		if m.Op != "start" {
			closeFds(fd)
			childErr = fmt.Errorf("the supervisor sent %q, want start", m.Op)
			return
		}
		child = &Child{sock: sock, gen: m.Gen, fd: fd[0], init: m.Init, reply: m.Reply, mount: m.Mount, ringFd: fd[1], ring: m.Ring}
		go child.listen()
	})
	return child, childErr
}

// Gen is this daemon's generation: 1 for the daemon that mounted, one
// more for each takeover of the connection.
func (c *Child) Gen() int { return c.gen }

// Takeover gives the connection to serve and what INIT was, when this
// daemon takes over from a predecessor.
func (c *Child) Takeover() (fd int, init, reply []byte, ok bool) {
	return c.fd, c.init, c.reply, c.fd >= 0
}

// Ring is the io_uring entries' memory and its layout, on a takeover of
// a connection served over io_uring (fd -1 otherwise).
func (c *Child) Ring() (fd int, layout []byte) { return c.ringFd, c.ring }

// MountConfig is the [mount] table the first daemon mounted with (JSON),
// on a takeover.
func (c *Child) MountConfig() []byte { return c.mount }

// Conn hands the supervisor the connection this daemon mounted, once
// INIT is answered, with the [mount] table it mounted with and, when
// requests come over io_uring, the rings' entry memory (ringFd, -1 if
// none) and its layout: from now on the connection outlives this
// process, and a successor can answer what the rings held.
func (c *Child) Conn(fd int, init, reply, mount []byte, ringFd int, ring []byte) error {
	return send(c.sock, message{Op: "conn", Init: init, Reply: reply, Mount: mount, Ring: ring}, fd, ringFd)
}

// Serving tells the supervisor that requests are being answered.
func (c *Child) Serving() error {
	return send(c.sock, message{Op: "serving", Pid: os.Getpid()})
}

// Ready tells the supervisor that the mount serves and the daemon's
// control socket listens.
func (c *Child) Ready() error {
	return send(c.sock, message{Op: "ready"}, -1)
}

// Exiting tells the supervisor that the connection is gone (unmounted):
// no daemon is to follow this one.
func (c *Child) Exiting() error {
	return send(c.sock, message{Op: "exiting"})
}

// OnDrain sets what stops serving when the supervisor asks this daemon
// to make way: it returns once no request is being answered; the daemon
// then exits.
func (c *Child) OnDrain(f func()) {
	c.mu.Lock()
	c.drain = f
	c.mu.Unlock()
}

func (c *Child) listen() {
	for {
		m, fd, err := recv(c.sock)
		closeFds(fd)
		if err != nil {
			return // the supervisor is gone; PR_SET_PDEATHSIG ends us
		}
		if m.Op != "drain" {
			continue
		}
		c.mu.Lock()
		f := c.drain
		c.mu.Unlock()
		if f != nil {
			f()
		}
		send(c.sock, message{Op: "drained"})
		// What this daemon held dies with it, as on a crash: the
		// successor's recovery is the mount's (a move under way is
		// rolled back or forward), and nothing unanswered is lost.
		os.Exit(0)
	}
}
