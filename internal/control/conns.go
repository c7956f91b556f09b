package control

// The control socket's connections: how many, whose, and for how long.
// Without bounds, idle keep-alive connections took the daemon to its
// descriptor limit, and then every open(2) on the mount failed with
// EMFILE (issue 15, item 7).
//
// Lock discipline: connLimiter.mu guards its conns, seq and lastRefusal,
// and each limitedConn's active; it is never held while closing a
// connection or writing to one.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// controlLimits bound the control socket's connections.
type controlLimits struct {
	// MaxConns is the most connections held at once; callers that are
	// not privileged share at most three quarters of them, so that the
	// last quarter stays for root and control_group.
	MaxConns int
	// ReadHeaderTimeout and ReadTimeout bound reading a request (they
	// carry no bodies); WriteTimeout the handling and the reply;
	// IdleTimeout a kept-alive connection between requests.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
}

// Connection caps, from the soft RLIMIT_NOFILE: a 32nd of it, between
// these. A request holds its connection and, for a moment, a few more
// descriptors (stats through the mount, the store's directory walks), so
// the socket's share stays a small part of the limit and the rest is the
// mount's own: at 1024, 32 connections; from 2048 up (Go raises the soft
// limit to the hard one at start, usually far above), 64.
const (
	minControlConns = 4
	maxControlConns = 64
)

func controlConnCap(softNofile uint64) int {
	return int(min(max(softNofile/32, minControlConns), maxControlConns))
}

// defaultControlLimits: local clients send their request at once and
// poll moves with short requests (GET /v1/job), each given 30 s by the
// client (RequestTimeout), so nothing legitimate needs longer: a move
// runs in the engine, never in a request.
func defaultControlLimits() controlLimits {
	soft := uint64(1024)
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		soft = rl.Cur
	}
	return controlLimits{
		MaxConns:          controlConnCap(soft),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      RequestTimeout,
		IdleTimeout:       10 * time.Second,
	}
}

// maxControlHeaderBytes bounds a request's header (a path of PATH_MAX,
// escaped, fits), and so the memory one connection can pin.
const maxControlHeaderBytes = 64 << 10

// serveControl serves h on ln within lim. priv says which callers are
// privileged. The returned channel gets Serve's result.
func serveControl(ln net.Listener, h http.Handler, lim controlLimits, priv func(peer) bool, log zerolog.Logger) (*http.Server, *connLimiter, <-chan error) {
	cl := newConnLimiter(ln, lim.MaxConns, priv, log)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    maxControlHeaderBytes,
		ErrorLog:          httpErrorLog(log),
		ConnState:         cl.setState,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if lc, ok := c.(*limitedConn); ok {
				return context.WithValue(ctx, peerKey{}, lc.peer)
			}
			return ctx
		},
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(cl) }()
	return srv, cl, done
}

// httpErrorLog sends net/http's own complaints (accept errors, bad
// requests, panics) to the structured log instead of raw stderr.
func httpErrorLog(l zerolog.Logger) *log.Logger {
	return log.New(errorLogWriter{l}, "", 0)
}

type errorLogWriter struct{ log zerolog.Logger }

