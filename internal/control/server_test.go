package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
	"github.com/tierfs/tierfs/tiering"
)

// fakeStore is a Store with canned answers.
type fakeStore struct{}

func (f *fakeStore) Status() tiering.Status {
	return tiering.Status{
		Tiers: []tiering.TierStatus{
			{Name: "fast", Type: "nvme", Path: "/t/fast", CapacityBytes: 100, UsedBytes: 40, FreeBytes: 60, Files: 2},
			{Name: "slow", Type: "hdd", Path: "/t/slow", CapacityBytes: 1000, Files: 0},
		},
		OpenFiles: 1,
		Moves:     tiering.MoveStats{Started: 4, Moved: 3, Failed: 1, BytesMoved: 4096, LastErrors: []string{"boom"}},
	}
}

func (f *fakeStore) List(rel string, recursive bool) ([]tiering.Entry, error) {
	switch rel {
	case "", ".":
		out := []tiering.Entry{{Path: "a", Size: 1, Tier: "fast"}, {Path: "d", Tier: "fast", IsDir: true}}
		if recursive {
			out = append(out, tiering.Entry{Path: "d/b", Size: 2, Tier: "slow"})
		}
		return out, nil
	case "empty":
		return nil, nil
	case "perm":
		return nil, unix.EACCES
	case "a", "d/b", "big", "bad":
		return []tiering.Entry{{Path: rel, Size: 1000, Tier: "fast"}}, nil
	case "d":
		return []tiering.Entry{{Path: "d/b", Size: 2, Tier: "slow"}}, nil
	}
	return nil, unix.ENOENT
}

// serveFake serves a Server for a fakeStore on a socket in a
// temporary directory (no root needed) and returns a client for it.
func serveFake(t *testing.T) (*Client, *fakeStore) {
	t.Helper()
	store := &fakeStore{}
	cs := NewServer(store, nil, "/mnt/kafka", zerolog.Nop())
	sock, _ := serveTest(t, cs, cs.access.privileged, defaultControlLimits(), zerolog.Nop())
	return NewClientAt("/mnt/kafka", sock), store
}

// serveTest serves h as the daemon does (serveControl: its limits, its
// callers' credentials) on a socket in a temporary directory, which
// needs no root; the test's own user is the daemon's, so privileged.
func serveTest(t *testing.T, h http.Handler, priv func(peer) bool, lim controlLimits, log zerolog.Logger) (sock string, cl *connLimiter) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv, cl, done := serveControl(ln, h, lim, priv, log)
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return sock, cl
}

func TestControlServer(t *testing.T) {
	c, store := serveFake(t)
	ctx := context.Background()

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mountpoint != "/mnt/kafka" || !reflect.DeepEqual(st.Status, store.Status()) {
		t.Errorf("status = %+v", st)
	}

	ents, err := c.List(ctx, "", true)
	if err != nil || len(ents) != 3 || ents[2].Path != "d/b" || !ents[1].IsDir {
		t.Errorf("ls -r = %+v, %v", ents, err)
	}
	ents, err = c.List(ctx, "", false)
	if err != nil || len(ents) != 2 {
		t.Errorf("ls = %+v, %v", ents, err)
	}
	// An empty directory is [], not null.
	var raw []byte
	if err := c.Do(ctx, http.MethodGet, "/v1/ls", map[string][]string{"path": {"empty"}}, (*rawJSON)(&raw)); err != nil || strings.TrimSpace(string(raw)) != "[]" {
		t.Errorf("ls of an empty directory: %q, %v", raw, err)
	}

	var ae *APIError
	for _, tc := range []struct {
		name string
		err  error
		code int
		msg  string
	}{
		{"ls missing", func() error { _, err := c.List(ctx, "nope", false); return err }(), 404, "ls nope: no such file or directory"},
		{"ls perm", func() error { _, err := c.List(ctx, "perm", false); return err }(), 403, "permission denied"},
		{"ls bad recursive", c.Do(ctx, http.MethodGet, "/v1/ls", map[string][]string{"recursive": {"maybe"}}, nil), 400, "recursive"},
		// Moves go through the engine's queue (migrate), never around it.
		{"POST move", c.Do(ctx, http.MethodPost, "/v1/move", map[string][]string{"path": {"a"}, "tier": {"slow"}}, nil), 404, "no such endpoint: POST /v1/move"},
		{"GET migrate", c.Do(ctx, http.MethodGet, "/v1/migrate", nil, nil), 405, "Method Not Allowed"},
		{"POST status", c.Do(ctx, http.MethodPost, "/v1/status", nil, nil), 405, "Method Not Allowed"},
		{"unknown", c.Do(ctx, http.MethodGet, "/v2/status", nil, nil), 404, "no such endpoint: GET /v2/status"},
		{"migrate without an engine", func() error { _, err := c.Migrate(ctx, "a", "slow"); return err }(), 503, "no policy engine"},
	} {
		if tc.code == 0 {
			if tc.err != nil {
				t.Errorf("%s: %v", tc.name, tc.err)
			}
			continue
		}
		if !errors.As(tc.err, &ae) || ae.Code != tc.code || !strings.Contains(ae.Msg, tc.msg) {
			t.Errorf("%s: %v (%#v); want %d with %q", tc.name, tc.err, ae, tc.code, tc.msg)
		}
	}
	// Error bodies are JSON with an "error" field, and say so.
	resp, err := c.http.Get("http://tierfs/v1/nope")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Type") != "application/json" || !strings.HasPrefix(string(body), `{"error":`) {
		t.Errorf("error reply: %s %q", resp.Header.Get("Content-Type"), body)
	}
	resp, err = c.http.Get("http://tierfs/v1/migrate")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Allow") == "" {
		t.Errorf("405 without an Allow header")
	}
}

