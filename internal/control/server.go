package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/policy/engine"
	"github.com/tierfs/tierfs/tiering"
)

// Store is what the control server needs of a *tiering.Store.
type Store interface {
	Status() tiering.Status
	List(rel string, recursive bool) ([]tiering.Entry, error)
}

var _ Store = (*tiering.Store)(nil)

// Policy is what the control server needs of the policy engine
// and the daemon's configuration.
type Policy interface {
	Migrate(rel, tier string) (*engine.Job, error)
	Pin(rel, tier string) (*engine.Job, error)
	Unpin(rel string) error
	Status() PolicyStatus
	Reload() (ReloadResult, error)
}

// jobRecord is a job the control server handed out an id for.
type jobRecord struct {
	id   uint64
	job  *engine.Job
	size int64 // the file's size when queued: the total until the copy starts
	// by holds the uids that queued it, who alone (and the privileged)
	// may follow it; under jobTable.mu.
	by map[uint32]bool
}

// maxJobRecords bounds the finished jobs remembered for GET /v1/job.
const maxJobRecords = 4096

// jobTable numbers the jobs queued over the socket.
type jobTable struct {
	mu    sync.Mutex
	next  uint64
	byID  map[uint64]*jobRecord
	ids   map[*engine.Job]uint64
	order []uint64
}

// add records j, queued by uid (once: a move already queued keeps its
// id).
func (t *jobTable) add(j *engine.Job, size int64, uid uint32) *jobRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID == nil {
		t.byID, t.ids = map[uint64]*jobRecord{}, map[*engine.Job]uint64{}
	}
	if id, ok := t.ids[j]; ok {
		r := t.byID[id]
		r.by[uid] = true
		return r
	}
	t.next++
	r := &jobRecord{id: t.next, job: j, size: size, by: map[uint32]bool{uid: true}}
	t.byID[r.id], t.ids[j] = r, r.id
	t.order = append(t.order, r.id)
	if len(t.order) > maxJobRecords {
		// Forget the oldest finished jobs.
		keep := t.order[:0]
		drop := len(t.order) - maxJobRecords
		for _, id := range t.order {
			if fin, _ := t.byID[id].job.Finished(); fin && drop > 0 {
				delete(t.ids, t.byID[id].job)
				delete(t.byID, id)
				drop--
				continue
			}
			keep = append(keep, id)
		}
		t.order = keep
	}
	return r
}

func (t *jobTable) get(id uint64) *jobRecord {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

// queuedBy reports whether uid queued the job r.
func (t *jobTable) queuedBy(r *jobRecord, uid uint32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return r.by[uid]
}

// Server answers the control protocol for one mount.
type Server struct {
	store      Store
	policy     Policy // nil: the policy endpoints answer 503
	mountpoint string
	log        zerolog.Logger
	mux        *http.ServeMux
	jobs       jobTable
	// Requests, when set, reports the mount's FUSE transport.
	Requests func() *RequestsStatus
	// Daemon, when set, is the daemon status reports.
	Daemon *DaemonStatus
	// access judges each caller (control_access.go).
	access *controlAccess
}

func NewServer(store Store, pol Policy, mountpoint string, log zerolog.Logger) *Server {
	s := &Server{store: store, policy: pol, mountpoint: mountpoint, log: log, mux: http.NewServeMux(), access: defaultAccess()}
	s.mux.HandleFunc("GET /v1/status", s.handleStatus)
	s.mux.HandleFunc("GET /v1/ls", s.handleLs)
	s.mux.HandleFunc("POST /v1/migrate", s.withPolicy(s.handleMigrate))
	s.mux.HandleFunc("GET /v1/job", s.withPolicy(s.handleJob))
	s.mux.HandleFunc("POST /v1/pin", s.withPolicy(s.handlePin))
	s.mux.HandleFunc("POST /v1/unpin", s.withPolicy(s.handleUnpin))
	s.mux.HandleFunc("POST /v1/reload", s.withPolicy(s.handleReload))
	return s
}

// SetAccess lets callers other than root in: the members of group (gid;
// -1 for none) may do everything, and, when the mount lets other users
// in (allowOther), others what they could do through the mount. An error
// says the mount could not be looked at: then only privileged callers
// get answers about paths.
func (s *Server) SetAccess(group int, groupName string, allowOther bool) error {
	s.access.group, s.access.groupName, s.access.allowOther = group, groupName, allowOther
	v, err := newMountView(s.mountpoint)
	if err != nil {
		return err
	}
	s.access.mount = v
	return nil
}

// withPolicy answers 503 when the daemon runs no policy engine.
func (s *Server) withPolicy(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.policy == nil {
			writeError(w, http.StatusServiceUnavailable, "this daemon runs no policy engine")
			return
		}
		h(w, r)
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := callerOf(r.Context()); !ok {
		// Served without the connLimiter: nobody to judge, so no answer.
		writeError(w, http.StatusForbidden, "permission denied: the daemon cannot tell who is asking")
		return
	}
	// The mux answers unknown paths and wrong methods in plain text;
	// wrap those in the protocol's JSON.
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		for k, v := range rec.header {
			if k == "Allow" {
				w.Header()[k] = v
			}
		}
		code := rec.code
		if code == 0 {
			code = http.StatusNotFound
		}
		msg := http.StatusText(code)
		if code == http.StatusNotFound {
			msg = "no such endpoint: " + r.Method + " " + r.URL.Path
		}
		writeError(w, code, msg)
		return
	}
	// r.URL.Query() drops what does not parse: /v1/ls?path=%zz would
	// list the root.
	if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
		writeError(w, http.StatusBadRequest, "bad query: "+err.Error())
		return
	}
	h.ServeHTTP(w, r)
}

