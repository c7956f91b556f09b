package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/tiering"
)

// RequestTimeout bounds one request of a command to a daemon.
const RequestTimeout = 30 * time.Second

// Client talks to one daemon.
type Client struct {
	mountpoint string
	socket     string
	http       *http.Client
}

func NewClient(mountpoint string) (*Client, error) {
	sock, err := SocketPath(mountpoint)
	if err != nil {
		return nil, err
	}
	return NewClientAt(mountpoint, sock), nil
}

// NewClientAt talks to the daemon for mountpoint on the socket at
// sock.
func NewClientAt(mountpoint, sock string) *Client {
	return NewClientDial(mountpoint, sock, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	})
}

// NewClientDial talks to the daemon for mountpoint over the connections
// dial makes to its socket sock (tests connect as other users).
func NewClientDial(mountpoint, sock string, dial func(context.Context) (net.Conn, error)) *Client {
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		DisableKeepAlives: true,
	}
	return &Client{mountpoint: mountpoint, socket: sock, http: &http.Client{Transport: tr}}
}

// NoDaemonError says that nothing listens on the control socket.
type NoDaemonError struct {
	mountpoint string
	err        error
}

func (e *NoDaemonError) Error() string {
	return fmt.Sprintf("no tierfs daemon answers for %s (is it mounted?)", e.mountpoint)
}

func (e *NoDaemonError) Unwrap() error { return e.err }

// APIError is an error reply from the daemon.
type APIError struct {
	Code int
	Msg  string
}

func (e *APIError) Error() string { return e.Msg }

// Mountpoint is the mount whose daemon c talks to.
func (c *Client) Mountpoint() string { return c.mountpoint }

// Do sends a request and decodes the JSON reply into out.
func (c *Client) Do(ctx context.Context, method, path string, q url.Values, out any) error {
	u := "http://tierfs" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return dialError(c, err)
		}
		return fmt.Errorf("talking to the tierfs daemon for %s: %w", c.mountpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return fmt.Errorf("reading the reply of the tierfs daemon for %s: %w", c.mountpoint, err)
	}
	if resp.StatusCode/100 != 2 {
		var e ErrorResponse
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s: %s", resp.Status, bytesTrim(body))
		}
		return &APIError{Code: resp.StatusCode, Msg: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("bad reply from the tierfs daemon for %s: %w", c.mountpoint, err)
	}
	return nil
}

func bytesTrim(b []byte) string {
	const max = 200
	if len(b) > max {
		b = b[:max]
	}
	return string(b)
}

func (c *Client) Status(ctx context.Context) (StatusResponse, error) {
	var st StatusResponse
	err := c.Do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

func (c *Client) List(ctx context.Context, rel string, recursive bool) ([]tiering.Entry, error) {
	q := url.Values{"path": {rel}}
	if recursive {
		q.Set("recursive", "1")
	}
	var ents []tiering.Entry
	err := c.Do(ctx, http.MethodGet, "/v1/ls", q, &ents)
	return ents, err
}

// Migrate queues a move of rel to tier.
func (c *Client) Migrate(ctx context.Context, rel, tier string) (JobResponse, error) {
	var j JobResponse
	err := c.Do(ctx, http.MethodPost, "/v1/migrate", url.Values{"path": {rel}, "tier": {tier}}, &j)
	return j, err
}

// Job reports a queued move's progress.
func (c *Client) Job(ctx context.Context, id uint64) (JobResponse, error) {
	var j JobResponse
	err := c.Do(ctx, http.MethodGet, "/v1/job", url.Values{"id": {strconv.FormatUint(id, 10)}}, &j)
	return j, err
}

// Pin keeps rel on tier, moving it there.
func (c *Client) Pin(ctx context.Context, rel, tier string) (PinResponse, error) {
	var p PinResponse
	err := c.Do(ctx, http.MethodPost, "/v1/pin", url.Values{"path": {rel}, "tier": {tier}}, &p)
	return p, err
}

// Unpin lets the policy move rel again.
func (c *Client) Unpin(ctx context.Context, rel string) error {
	return c.Do(ctx, http.MethodPost, "/v1/unpin", url.Values{"path": {rel}}, nil)
}

// Reload makes the daemon re-read its configuration file.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var r ReloadResult
	err := c.Do(ctx, http.MethodPost, "/v1/reload", nil, &r)
	return r, err
}

// dialError says why the client could not connect to the daemon's
// control socket: refused by the socket's mode (or its directory's), or
// nobody listening.
func dialError(c *Client, err error) error {
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return &DeniedError{mountpoint: c.mountpoint, socket: c.socket, err: err}
	}
	return &NoDaemonError{mountpoint: c.mountpoint, err: err}
}

// DeniedError says that the control socket refused this user.
type DeniedError struct {
	mountpoint, socket string
	err                error
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("permission denied on the control socket %s of %s: its mode and group, the mount's "+
		"[mount] control_mode and control_group (by default root's alone), keep this user out; e.g. "+
		"control_mode = \"0660\" with control_group = \"kafka\" lets the members of kafka in, from the next mount",
		e.socket, e.mountpoint)
}

func (e *DeniedError) Unwrap() error { return e.err }