// rawJSON keeps a reply's body as it is.
type rawJSON []byte

func (r *rawJSON) UnmarshalJSON(b []byte) error {
	*r = append((*r)[:0], b...)
	return nil
}

func TestControlClientNoDaemon(t *testing.T) {
	c := NewClientAt("/mnt/nothing", filepath.Join(t.TempDir(), "none.sock"))
	_, err := c.Status(context.Background())
	var nd *NoDaemonError
	if !errors.As(err, &nd) || err.Error() != "no tierfs daemon answers for /mnt/nothing (is it mounted?)" {
		t.Errorf("status without a daemon: %v", err)
	}
}

func TestControlSocketPath(t *testing.T) {
	a, err := SocketPath("/mnt/kafka")
	if err != nil {
		t.Fatal(err)
	}
	// sha256("/mnt/kafka")
	if want := "/run/tierfs/"; !strings.HasPrefix(a, want) || len(a) != len(want)+16+len(".sock") || !strings.HasSuffix(a, ".sock") {
		t.Errorf("socket path %q", a)
	}
	for _, p := range []string{"/mnt/kafka/", "/mnt//kafka", "/mnt/x/../kafka"} {
		if b, _ := SocketPath(p); b != a {
			t.Errorf("socket path of %q = %q, want %q (same mountpoint)", p, b, a)
		}
	}
	if b, _ := SocketPath("/mnt/kafka2"); b == a {
		t.Errorf("two mountpoints share a socket")
	}
	wd, _ := os.Getwd()
	rel, _ := SocketPath(".")
	if abs, _ := SocketPath(wd); rel != abs {
		t.Errorf("a relative mountpoint is not made absolute")
	}
}

// Listen sets the mode and group before the socket appears,
// refuses a live socket, replaces a stale one, and removes its own bind
// directory and one a daemon killed while binding left.
func TestListenControl(t *testing.T) {
	testenv.Root(t, "creating sockets in /run/tierfs")
	mp := filepath.Join(t.TempDir(), "mnt") // never mounted: only names the socket
	h := NewServer(&fakeStore{}, nil, mp, zerolog.Nop())
	sock, err := SocketPath(mp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(SocketDir, 0o755); err != nil {
		t.Fatal(err)
	}
	killed, err := os.MkdirTemp(SocketDir, bindPrefix(sock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(killed) })
	c, err := Listen(mp, h, 0o640, 4242)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			c.Close(context.Background())
		}
	})
	var st unix.Stat_t
	if err := unix.Lstat(c.path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Mode&0o7777 != 0o640 || st.Gid != 4242 {
		t.Errorf("socket mode %o gid %d, want socket 0640 gid 4242", st.Mode, st.Gid)
	}
	if left, _ := filepath.Glob(filepath.Join(SocketDir, bindPrefix(c.path)+"*")); len(left) != 0 {
		t.Errorf("temporary bind directories left: %v", left)
	}
	cl, _ := NewClient(mp)
	if s, err := cl.Status(context.Background()); err != nil || s.Mountpoint != mp {
		t.Errorf("status over the socket: %+v, %v", s, err)
	}
	if _, err := Listen(mp, h, 0o600, -1); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second listener on a live socket: %v", err)
	}
	if err := c.Close(context.Background()); err != nil {
		t.Error(err)
	}
	closed = true
	if _, err := os.Lstat(c.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after Close: %v", err)
	}

	// A stale socket (its listener gone) is replaced.
	ln, err := net.Listen("unix", c.path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	c2, err := Listen(mp, h, 0o600, -1)
	if err != nil {
		t.Fatalf("replacing a stale socket: %v", err)
	}
	if err := unix.Lstat(c2.path, &st); err != nil || st.Mode&0o7777 != 0o600 {
		t.Errorf("replaced socket: mode %o, %v", st.Mode, err)
	}
	c2.Close(context.Background())

	// Something that is not a socket is left alone.
	if err := os.WriteFile(c.path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(c.path)
	if _, err := Listen(mp, h, 0o600, -1); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("a regular file at the socket path: %v", err)
	}
}

func TestErrnoStatus(t *testing.T) {
	for err, want := range map[error]int{
		unix.ENOENT:                      404,
		fmt.Errorf("x: %w", unix.ENOENT): 404,
		tiering.ErrBusy:                  409,
		syscall.EMLINK:                   409,
		unix.EINVAL:                      400,
		unix.ENOSPC:                      507,
		errors.New("other"):              500,
	} {
		if got := errnoStatus(err); got != want {
			t.Errorf("errnoStatus(%v) = %d, want %d", err, got, want)
		}
	}
}
