package main

// End-to-end tests: they build the tierfs binary, mount for real with it
// and talk to the daemon with its own client commands. Mounting needs
// root and /dev/fuse; those tests skip without them.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/testenv"
	"github.com/tierfs/tierfs/mountutil"
	"github.com/tierfs/tierfs/tiering"
)

// tierfsBin is the binary under test, built by TestMain.
var tierfsBin string

// raceEnabled is set by race_test.go when the tests run with -race; the
// binary is then built with -race too.
var raceEnabled bool

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tierfs-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tierfsBin = filepath.Join(dir, "tierfs")
	args := []string{"build", "-o", tierfsBin}
	if raceEnabled {
		args = append(args, "-race")
		// The race runtime sleeps a second at exit by default; the
		// tests run the binary dozens of times.
		os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	}
	build := exec.Command("go", append(args, ".")...)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building tierfs: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireFUSE skips tests that mount when this process cannot.
func requireFUSE(t *testing.T) {
	t.Helper()
	testenv.FUSE(t)
}

const waitTimeout = testenv.WaitTimeout

var poll = testenv.Poll

// env is a tierfs setup: two tier directories, a mountpoint and a
// configuration naming them.
type env struct {
	base, fast, slow, mnt, config string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	base := t.TempDir()
	e := &env{
		base:   base,
		fast:   filepath.Join(base, "fast"),
		slow:   filepath.Join(base, "slow"),
		mnt:    filepath.Join(base, "mnt"),
		config: filepath.Join(base, "tierfs.toml"),
	}
	for _, d := range []string{e.fast, e.slow, e.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, e.config, fmt.Sprintf(`# test configuration
[[tier]]
name = "fast"
type = "nvme"
path = %q
capacity = "64MiB"

[[tier]]
name = "slow"
type = "hdd"
path = %q

[log]
level = "debug"

`+testMetrics, e.fast, e.slow))
	return e
}

// testMetrics gives each test daemon a port of its own: they run in
// parallel, and the default port would be taken by the first.
const testMetrics = "[metrics]\nlisten = \"127.0.0.1:0\"\n"

// metricsUnlessIn is testMetrics, unless the configuration's tail has a
// [metrics] table of its own.
func metricsUnlessIn(tail string) string {
	if strings.Contains(tail, "[metrics]") {
		return ""
	}
	return testMetrics
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer collects a subprocess's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemon is a running `tierfs mount`.
type daemonProc struct {
	cmd    *exec.Cmd
	mnt    string
	stderr *syncBuffer
	done   chan struct{}
	err    error // of Wait, once done is closed
}

// startDaemon runs `tierfs mount` (with flags, if any) and waits until
// the mount is up and the control socket answers. Cleanup kills it and
// unmounts, whatever happened.
func startDaemon(t *testing.T, e *env, flags ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{mnt: e.mnt, stderr: &syncBuffer{}, done: make(chan struct{})}
	args := append(append([]string{"mount", "--config", e.config}, flags...), e.mnt)
	d.cmd = exec.Command(tierfsBin, args...)
	d.cmd.Stdout = d.stderr
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		if !d.exited() {
			// Let it unmount and remove its socket; kill it if it
			// does not.
			d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.done:
			case <-time.After(waitTimeout):
				d.cmd.Process.Kill()
				<-d.done
			}
		}
		if mounted(e.mnt) {
			if err := mountutil.Unmount(e.mnt); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		if strings.Contains(d.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("the daemon reported a data race:\n%s", d.stderr.String())
		}
		if t.Failed() {
			t.Logf("daemon output:\n%s", d.stderr.String())
		}
	})
	poll(t, "the mount on "+e.mnt, func() (bool, error) {
		if d.exited() {
			t.Fatalf("tierfs mount exited early (%v):\n%s", d.err, d.stderr.String())
		}
		return mounted(e.mnt), nil
	})
	c, err := control.NewClient(e.mnt)
	if err != nil {
		t.Fatal(err)
	}
	poll(t, "the control socket", func() (bool, error) {
		if d.exited() {
			t.Fatalf("tierfs mount exited early (%v):\n%s", d.err, d.stderr.String())
		}
		_, err := c.Status(context.Background())
		return err == nil, err
	})
	// The daemon logs "mounted" just after its control socket answers.
	poll(t, "the 'mounted' log line", func() (bool, error) {
		return strings.Contains(d.stderr.String(), `"message":"mounted"`), nil
	})
	return d
}