// statusRecorder captures the status code and headers of the mux's own
// error replies.
type statusRecorder struct {
	header http.Header
	code   int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(p []byte) (int, error) { return len(p), nil }
func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

// caller is the request's peer, and whether it may do everything.
func (s *Server) caller(r *http.Request) (peer, bool) {
	p, _ := callerOf(r.Context())
	return p, s.access.privileged(p)
}

// privilegedOnly answers 403 unless the caller is privileged; what says
// what it may not do.
func (s *Server) privilegedOnly(w http.ResponseWriter, r *http.Request, what string) bool {
	p, priv := s.caller(r)
	if priv {
		return true
	}
	who := "root"
	if s.access.group >= 0 {
		who = fmt.Sprintf("root and the members of %s (mount.control_group)", s.access.groupName)
	}
	writeError(w, http.StatusForbidden, fmt.Sprintf("permission denied: only %s may %s (the caller is %s)", who, what, p))
	return false
}

// accessStatus is the reply code for an error from a pathCheck.
func accessStatus(err error) int {
	var fe *forbiddenError
	switch {
	case errors.As(err, &fe):
		return http.StatusForbidden
	case errors.Is(err, errNoMount):
		return http.StatusServiceUnavailable
	}
	return errnoStatus(err)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st := StatusResponse{Mountpoint: s.mountpoint, Status: s.store.Status()}
	if s.policy != nil {
		ps := s.policy.Status()
		st.Policy = &ps
	}
	if s.Requests != nil {
		st.Requests = s.Requests()
	}
	st.Daemon = s.Daemon
	if p, priv := s.caller(r); !priv {
		s.redactStatus(&st, p)
	}
	writeJSON(w, http.StatusOK, st)
}

// redactStatus leaves a caller that is not privileged the daemon-wide
// figures and the files it could see through the mount. Where the tiers
// lie on disk, the error texts (they name files) and the configuration
// file are root's business.
func (s *Server) redactStatus(st *StatusResponse, p peer) {
	st.Tiers = slices.Clone(st.Tiers)
	for i := range st.Tiers {
		st.Tiers[i].Path = ""
	}
	st.Moves.LastErrors = nil
	if st.Policy == nil {
		return
	}
	ps := *st.Policy
	chk := s.access.paths(p)
	visible := func(js []engine.JobStatus) []engine.JobStatus {
		var out []engine.JobStatus
		for _, j := range js {
			if chk.visible(j.Path) {
				out = append(out, j)
			}
		}
		return out
	}
	ps.Queued, ps.InFlight = visible(ps.Queued), visible(ps.InFlight)
	var pins map[string]string
	for path, tier := range ps.Pins {
		if chk.visible(path) {
			if pins == nil {
				pins = map[string]string{}
			}
			pins[path] = tier
		}
	}
	ps.Pins, ps.PlanErrors, ps.Config = pins, nil, ""
	st.Policy = &ps
}

func (s *Server) handleLs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rel := q.Get("path")
	recursive, err := parseBoolParam(q.Get("recursive"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "recursive: "+err.Error())
		return
	}
	// A caller that is not privileged gets what `ls -lR` through the
	// mount would show it: the path must be reachable, and a directory's
	// entries are listed only where it may read and search it.
	var chk *pathCheck
	var dir string
	if p, priv := s.caller(r); !priv {
		c, ok := cleanRel(rel)
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf("ls %s: %v", rel, unix.ENOENT))
			return
		}
		chk = s.access.paths(p)
		st, err := chk.reach(c)
		if err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err, dir = chk.listable(c), c
		} else if err == nil {
			chk = nil // one file: reaching it is enough
		}
		if err != nil {
			writeError(w, accessStatus(err), fmt.Sprintf("ls %s: %v", displayRel(c), err))
			return
		}
	}
	ents, err := s.store.List(rel, recursive)
	if err != nil {
		writeError(w, errnoStatus(err), fmt.Sprintf("ls %s: %v", displayRel(rel), err))
		return
	}
	if chk != nil {
		memo := map[string]bool{dir: true}
		kept := ents[:0]
		for _, e := range ents {
			if chk.parentListable(memo, e.Path) {
				kept = append(kept, e)
			}
		}
		ents = kept
	}
	if ents == nil {
		ents = []tiering.Entry{}
	}
	writeJSON(w, http.StatusOK, ents)
}