func (w errorLogWriter) Write(p []byte) (int, error) {
	w.log.Warn().Str("component", "control").Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// connLimiter is a listener that holds at most max connections. Over the
// cap, a new connection takes the place of one not being answered (idle
// between requests, or still sending its first header), taken from
// whoever holds the most connections, never from someone holding fewer
// than the newcomer's user; when there is none it is answered 503 and
// closed. So a flood of idle connections costs its sender its own older
// ones, and the socket never holds more than max + maxRefusing
// descriptors.
type connLimiter struct {
	net.Listener
	max, maxUnpriv int
	priv           func(peer) bool
	log            zerolog.Logger

	// refusing holds a token per connection being answered 503.
	refusing chan struct{}

	mu    sync.Mutex
	conns map[*limitedConn]struct{}
	seq   uint64
	// lastRefusal rate-limits the warning about refused connections.
	lastRefusal time.Time
}

// maxRefusing bounds the connections over the cap being answered at
// once; more are closed unanswered.
const maxRefusing = 4

func newConnLimiter(ln net.Listener, n int, priv func(peer) bool, log zerolog.Logger) *connLimiter {
	n = max(n, 1)
	return &connLimiter{
		Listener: ln, max: n, maxUnpriv: max(n-n/4, 1), priv: priv, log: log,
		refusing: make(chan struct{}, maxRefusing),
		conns:    map[*limitedConn]struct{}{},
	}
}

// limitedConn is an accepted connection and what the limiter knows of it.
type limitedConn struct {
	net.Conn
	l      *connLimiter
	peer   peer
	priv   bool
	seq    uint64 // accept order
	active bool   // being answered (http.StateActive); under l.mu
	once   sync.Once
}

func (c *limitedConn) Close() error {
	c.l.forget(c)
	return c.Conn.Close()
}

// Accept implements net.Listener.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uc, ok := c.(*net.UnixConn)
		var p peer
		if ok {
			p, err = peerOf(uc)
		} else {
			err = fmt.Errorf("not a unix socket connection: %T", c)
		}
		if err != nil {
			l.log.Warn().Err(err).Msg("control socket: cannot tell who connected; closing the connection")
			c.Close()
			continue
		}
		lc := &limitedConn{Conn: c, l: l, peer: p, priv: l.priv(p)}
		victim, ok := l.admit(lc)
		if victim != nil {
			victim.Conn.Close()
		}
		if !ok {
			l.noteRefusal(p)
			select {
			case l.refusing <- struct{}{}:
				go func() {
					defer func() { <-l.refusing }()
					refuse(uc)
				}()
			default:
				uc.Close()
			}
			continue
		}
		return lc, nil
	}
}

// admit takes lc in if there is room or a connection it may displace;
// that one (forgotten already) is returned for the caller to close.
func (l *connLimiter) admit(lc *limitedConn) (victim *limitedConn, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	lc.seq = l.seq
	held := map[uint32]int{}
	unpriv := 0
	for c := range l.conns {
		held[c.peer.uid]++
		if !c.priv {
			unpriv++
		}
	}
	needUnpriv := !lc.priv && unpriv >= l.maxUnpriv
	if len(l.conns) < l.max && !needUnpriv {
		l.conns[lc] = struct{}{}
		return nil, true
	}
	mine := held[lc.peer.uid]
	for c := range l.conns {
		switch {
		case c.active:
		case c.peer.uid != lc.peer.uid && held[c.peer.uid] <= mine:
			// Nobody loses a connection to someone holding as many.
		case needUnpriv && c.priv:
			// Displacing root would not make room among the others.
		case victim == nil, held[c.peer.uid] > held[victim.peer.uid],
			held[c.peer.uid] == held[victim.peer.uid] && c.seq < victim.seq:
			victim = c
		}
	}
	if victim == nil {
		return nil, false
	}
	delete(l.conns, victim)
	l.conns[lc] = struct{}{}
	return victim, true
}

func (l *connLimiter) forget(c *limitedConn) {
	c.once.Do(func() {
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	})
}

// setState is the http.Server's ConnState hook.
func (l *connLimiter) setState(nc net.Conn, s http.ConnState) {
	c, ok := nc.(*limitedConn)
	if !ok {
		return
	}
	switch s {
	case http.StateClosed, http.StateHijacked:
		l.forget(c)
	default:
		l.mu.Lock()
		c.active = s == http.StateActive
		l.mu.Unlock()
	}
}

// open is the number of connections held.
func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// refusedReply is what a connection over the cap gets before it is
// closed: the protocol's JSON error, so that the client can say why.
var refusedReply = func() string {
	body := `{"error":"the control socket is busy: every connection is in a request; try again"}` + "\n"
	return fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}()

// refuse answers c 503 and closes it. It reads the request first: a
// client reading a reply to a request it has not sent yet takes it for
// garbage. The deadline bounds a peer that sends nothing.
func refuse(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := http.ReadRequest(bufio.NewReader(io.LimitReader(c, maxControlHeaderBytes))); err != nil {
		return
	}
	if _, err := io.WriteString(c, refusedReply); err == nil {
		c.CloseWrite()
	}
}

// noteRefusal logs a refused connection: a warning at most every ten
// seconds, so that a flood does not flood the log too.
func (l *connLimiter) noteRefusal(p peer) {
	l.mu.Lock()
	now := time.Now()
	warn := now.Sub(l.lastRefusal) >= 10*time.Second
	if warn {
		l.lastRefusal = now
	}
	l.mu.Unlock()
	ev := l.log.Debug()
	if warn {
		ev = l.log.Warn()
	}
	ev.Int("max", l.max).Uint32("uid", p.uid).Int32("pid", p.pid).Msg("control socket busy: a connection over the cap was refused")
}