func (d *daemonProc) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// waitExit waits for the daemon to exit and returns its exit status.
func (d *daemonProc) waitExit(t *testing.T) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(waitTimeout):
		t.Fatalf("tierfs mount did not exit within %v:\n%s", waitTimeout, d.stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(d.err, &ee) {
		return ee.ExitCode()
	}
	if d.err != nil {
		t.Fatal(d.err)
	}
	return 0
}

// mounted reports whether a tierfs mount is on mnt, per mountinfo.
func mounted(mnt string) bool {
	ms, err := mountutil.Mounts()
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.Mountpoint == mnt && m.IsTierfs() {
			return true
		}
	}
	return false
}

// tierfs runs the binary in dir ("" for the current one) and returns its
// output and exit status.
func tierfs(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	cmd := exec.Command(tierfsBin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("tierfs %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// mustTierfs runs the binary and fails the test unless it exits 0.
func mustTierfs(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, errOut, code := tierfs(t, dir, args...)
	if code != 0 {
		t.Fatalf("tierfs %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func statusJSON(t *testing.T, mnt string) (control.StatusResponse, map[string]tiering.TierStatus) {
	t.Helper()
	out := mustTierfs(t, "", "status", "--json", mnt)
	var st control.StatusResponse
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	byName := map[string]tiering.TierStatus{}
	for _, ts := range st.Tiers {
		byName[ts.Name] = ts
	}
	return st, byName
}

func lsJSON(t *testing.T, dir string, args ...string) map[string]lsEntry {
	t.Helper()
	out := mustTierfs(t, dir, append([]string{"ls", "--json"}, args...)...)
	var ents []lsEntry
	if err := json.Unmarshal([]byte(out), &ents); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}
	m := map[string]lsEntry{}
	for _, e := range ents {
		if _, dup := m[e.Path]; dup {
			t.Errorf("ls --json lists %s twice", e.Path)
		}
		m[e.Path] = e
	}
	return m
}

func tierXattr(t *testing.T, path string) string {
	t.Helper()
	buf := make([]byte, 256)
	n, err := unix.Getxattr(path, tiering.XattrTier, buf)
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", path, tiering.XattrTier, err)
	}
	return string(buf[:n])
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMountEndToEnd(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	d := startDaemon(t, e)

	// The control socket is root's only.
	sock, err := control.SocketPath(e.mnt)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket %s has mode %v, want a socket with 0600", sock, fi.Mode())
	}

	// Files through the mount.
	const (
		segLog   = "topic-0/00000000000000000000.log"
		segIndex = "topic-0/00000000000000000000.index"
		meta     = "meta.properties"
	)
	if err := os.Mkdir(filepath.Join(e.mnt, "topic-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	logData := randomBytes(t, 300_000)
	if err := os.WriteFile(filepath.Join(e.mnt, segLog), logData, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.mnt, segIndex), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(e.mnt, segIndex), 10<<20); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(e.mnt, meta), "broker.id=1\n")

	// status --json
	st, tiers := statusJSON(t, e.mnt)
	if st.Mountpoint != e.mnt {
		t.Errorf("status mountpoint = %q, want %q", st.Mountpoint, e.mnt)
	}
	if len(st.Tiers) != 2 || st.Tiers[0].Name != "fast" || st.Tiers[1].Name != "slow" {
		t.Fatalf("status tiers = %+v, want fast then slow", st.Tiers)
	}
	if f := tiers["fast"]; f.Files != 3 || f.UsedBytes < int64(len(logData)) || f.CapacityBytes != 64<<20 ||
		f.Type != "nvme" || f.Path != e.fast || f.FreeBytes <= 0 || f.FreeBytes > f.CapacityBytes {
		t.Errorf("fast tier status = %+v; want 3 files, at least %d bytes used of 64MiB", f, len(logData))
	}
	if s := tiers["slow"]; s.Files != 0 || s.Type != "hdd" || s.Path != e.slow {
		t.Errorf("slow tier status = %+v; want no files", s)
	}
	// The JSON field names are an interface.
	raw := mustTierfs(t, "", "status", "--json", e.mnt)
	for _, k := range []string{`"mountpoint"`, `"tiers"`, `"name"`, `"type"`, `"path"`, `"capacity_bytes"`, `"used_bytes"`, `"free_bytes"`, `"files"`} {
		if !strings.Contains(raw, k) {
			t.Errorf("status --json lacks %s:\n%s", k, raw)
		}
	}
	// A subdirectory finds the daemon of its mount.
	if st2, _ := statusJSON(t, filepath.Join(e.mnt, "topic-0")); st2.Mountpoint != e.mnt {
		t.Errorf("status of a subdirectory: mountpoint %q, want %q", st2.Mountpoint, e.mnt)
	}
	// The table.
	human := mustTierfs(t, "", "status", e.mnt)
	for _, want := range []string{"TIER", "TYPE", "CAPACITY", "USE%", "FILES", "64.0 MiB", "Moves: 0 moved (0 B), 0 skipped, 0 failed, 0 in flight; 0 spills."} {
		if !strings.Contains(human, want) {
			t.Errorf("status output lacks %q:\n%s", want, human)
		}
	}
	if !tableHasRow(human, "fast", "nvme", e.fast, "64.0", "MiB") || !tableHasRow(human, "slow", "hdd", e.slow) {
		t.Errorf("status table lacks a tier row:\n%s", human)
	}

	// ls --json -r: files only, paths relative to the mount root.
	want := map[string]lsEntry{
		segLog:   {Path: segLog, Size: int64(len(logData)), Tier: "fast"},
		segIndex: {Path: segIndex, Size: 10 << 20, Tier: "fast"},
		meta:     {Path: meta, Size: int64(len("broker.id=1\n")), Tier: "fast"},
	}
	checkLs := func(got map[string]lsEntry, want map[string]lsEntry) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("ls listed %v, want %v", got, want)
		}
		for p, w := range want {
			if got[p] != w {
				t.Errorf("ls %s = %+v, want %+v", p, got[p], w)
			}
		}
	}
	checkLs(lsJSON(t, "", "-r", e.mnt), want)
	// Not recursive: the directory is left out of the JSON.
	checkLs(lsJSON(t, "", e.mnt), map[string]lsEntry{meta: want[meta]})
	// Relative paths, flags after them, several paths.
	checkLs(lsJSON(t, filepath.Join(e.mnt, "topic-0"), ".", "-r"), map[string]lsEntry{segLog: want[segLog], segIndex: want[segIndex]})
	checkLs(lsJSON(t, e.mnt, "topic-0/00000000000000000000.log", meta), map[string]lsEntry{segLog: want[segLog], meta: want[meta]})
	// The table: directories end in "/".
	table := mustTierfs(t, "", "ls", "-r", e.mnt)
	if !tableHasRow(table, "TIER", "SIZE", "PATH") || !tableHasRow(table, "fast", "-", "topic-0/") ||
		!tableHasRow(table, "fast", "10.0", "MiB", segIndex) || !tableHasRow(table, "fast", "12", "B", meta) {
		t.Errorf("ls -r table:\n%s", table)
	}
	// Errors.
	if _, errOut, code := tierfs(t, "", "ls", filepath.Join(e.mnt, "nope")); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("ls of a missing file: exit %d, stderr %q; want 1 and 'no such file'", code, errOut)
	}
	if _, errOut, code := tierfs(t, "", "ls", e.base); code != 1 || !strings.Contains(errOut, "not inside a tierfs mount") {
		t.Errorf("ls outside tierfs: exit %d, stderr %q; want 1 and 'not inside a tierfs mount'", code, errOut)
	}

	// The tier is an xattr too.
	if got := tierXattr(t, filepath.Join(e.mnt, segLog)); got != "fast" {
		t.Errorf("%s on %s = %q, want fast", tiering.XattrTier, segLog, got)
	}

	// A move over the control socket, queued as `tierfs migrate` does.
	c, err := control.NewClient(e.mnt)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := migrateWait(t, c, segLog, "slow"); err != nil {
		t.Fatalf("move: %v", err)
	}
	got := lsJSON(t, "", "-r", e.mnt)
	if got[segLog].Tier != "slow" || got[segLog].Size != int64(len(logData)) || got[meta].Tier != "fast" {
		t.Errorf("after the move, ls = %+v; want %s on slow", got, segLog)
	}
	if got := tierXattr(t, filepath.Join(e.mnt, segLog)); got != "slow" {
		t.Errorf("%s after the move = %q, want slow", tiering.XattrTier, got)
	}
	if b, err := os.ReadFile(filepath.Join(e.mnt, segLog)); err != nil || !bytes.Equal(b, logData) {
		t.Errorf("the moved file reads back different (err %v)", err)
	}
	if _, err := os.Stat(filepath.Join(e.slow, "data", segLog)); err != nil {
		t.Errorf("the moved file is not on the slow tier's directory: %v", err)
	}
	st, tiers = statusJSON(t, e.mnt)
	if tiers["fast"].Files != 2 || tiers["slow"].Files != 1 || tiers["slow"].UsedBytes <= 0 {
		t.Errorf("after the move, tiers = %+v; want 2 files on fast, 1 on slow", st.Tiers)
	}
	if st.Moves.Moved != 1 || st.Moves.Failed != 0 || st.Moves.BytesMoved < int64(len(logData)) {
		t.Errorf("after the move, moves = %+v; want 1 moved of %d bytes", st.Moves, len(logData))
	}
	// Move errors have codes and JSON bodies.
	for _, tc := range []struct {
		path, tier string
		code       int
		msg        string
	}{
		{segLog, "tape", http.StatusBadRequest, `no tier named "tape"`},
		{"missing.log", "slow", http.StatusNotFound, "no such file"},
		{"topic-0", "slow", http.StatusBadRequest, "is a directory"},
		{"", "slow", http.StatusBadRequest, "path is required"},
	} {
		_, err := c.Migrate(ctx, tc.path, tc.tier)
		var ae *control.APIError
		if !errors.As(err, &ae) || ae.Code != tc.code || !strings.Contains(ae.Msg, tc.msg) {
			t.Errorf("move %q to %q: %v (%#v); want %d and %q", tc.path, tc.tier, err, ae, tc.code, tc.msg)
		}
	}
	var ae *control.APIError
	if err := c.Do(ctx, http.MethodGet, "/v1/migrate", nil, nil); !errors.As(err, &ae) || ae.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/migrate: %v; want 405", err)
	}
	// No move outside the engine's queue, pins and max_rate.
	if err := c.Do(ctx, http.MethodPost, "/v1/move", url.Values{"path": {segLog}, "tier": {"fast"}}, nil); !errors.As(err, &ae) || ae.Code != http.StatusNotFound {
		t.Errorf("POST /v1/move: %v; want 404", err)
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/nope", nil, nil); !errors.As(err, &ae) || ae.Code != http.StatusNotFound || !strings.Contains(ae.Msg, "no such endpoint") {
		t.Errorf("GET /v1/nope: %v; want 404", err)
	}
	if _, err := c.List(ctx, "missing", false); !errors.As(err, &ae) || ae.Code != http.StatusNotFound {
		t.Errorf("ls of a missing path over the socket: %v; want 404", err)
	}

	// check accepts the configuration, and refuses it for a mountpoint
	// inside a tier.
	if out := mustTierfs(t, "", "check", "--config", e.config, e.mnt); !strings.Contains(out, `name = "fast"`) || !strings.Contains(out, `segment_size`) {
		t.Errorf("check printed:\n%s", out)
	}
	if _, errOut, code := tierfs(t, "", "check", "--config", e.config, filepath.Join(e.fast, "sub")); code != 1 || !strings.Contains(errOut, "tier[0].path") {
		t.Errorf("check with a mountpoint inside a tier: exit %d, %q", code, errOut)
	}

	// A second mount on the live mountpoint is refused, and leaves the
	// first alone.
	if _, errOut, code := tierfs(t, "", "mount", "--config", e.config, e.mnt); code != 1 || !strings.Contains(errOut, "already mounted") {
		t.Errorf("mount on a mounted mountpoint: exit %d, stderr %q; want 1 and 'already mounted'", code, errOut)
	}
	if _, err := c.Status(ctx); err != nil {
		t.Errorf("the daemon stopped answering after a refused second mount: %v", err)
	}

	// status of a directory with no daemon.
	if _, errOut, code := tierfs(t, "", "status", e.base); code != 1 || !strings.Contains(errOut, "no tierfs daemon answers for "+e.base+" (is it mounted?)") {
		t.Errorf("status without a daemon: exit %d, stderr %q", code, errOut)
	}

	// SIGHUP reloads, and is not fatal.
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll(t, "the SIGHUP log line", func() (bool, error) {
		return strings.Contains(d.stderr.String(), "configuration reloaded"), nil
	})

	// SIGTERM unmounts and exits 0.
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.waitExit(t); code != 0 {
		t.Fatalf("tierfs mount exited %d after SIGTERM:\n%s", code, d.stderr.String())
	}
	if mounted(e.mnt) {
		t.Errorf("%s is still mounted after the daemon exited", e.mnt)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the control socket is still there after exit: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(e.fast, "data", meta)); err != nil || string(b) != "broker.id=1\n" {
		t.Errorf("%s on the fast tier after unmount: %q, %v", meta, b, err)
	}
	// The log: JSON lines (stderr is no terminal), "mounted" and
	// "exiting".
	var sawMounted, sawExit bool
	sc := bufio.NewScanner(strings.NewReader(d.stderr.String()))
	for sc.Scan() {
		var l struct {
			Level, Message, Mountpoint string
			Tiers                      []string
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		switch l.Message {
		case "mounted":
			sawMounted = l.Level == "info" && l.Mountpoint == e.mnt && strings.Join(l.Tiers, ",") == "fast,slow"
		case "exiting":
			sawExit = l.Level == "info" && l.Mountpoint == e.mnt
		}
	}
	if !sawMounted || !sawExit {
		t.Errorf("the log lacks the mounted/exiting lines (%v, %v):\n%s", sawMounted, sawExit, d.stderr.String())
	}
}

