package control

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// countFDs is the number of descriptors this process holds.
func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// keepAlive sends one request on conn and reads the reply, leaving the
// connection open and idle, as a keep-alive client does.
func keepAlive(t *testing.T, conn net.Conn) {
	t.Helper()
	if _, err := io.WriteString(conn, "GET /v1/status HTTP/1.1\r\nHost: tierfs\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("keep-alive request: %s, close %v", resp.Status, resp.Close)
	}
}

func (l *connLimiter) accepted() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq
}

// Many more idle connections than the cap, kept-alive and silent ones:
// the daemon's side holds no more than the cap of descriptors, and a
// client still gets answers at once (the timeouts are an hour: only the
// cap can save it).
func TestControlSocketFlood(t *testing.T) {
	lim := controlLimits{MaxConns: 8, ReadHeaderTimeout: time.Hour, ReadTimeout: time.Hour, WriteTimeout: time.Hour, IdleTimeout: time.Hour}
	cs := NewServer(&fakeStore{}, nil, "/mnt/kafka", zerolog.Nop())
	sock, cl := serveTest(t, cs, cs.access.privileged, lim, zerolog.Nop())
	c := NewClientAt("/mnt/kafka", sock)
	ctx := context.Background()
	if _, err := c.Status(ctx); err != nil {
		t.Fatal(err)
	}
	base := countFDs(t)

	const flood = 200
	for i := range flood {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { conn.Close() })
		if i%2 == 0 {
			keepAlive(t, conn)
		}
	}
	poll(t, "the daemon to accept the flood", func() (bool, error) {
		n := cl.accepted()
		return n >= 1+flood, fmt.Errorf("%d accepted", n)
	})
	// The flood's own ends are ours too: count them out.
	if held := countFDs(t) - base - flood; held > lim.MaxConns+1 {
		t.Errorf("the daemon's side holds %d descriptors for %d connections; want at most the cap, %d", held, flood, lim.MaxConns)
	}
	if n := cl.open(); n > lim.MaxConns {
		t.Errorf("%d connections held, cap %d", n, lim.MaxConns)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if st, err := c.Status(rctx); err != nil || st.Mountpoint != "/mnt/kafka" {
		t.Errorf("status during the flood: %+v, %v", st, err)
	}
}

// Idle connections, kept-alive or silent since they connected, are
// closed by the daemon after the timeouts.
func TestControlSocketIdleTimeout(t *testing.T) {
	lim := controlLimits{MaxConns: 8, ReadHeaderTimeout: 100 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second, IdleTimeout: 100 * time.Millisecond}
	cs := NewServer(&fakeStore{}, nil, "/mnt/kafka", zerolog.Nop())
	sock, cl := serveTest(t, cs, cs.access.privileged, lim, zerolog.Nop())
	base := countFDs(t)
	var conns []net.Conn
	for i := range 4 {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if i%2 == 0 {
			keepAlive(t, conn)
		}
		conns = append(conns, conn)
	}
	for i, conn := range conns {
		// The deadline is a safety net; the read ends when the daemon
		// closes its side.
		conn.SetReadDeadline(time.Now().Add(waitTimeout))
		if n, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("connection %d: read %d bytes, %v; want EOF (closed by the daemon)", i, n, err)
		}
	}
	poll(t, "the daemon to forget the connections", func() (bool, error) {
		return cl.open() == 0, fmt.Errorf("%d held", cl.open())
	})
	if n := countFDs(t) - base - len(conns); n > 0 {
		t.Errorf("the daemon still holds %d descriptors", n)
	}
}

// When every connection is in a request, one more is answered 503 at
// once, in the protocol's JSON, and closed; it gets in once one ends.
func TestControlSocketBusy(t *testing.T) {
	lim := controlLimits{MaxConns: 2, ReadHeaderTimeout: time.Hour, ReadTimeout: time.Hour, WriteTimeout: time.Hour, IdleTimeout: time.Hour}
	entered, release := make(chan struct{}), make(chan struct{})
	cs := NewServer(&fakeStore{}, nil, "/mnt/kafka", zerolog.Nop())
	slowHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		cs.ServeHTTP(w, r)
	})
	sock, _ := serveTest(t, slowHandler, cs.access.privileged, lim, zerolog.Nop())
	for range 2 {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET /slow HTTP/1.1\r\nHost: tierfs\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		<-entered
	}
	c := NewClientAt("/mnt/kafka", sock)
	ctx := context.Background()
	var ae *APIError
	if _, err := c.Status(ctx); !errors.As(err, &ae) || ae.Code != http.StatusServiceUnavailable || !strings.Contains(ae.Msg, "busy") {
		t.Errorf("status with every connection in a request: %v; want 503, busy", err)
	}
	close(release)
	poll(t, "status to be answered again", func() (bool, error) {
		_, err := c.Status(ctx)
		return err == nil, err
	})
}