// fileArgs reads and checks the path and tier parameters of migrate and
// pin: the path must name a regular file, the tier must exist. It answers
// the request itself when they are wrong.
func (s *Server) fileArgs(w http.ResponseWriter, r *http.Request, op string) (rel, tier string, size int64, ok bool) {
	q := r.URL.Query()
	rel, ok = cleanRel(q.Get("path"))
	tier = q.Get("tier")
	switch {
	case !ok:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s: bad path %q", op, q.Get("path")))
		return "", "", 0, false
	case rel == "":
		writeError(w, http.StatusBadRequest, "path is required")
		return "", "", 0, false
	case tier == "":
		writeError(w, http.StatusBadRequest, "tier is required")
		return "", "", 0, false
	}
	if err := s.checkTier(tier); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", "", 0, false
	}
	if p, priv := s.caller(r); !priv {
		if err := s.access.paths(p).writable(rel); err != nil {
			writeError(w, accessStatus(err), fmt.Sprintf("%s %s: %v", op, rel, err))
			return "", "", 0, false
		}
	}
	ents, err := s.store.List(rel, false)
	if err != nil {
		writeError(w, errnoStatus(err), fmt.Sprintf("%s %s: %v", op, rel, err))
		return "", "", 0, false
	}
	if len(ents) != 1 || ents[0].Path != rel || ents[0].IsDir {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%s %s: is a directory (name its files)", op, rel))
		return "", "", 0, false
	}
	return rel, tier, ents[0].Size, true
}

// checkTier says which tiers there are when name is not one.
func (s *Server) checkTier(name string) error {
	var names []string
	for _, t := range s.store.Status().Tiers {
		if t.Name == name {
			return nil
		}
		names = append(names, t.Name)
	}
	return fmt.Errorf("no tier named %q (tiers: %s)", name, strings.Join(names, ", "))
}

// cleanRel makes a path relative to the mount root canonical, as the
// engine names files: "a/b", "" for the root. ok is false for "..".
func cleanRel(p string) (string, bool) {
	c, ok := tiering.RelPath(p).Components()
	return strings.Join(c, "/"), ok
}