// migrateWait queues a move of rel to tier as `tierfs migrate --wait`
// does and waits for it to end; it returns the move's error.
func migrateWait(t *testing.T, c *control.Client, rel, tier string) error {
	t.Helper()
	ctx := context.Background()
	j, err := c.Migrate(ctx, rel, tier)
	if err != nil {
		return err
	}
	poll(t, "the move of "+rel+" to "+tier, func() (bool, error) {
		j, err = c.Job(ctx, j.ID)
		return err == nil && j.Finished, err
	})
	if j.State != control.JobDone {
		return fmt.Errorf("move %s to %s: %s: %s", rel, tier, j.State, j.Error)
	}
	return nil
}

// tableHasRow reports whether a line of out starts with the fields given.
func tableHasRow(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(fields) && strings.Join(f[:len(fields)], " ") == strings.Join(fields, " ") {
			return true
		}
	}
	return false
}

// A file held open keeps the mount busy: SIGTERM detaches it lazily, so
// the mountpoint is free at once, and the daemon serves the open file
// until it is closed, then exits 0.
func TestMountBusyUnmount(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	d := startDaemon(t, e)

	f, err := os.Create(filepath.Join(e.mnt, "open.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("before\n"); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	poll(t, "the busy mount to be detached", func() (bool, error) {
		if d.exited() {
			t.Fatalf("tierfs exited while a file was open (%v):\n%s", d.err, d.stderr.String())
		}
		return !mounted(e.mnt), nil
	})
	// Still served through the open descriptor.
	if _, err := f.WriteString("after\n"); err != nil {
		t.Errorf("write to the open file after the detach: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if code := d.waitExit(t); code != 0 {
		t.Fatalf("tierfs exited %d:\n%s", code, d.stderr.String())
	}
	if b, err := os.ReadFile(filepath.Join(e.fast, "data", "open.log")); err != nil || string(b) != "before\nafter\n" {
		t.Errorf("open.log on the fast tier: %q, %v", b, err)
	}
	if !strings.Contains(d.stderr.String(), "detaching lazily") {
		t.Errorf("the log does not say the mount was detached lazily:\n%s", d.stderr.String())
	}
}

// A daemon killed with SIGKILL leaves a stale mount and socket: mount
// refuses the stale mountpoint with advice, status says nobody answers,
// and once the mount is cleared a new daemon replaces the socket.
func TestMountStale(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	d := startDaemon(t, e)
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	d.waitExit(t)
	// Over io_uring the kernel lets go of the connection a moment after
	// the process is reaped: its rings are torn down by a kernel worker.
	poll(t, "the mount to go stale after SIGKILL", func() (bool, error) {
		st, _, err := mountutil.Inspect(e.mnt)
		return st == mountutil.Stale, err
	})
	_, errOut, code := tierfs(t, "", "mount", "--config", e.config, e.mnt)
	if code != 1 || !strings.Contains(errOut, "stale") || !strings.Contains(errOut, "umount") {
		t.Errorf("mount on a stale mountpoint: exit %d, stderr %q; want 1 and advice", code, errOut)
	}
	if _, errOut, code := tierfs(t, "", "status", e.mnt); code != 1 || !strings.Contains(errOut, "no tierfs daemon answers for "+e.mnt) {
		t.Errorf("status of a stale mount: exit %d, stderr %q", code, errOut)
	}
	sock, _ := control.SocketPath(e.mnt)
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("SIGKILL should have left the socket file: %v", err)
	}
	if err := mountutil.Unmount(e.mnt); err != nil {
		t.Fatal(err)
	}
	d2 := startDaemon(t, e)
	if st, _ := statusJSON(t, e.mnt); st.Mountpoint != e.mnt {
		t.Errorf("status after the remount: %+v", st)
	}
	if err := d2.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := d2.waitExit(t); code != 0 {
		t.Errorf("exit %d after SIGINT", code)
	}
	if mounted(e.mnt) {
		t.Errorf("still mounted after SIGINT")
	}
}