// Who loses a connection to a newcomer over the cap.
func TestConnLimiterAdmit(t *testing.T) {
	const root, alice, bob = 0, 1001, 1002
	type held struct {
		uid    uint32
		active bool
	}
	for _, tc := range []struct {
		name     string
		max      int
		held     []held // in accept order
		newcomer uint32
		victim   int // index into held; -1 none
		ok       bool
	}{
		{"room", 4, []held{{alice, false}}, alice, -1, true},
		{"own oldest idle goes", 4, []held{{root, true}, {alice, true}, {alice, false}, {alice, false}}, alice, 2, true},
		{"alice may not take root's quarter", 4, []held{{alice, true}, {alice, true}, {alice, true}}, alice, -1, false},
		{"root displaces the biggest holder", 4, []held{{bob, false}, {alice, false}, {alice, false}, {root, false}}, root, 1, true},
		{"never someone holding fewer", 8, []held{{bob, false}, {alice, true}, {alice, true}, {alice, true}, {root, true}, {root, true}, {root, true}, {root, true}}, alice, -1, false},
		{"nobody displaces root for the others' share", 8, []held{{root, false}, {root, false}, {alice, true}, {bob, true}, {bob, true}, {bob, true}, {bob, true}, {bob, true}}, alice, -1, false},
		{"bob takes from alice holding more", 8, []held{{alice, false}, {alice, false}, {alice, true}, {alice, true}, {alice, true}, {root, true}, {bob, false}, {root, true}}, bob, 0, true},
		{"all in requests", 2, []held{{root, true}, {root, true}}, root, -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &controlAccess{group: -1} // the daemon is root's
			l := newConnLimiter(nil, tc.max, a.privileged, zerolog.Nop())
			var cs []*limitedConn
			for _, h := range tc.held {
				c := &limitedConn{l: l, peer: peer{uid: h.uid, gid: h.uid}, priv: a.privileged(peer{uid: h.uid})}
				if _, ok := l.admit(c); !ok {
					t.Fatalf("setting up: %+v refused", h)
				}
				c.active = h.active
				cs = append(cs, c)
			}
			p := peer{uid: tc.newcomer, gid: tc.newcomer}
			v, ok := l.admit(&limitedConn{l: l, peer: p, priv: a.privileged(p)})
			want := (*limitedConn)(nil)
			if tc.victim >= 0 {
				want = cs[tc.victim]
			}
			if ok != tc.ok || v != want {
				got := -1
				for i, c := range cs {
					if c == v {
						got = i
					}
				}
				t.Errorf("admit: victim %d, ok %v; want %d, %v", got, ok, tc.victim, tc.ok)
			}
			if n := l.open(); n > tc.max {
				t.Errorf("%d held, cap %d", n, tc.max)
			}
		})
	}
}

func TestControlConnCap(t *testing.T) {
	for soft, want := range map[uint64]int{64: 4, 256: 8, 1024: 32, 2048: 64, 20000: 64, 1 << 62: 64} {
		if got := controlConnCap(soft); got != want {
			t.Errorf("cap for RLIMIT_NOFILE %d: %d, want %d", soft, got, want)
		}
	}
	if lim := defaultControlLimits(); lim.MaxConns < minControlConns || lim.MaxConns > maxControlConns ||
		lim.IdleTimeout <= 0 || lim.ReadHeaderTimeout <= 0 || lim.ReadTimeout <= 0 || lim.WriteTimeout < RequestTimeout {
		t.Errorf("default limits %+v", lim)
	}
}

// net/http's complaints reach the structured log.
func TestControlServerErrorLog(t *testing.T) {
	var buf bytes.Buffer
	httpErrorLog(zerolog.New(&buf)).Printf("http: Accept error: %v; retrying in 5ms", "too many open files")
	if got := buf.String(); !strings.Contains(got, `"level":"warn"`) || !strings.Contains(got, `"message":"http: Accept error: too many open files; retrying in 5ms"`) {
		t.Errorf("log line %q", got)
	}
}