func (s *Server) handleMigrate(w http.ResponseWriter, r *http.Request) {
	rel, tier, size, ok := s.fileArgs(w, r, "migrate")
	if !ok || s.answerAlreadyOn(w, r, rel, tier, size) {
		return
	}
	j, err := s.policy.Migrate(rel, tier)
	if err != nil {
		writeError(w, http.StatusConflict, fmt.Sprintf("migrate %s: cannot move to %s: %v", rel, tier, err))
		return
	}
	p, _ := s.caller(r)
	rec := s.jobs.add(j, size, p.uid)
	s.log.Info().Str("path", rel).Str("to", tier).Uint64("job", rec.id).Uint32("uid", p.uid).Msg("move queued on request")
	writeJSON(w, http.StatusOK, s.jobReply(rec))
}

func (s *Server) handleJob(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query().Get("id")
	id, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("id: want a job number, got %q", v))
		return
	}
	rec := s.jobs.get(id)
	if rec == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no job %d", id))
		return
	}
	if p, priv := s.caller(r); !priv && !s.jobs.queuedBy(rec, p.uid) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("job %d: permission denied: %s did not queue it", id, p))
		return
	}
	writeJSON(w, http.StatusOK, s.jobReply(rec))
}

// jobReply describes a job's progress.
func (s *Server) jobReply(rec *jobRecord) JobResponse {
	j := rec.job
	fin, err := j.Finished()
	done, total := j.Progress()
	if total == 0 {
		total = rec.size
	}
	out := JobResponse{ID: rec.id, Path: j.Path, To: j.To, BytesDone: done, BytesTotal: total, Finished: fin,
		Already: j.Already(), MoveMs: j.Moving(time.Now()).Milliseconds()}
	switch {
	case fin && err != nil:
		out.State, out.Error = JobFailed, err.Error()
	case fin:
		out.State = JobDone
		out.BytesDone = max(out.BytesDone, out.BytesTotal)
	default:
		out.State = JobQueued
		if done > 0 {
			out.State = JobMoving
		} else {
			for _, m := range s.policy.Status().InFlight {
				if m.Path == j.Path {
					out.State = JobMoving
				}
			}
		}
	}
	return out
}

func (s *Server) handlePin(w http.ResponseWriter, r *http.Request) {
	rel, tier, size, ok := s.fileArgs(w, r, "pin")
	if !ok {
		return
	}
	j, err := s.policy.Pin(rel, tier)
	if err != nil {
		writeError(w, http.StatusConflict, fmt.Sprintf("pin %s: cannot pin to %s: %v", rel, tier, err))
		return
	}
	p, _ := s.caller(r)
	rec := s.jobs.add(j, size, p.uid)
	s.log.Info().Str("path", rel).Str("tier", tier).Uint64("job", rec.id).Uint32("uid", p.uid).Msg("pinned on request")
	writeJSON(w, http.StatusOK, PinResponse{Path: rel, Tier: tier, Job: s.jobReply(rec)})
}

func (s *Server) handleUnpin(w http.ResponseWriter, r *http.Request) {
	rel, ok := cleanRel(r.URL.Query().Get("path"))
	switch {
	case !ok:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("unpin: bad path %q", r.URL.Query().Get("path")))
		return
	case rel == "":
		writeError(w, http.StatusBadRequest, "path is required")
		return
	}
	p, priv := s.caller(r)
	if !priv {
		if err := s.unpinAllowed(p, rel); err != nil {
			writeError(w, accessStatus(err), fmt.Sprintf("unpin %s: %v", rel, err))
			return
		}
	}
	// The pin of the file at rel, or the one that last saw its file
	// under that name (a pin follows renames, and ends with its file).
	if err := s.policy.Unpin(rel); errors.Is(err, engine.ErrNotPinned) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("unpin %s: not pinned", rel))
		return
	} else if err != nil {
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("unpin %s: %v", rel, err))
		return
	}
	s.log.Info().Str("path", rel).Uint32("uid", p.uid).Msg("unpinned on request")
	writeJSON(w, http.StatusOK, map[string]string{"path": rel})
}