// check reports a bad configuration with file, line and key, and exits 1.
func TestCheck(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if out := mustTierfs(t, "", "check", "--config", e.config); !strings.Contains(out, "[[tier]]") || !strings.Contains(out, `level = "debug"`) {
		t.Errorf("check printed:\n%s", out)
	}
	bad := filepath.Join(e.base, "bad.toml")
	writeFile(t, bad, fmt.Sprintf("[[tier]]\nname = \"fast\"\ntype = \"floppy\"\npath = %q\n", e.fast))
	out, errOut, code := tierfs(t, "", "check", "--config", bad)
	if code != 1 || !strings.Contains(errOut, bad+":3: tier[0].type") || out != "" {
		t.Errorf("check of a bad type: exit %d, stdout %q, stderr %q; want 1 and %s:3: tier[0].type", code, out, errOut, bad)
	}
	writeFile(t, bad, "[policy]\nmigrate_threshold = 0.5\nmigrate_thresold = 0.5\n")
	if _, errOut, code := tierfs(t, "", "check", "--config", bad); code != 1 || !strings.Contains(errOut, "migrate_thresold") {
		t.Errorf("check of an unknown key: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := tierfs(t, "", "check", "--config", filepath.Join(e.base, "missing.toml")); code != 1 || !strings.Contains(errOut, "missing.toml") {
		t.Errorf("check of a missing file: exit %d, stderr %q", code, errOut)
	}
	// mount refuses it the same way, before touching the mountpoint.
	if _, errOut, code := tierfs(t, "", "mount", "--config", bad, e.mnt); code != 1 || !strings.Contains(errOut, "migrate_thresold") {
		t.Errorf("mount with a bad config: exit %d, stderr %q", code, errOut)
	}
	if mounted(e.mnt) {
		t.Errorf("a mount with a bad config mounted")
	}
}

// The command line: usage, help, unknown commands, missing arguments.
func TestUsage(t *testing.T) {
	t.Parallel()
	if out := mustTierfs(t, "", "help"); !strings.Contains(out, "tierfs mount --config FILE") || !strings.Contains(out, "tierfs ls [--json] [-r] PATH...") ||
		!strings.Contains(out, "tierfs migrate --to TIER [--wait] PATH...") || !strings.Contains(out, "tierfs reload MOUNTPOINT") {
		t.Errorf("help:\n%s", out)
	}
	_, errOut, code := tierfs(t, "", "frobnicate")
	if code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) || !strings.Contains(errOut, "Usage:") {
		t.Errorf("unknown command: exit %d, stderr %q", code, errOut)
	}
	if _, _, code := tierfs(t, ""); code != 2 {
		t.Errorf("no command: exit %d, want 2", code)
	}
	for _, c := range []string{"mount", "check", "status", "ls", "migrate", "pin", "unpin", "reload", "version"} {
		out, errOut, code := tierfs(t, "", c, "-h")
		if code != 0 || !strings.Contains(out+errOut, "Usage: tierfs "+c) {
			t.Errorf("%s -h: exit %d, output %q", c, code, out+errOut)
		}
		out, _, code = tierfs(t, "", "help", c)
		if code != 0 || !strings.Contains(out, "Usage: tierfs "+c) {
			t.Errorf("help %s: exit %d, output %q", c, code, out)
		}
	}
	for _, args := range [][]string{
		{"mount", "/mnt"},                         // no --config
		{"mount", "--config", "x.toml"},           // no mountpoint
		{"check"},                                 // no --config
		{"status"},                                // no mountpoint
		{"status", "/a", "/b"},                    // two
		{"ls", "--bogus", "/a"},                   // unknown flag
		{"version", "extra"},                      // arguments
		{"check", "--config", "x.toml", "a", "b"}, // two mountpoints
		{"migrate", "/a"},                         // no --to
		{"migrate", "--to", "slow"},               // no path
		{"pin", "/a"},                             // no --tier
		{"pin", "--tier", "fast"},                 // no path
		{"unpin"},                                 // no path
		{"reload"},                                // no mountpoint
		{"reload", "/a", "/b"},                    // two
	} {
		if _, errOut, code := tierfs(t, "", args...); code != 2 || !strings.Contains(errOut, "Usage: tierfs "+args[0]) {
			t.Errorf("tierfs %s: exit %d, stderr %q; want 2 and the usage", strings.Join(args, " "), code, errOut)
		}
	}
	if out := mustTierfs(t, "", "version"); !strings.HasPrefix(out, "tierfs ") {
		t.Errorf("version: %q", out)
	}
}

// Unmounted from outside (umount), the daemon cleans up and exits 0.
func TestMountExternalUnmount(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	d := startDaemon(t, e)
	sock, _ := control.SocketPath(e.mnt)
	if err := unix.Unmount(e.mnt, 0); err != nil {
		t.Fatal(err)
	}
	if code := d.waitExit(t); code != 0 {
		t.Fatalf("tierfs exited %d after an external unmount:\n%s", code, d.stderr.String())
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the control socket is still there after exit: %v", err)
	}
	if !strings.Contains(d.stderr.String(), `"reason":"unmounted"`) {
		t.Errorf("the exit log line does not say why:\n%s", d.stderr.String())
	}
}

// A pmem tier has a pool that fills at mount; status shows it, and a
// segment created through the mount takes a slot.
func TestStatusShowsPMemPool(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	conf, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	conf = []byte(strings.Replace(string(conf), `type = "nvme"`, `type = "pmem"`, 1) +
		"\n[pmem]\npool_ratio = 0.5\nsegment_size = \"4MiB\"\n")
	writeFile(t, e.config, string(conf))
	startDaemon(t, e)
	// 0.5 of the 64 MiB tier in 4 MiB slots, filled in the background.
	poll(t, "the pool to fill", func() (bool, error) {
		_, tiers := statusJSON(t, e.mnt)
		p := tiers["fast"].Pool
		if p == nil {
			return false, fmt.Errorf("no pool in status: %+v", tiers["fast"])
		}
		return p.TargetSlots == 8 && p.FreeSlots == 8, fmt.Errorf("pool %+v", *p)
	})
	if err := os.Mkdir(filepath.Join(e.mnt, "topic-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.mnt, "topic-0", "00000000000000000000.log"), []byte("records"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, tiers := statusJSON(t, e.mnt)
	if p := tiers["fast"].Pool; p.UsedBytes != 4<<20 {
		t.Errorf("pool after a segment was created: %+v, want 4 MiB taken", *p)
	}
	if fi, err := os.Stat(filepath.Join(e.mnt, "topic-0", "00000000000000000000.log")); err != nil || fi.Size() != 7 {
		t.Errorf("segment through the mount: %v, %v; want 7 bytes", fi, err)
	}
	human := mustTierfs(t, "", "status", e.mnt)
	if !strings.Contains(human, "PMem pool on fast: ") || !strings.Contains(human, "4.0 MiB taken by segments since mount") {
		t.Errorf("status output lacks the pool line:\n%s", human)
	}
}