// unpinAllowed: a caller that may change the file may unpin it; a pin
// outlives its file, and then whoever could create the name again (write
// and search on its directory) may drop it.
func (s *Server) unpinAllowed(p peer, rel string) error {
	chk := s.access.paths(p)
	err := chk.writable(rel)
	if !errors.Is(err, unix.ENOENT) {
		return err
	}
	dir := parentRel(rel)
	st, err := chk.reach(dir)
	if err == nil && !p.may(&st, mayWrite|maySearch) {
		err = &forbiddenError{fmt.Sprintf("%s may not create names in %s", p, displayRel(dir))}
	}
	return err
}

func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if !s.privilegedOnly(w, r, "reload the daemon's configuration") {
		return
	}
	res, err := s.policy.Reload()
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func displayRel(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

func parseBoolParam(v string) (bool, error) {
	if v == "" {
		return false, nil
	}
	return strconv.ParseBool(v)
}

// errnoStatus maps a store error to an HTTP status code.
func errnoStatus(err error) int {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		return http.StatusNotFound
	case errors.Is(err, tiering.ErrBusy), errors.Is(err, unix.EMLINK), errors.Is(err, unix.EBUSY):
		return http.StatusConflict
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EISDIR), errors.Is(err, unix.ENAMETOOLONG):
		return http.StatusBadRequest
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return http.StatusInsufficientStorage
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding the reply: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(ErrorResponse{Error: msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// Listener is the daemon's listening control socket.
type Listener struct {
	path string
	ino  uint64 // of the socket file, to remove only our own
	ln   net.Listener
	srv  *http.Server
	done <-chan error
}

// Listen creates the control socket for mountpoint and serves cs
// on it, within defaultControlLimits. The socket gets mode perm and, when gid >= 0, that group; it
// appears under its final name only once it has them, so nobody else can
// connect in between. A socket file that nobody listens on (left by a
// daemon that died) is replaced; a live one is an error.
func Listen(mountpoint string, cs *Server, perm os.FileMode, gid int) (*Listener, error) {
	path, err := SocketPath(mountpoint)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(SocketDir, 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	// Bind in a private directory, set the permissions, then rename into
	// place: the process umask is 0 in the daemon, so a socket bound at
	// its final name would be open to all for a moment. The directory is
	// named for the mountpoint: one left by a daemon killed here is this
	// mount's alone to remove (one daemon serves a mountpoint).
	prefix := bindPrefix(path)
	if left, _ := filepath.Glob(filepath.Join(SocketDir, prefix+"*")); len(left) > 0 {
		for _, d := range left {
			os.RemoveAll(d)
		}
	}
	tmpDir, err := os.MkdirTemp(SocketDir, prefix)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	if err := os.Chmod(tmpDir, 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	tmp := filepath.Join(tmpDir, "s")
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	fail := func(err error) (*Listener, error) {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if gid >= 0 {
		if err := os.Lchown(tmp, -1, gid); err != nil {
			return fail(err)
		}
	}
	if err := os.Chmod(tmp, perm.Perm()); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fail(err)
	}
	srv, _, done := serveControl(ln, cs, defaultControlLimits(), cs.access.privileged, cs.log)
	return &Listener{path: path, ino: st.Ino, ln: ln, srv: srv, done: done}, nil
}

// Path is the socket's path.
func (c *Listener) Path() string { return c.path }

// bindPrefix names the bind directories of the socket at path.
func bindPrefix(path string) string {
	return ".bind-" + strings.TrimSuffix(filepath.Base(path), ".sock") + "-"
}

// removeStaleSocket removes the socket file at path if no process listens
// on it.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("control socket %s exists and is not a socket; remove it", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("control socket %s is in use: another tierfs serves this mountpoint", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the stale control socket: %w", err)
	}
	return nil
}

// Close stops serving, waits (up to the context's deadline) for requests
// in flight, and removes the socket file.
func (c *Listener) Close(ctx context.Context) error {
	err := c.srv.Shutdown(ctx)
	if err != nil {
		c.srv.Close()
	}
	// Only remove the socket if it still is ours: a path reused by a
	// newer daemon (after a lazy unmount) must not be pulled away.
	var st unix.Stat_t
	if unix.Lstat(c.path, &st) == nil && st.Ino == c.ino {
		if rerr := os.Remove(c.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
	}
	return err
}
