package main

// The control channel: HTTP with JSON bodies over a unix socket that the
// daemon of one mount listens on. `tierfs status`, `ls`, `migrate`, `pin`,
// `unpin` and `reload` are its clients.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// controlDir holds the daemons' control sockets.
const controlDir = "/run/tierfs"

// controlSocketPath returns the control socket of the daemon serving the
// mount at mountpoint: /run/tierfs/<16 hex digits of the SHA-256 of the
// absolute, clean mountpoint>.sock. The daemon and its clients both call
// it with the mountpoint as /proc/self/mountinfo names it (symlinks
// resolved), so that they agree.
func controlSocketPath(mountpoint string) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(filepath.Clean(abs)))
	return filepath.Join(controlDir, hex.EncodeToString(sum[:])[:16]+".sock"), nil
}

// controlStore is what the control server needs of a *tiering.Store.
type controlStore interface {
	Status() tiering.Status
	List(rel string, recursive bool) ([]tiering.Entry, error)
	Move(rel, tier string) error
}

var _ controlStore = (*tiering.Store)(nil)

// controlPolicy is what the control server needs of the policy engine
// and the daemon's configuration.
type controlPolicy interface {
	Migrate(rel, tier string) (*engine.Job, error)
	Pin(rel, tier string) (*engine.Job, error)
	Unpin(rel string) error
	Status() policyStatus
	Reload() (reloadResult, error)
}

var _ controlPolicy = (*livePolicy)(nil)

// statusResponse is the body of GET /v1/status.
type statusResponse struct {
	Mountpoint string `json:"mountpoint"`
	tiering.Status
	Policy *policyStatus `json:"policy,omitempty"`
	// Requests says how the kernel's requests reach the daemon.
	Requests *requestsStatus `json:"requests,omitempty"`
}

// requestsStatus is the FUSE transport of the mount and its data path.
type requestsStatus struct {
	// Transport is "io_uring" or "/dev/fuse".
	Transport string `json:"transport"`
	// Queues and ThreadsPerQueue: io_uring only, one queue per CPU.
	Queues          int `json:"queues,omitempty"`
	ThreadsPerQueue int `json:"threads_per_queue,omitempty"`
	// ServedIOUring counts the requests answered over io_uring.
	ServedIOUring uint64 `json:"served_io_uring,omitempty"`
	// DataPath is how file data moves: "page cache", "write-back cache"
	// or "direct I/O" (fs.Server.DataPath).
	DataPath string `json:"data_path"`
}

// jobResponse is a queued move, in the replies of POST /v1/migrate,
// POST /v1/pin and GET /v1/job.
type jobResponse struct {
	ID    uint64 `json:"id"`
	Path  string `json:"path"`
	To    string `json:"to"`
	State string `json:"state"` // queued, moving, done or failed
	// BytesDone is what the copy has done so far; BytesTotal the file's
	// size.
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	Finished   bool   `json:"finished"`
	Error      string `json:"error,omitempty"`
	// Already: the file was on the tier; nothing moved (state done).
	Already bool `json:"already,omitempty"`
	// MoveMs is how long the copy has run, not counting the time queued.
	MoveMs int64 `json:"move_ms"`
}

// Job states.
const (
	jobQueued = "queued"
	jobMoving = "moving"
	jobDone   = "done"
	jobFailed = "failed"
)

// pinResponse is the body of POST /v1/pin.
type pinResponse struct {
	Path string      `json:"path"`
	Tier string      `json:"tier"`
	Job  jobResponse `json:"job"`
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

// errorResponse is the body of every error reply.
type errorResponse struct {
	Error string `json:"error"`
}

// controlServer answers the control protocol for one mount.
type controlServer struct {
	store      controlStore
	policy     controlPolicy // nil: the policy endpoints answer 503
	mountpoint string
	log        zerolog.Logger
	mux        *http.ServeMux
	jobs       jobTable
	// requests, when set, reports the mount's FUSE transport.
	requests func() *requestsStatus
	// access judges each caller (control_access.go).
	access *controlAccess
}

func newControlServer(store controlStore, pol controlPolicy, mountpoint string, log zerolog.Logger) *controlServer {
	s := &controlServer{store: store, policy: pol, mountpoint: mountpoint, log: log, mux: http.NewServeMux(), access: defaultAccess()}
	s.mux.HandleFunc("GET /v1/status", s.handleStatus)
	s.mux.HandleFunc("GET /v1/ls", s.handleLs)
	s.mux.HandleFunc("POST /v1/move", s.handleMove)
	s.mux.HandleFunc("POST /v1/migrate", s.withPolicy(s.handleMigrate))
	s.mux.HandleFunc("GET /v1/job", s.withPolicy(s.handleJob))
	s.mux.HandleFunc("POST /v1/pin", s.withPolicy(s.handlePin))
	s.mux.HandleFunc("POST /v1/unpin", s.withPolicy(s.handleUnpin))
	s.mux.HandleFunc("POST /v1/reload", s.withPolicy(s.handleReload))
	return s
}

// withPolicy answers 503 when the daemon runs no policy engine.
func (s *controlServer) withPolicy(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.policy == nil {
			writeError(w, http.StatusServiceUnavailable, "this daemon runs no policy engine")
			return
		}
		h(w, r)
	}
}

// ServeHTTP implements http.Handler.
func (s *controlServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
func (s *controlServer) caller(r *http.Request) (peer, bool) {
	p, _ := callerOf(r.Context())
	return p, s.access.privileged(p)
}

// privilegedOnly answers 403 unless the caller is privileged; what says
// what it may not do.
func (s *controlServer) privilegedOnly(w http.ResponseWriter, r *http.Request, what string) bool {
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

func (s *controlServer) handleStatus(w http.ResponseWriter, r *http.Request) {
	st := statusResponse{Mountpoint: s.mountpoint, Status: s.store.Status()}
	if s.policy != nil {
		ps := s.policy.Status()
		st.Policy = &ps
	}
	if s.requests != nil {
		st.Requests = s.requests()
	}
	if p, priv := s.caller(r); !priv {
		s.redactStatus(&st, p)
	}
	writeJSON(w, http.StatusOK, st)
}

// redactStatus leaves a caller that is not privileged the daemon-wide
// figures and the files it could see through the mount. Where the tiers
// lie on disk, the error texts (they name files) and the configuration
// file are root's business.
func (s *controlServer) redactStatus(st *statusResponse, p peer) {
	st.Tiers = slices.Clone(st.Tiers)
	for i := range st.Tiers {
		st.Tiers[i].Path = ""
	}
	st.Moves.LastError = ""
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
	ps.Pins, ps.LastErrors, ps.Config = pins, nil, ""
	st.Policy = &ps
}

func (s *controlServer) handleLs(w http.ResponseWriter, r *http.Request) {
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

// handleMove moves a file at once, outside the engine's queue and rate:
// root's (and control_group's) alone.
func (s *controlServer) handleMove(w http.ResponseWriter, r *http.Request) {
	if !s.privilegedOnly(w, r, "move files outside the policy engine (POST /v1/move)") {
		return
	}
	// The copy may outlast the socket's write timeout.
	http.NewResponseController(w).SetWriteDeadline(time.Time{})
	q := r.URL.Query()
	rel, tier := q.Get("path"), q.Get("tier")
	switch {
	case rel == "":
		writeError(w, http.StatusBadRequest, "path is required")
		return
	case tier == "":
		writeError(w, http.StatusBadRequest, "tier is required")
		return
	}
	known := false
	for _, t := range s.store.Status().Tiers {
		if t.Name == tier {
			known = true
			break
		}
	}
	if !known {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("no tier named %q", tier))
		return
	}
	start := time.Now()
	if err := s.store.Move(rel, tier); err != nil {
		s.log.Warn().Err(err).Str("path", rel).Str("tier", tier).Msg("move requested over the control socket failed")
		writeError(w, errnoStatus(err), fmt.Sprintf("move %s to %s: %v", displayRel(rel), tier, err))
		return
	}
	s.log.Info().Str("path", rel).Str("tier", tier).Dur("took", time.Since(start)).Msg("moved on request")
	writeJSON(w, http.StatusOK, map[string]string{"path": rel, "tier": tier})
}

// fileArgs reads and checks the path and tier parameters of migrate and
// pin: the path must name a regular file, the tier must exist. It answers
// the request itself when they are wrong.
func (s *controlServer) fileArgs(w http.ResponseWriter, r *http.Request, op string) (rel, tier string, size int64, ok bool) {
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
func (s *controlServer) checkTier(name string) error {
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

func (s *controlServer) handleMigrate(w http.ResponseWriter, r *http.Request) {
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

func (s *controlServer) handleJob(w http.ResponseWriter, r *http.Request) {
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
func (s *controlServer) jobReply(rec *jobRecord) jobResponse {
	j := rec.job
	fin, err := j.Finished()
	done, total := j.Progress()
	if total == 0 {
		total = rec.size
	}
	out := jobResponse{ID: rec.id, Path: j.Path, To: j.To, BytesDone: done, BytesTotal: total, Finished: fin,
		Already: j.Already(), MoveMs: j.Moving(time.Now()).Milliseconds()}
	switch {
	case fin && err != nil:
		out.State, out.Error = jobFailed, err.Error()
	case fin:
		out.State = jobDone
		out.BytesDone = max(out.BytesDone, out.BytesTotal)
	default:
		out.State = jobQueued
		if done > 0 {
			out.State = jobMoving
		} else {
			for _, m := range s.policy.Status().InFlight {
				if m.Path == j.Path {
					out.State = jobMoving
				}
			}
		}
	}
	return out
}

func (s *controlServer) handlePin(w http.ResponseWriter, r *http.Request) {
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
	writeJSON(w, http.StatusOK, pinResponse{Path: rel, Tier: tier, Job: s.jobReply(rec)})
}

func (s *controlServer) handleUnpin(w http.ResponseWriter, r *http.Request) {
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
func (s *controlServer) unpinAllowed(p peer, rel string) error {
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

func (s *controlServer) handleReload(w http.ResponseWriter, r *http.Request) {
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
	b, _ := json.Marshal(errorResponse{Error: msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// controlListener is the daemon's listening control socket.
type controlListener struct {
	path string
	ino  uint64 // of the socket file, to remove only our own
	ln   net.Listener
	srv  *http.Server
	done <-chan error
}

// listenControl creates the control socket for mountpoint and serves cs
// on it, within defaultControlLimits. The socket gets mode perm and, when gid >= 0, that group; it
// appears under its final name only once it has them, so nobody else can
// connect in between. A socket file that nobody listens on (left by a
// daemon that died) is replaced; a live one is an error.
func listenControl(mountpoint string, cs *controlServer, perm os.FileMode, gid int) (*controlListener, error) {
	path, err := controlSocketPath(mountpoint)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(controlDir, 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	// Bind in a private directory, set the permissions, then rename into
	// place: the process umask is 0 in the daemon, so a socket bound at
	// its final name would be open to all for a moment.
	tmpDir, err := os.MkdirTemp(controlDir, ".bind-")
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
	fail := func(err error) (*controlListener, error) {
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
	return &controlListener{path: path, ino: st.Ino, ln: ln, srv: srv, done: done}, nil
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
func (c *controlListener) Close(ctx context.Context) error {
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

// controlClient talks to one daemon.
type controlClient struct {
	mountpoint string
	socket     string
	http       *http.Client
}

func newControlClient(mountpoint string) (*controlClient, error) {
	sock, err := controlSocketPath(mountpoint)
	if err != nil {
		return nil, err
	}
	return newControlClientAt(mountpoint, sock), nil
}

// newControlClientAt talks to the daemon for mountpoint on the socket at
// sock.
func newControlClientAt(mountpoint, sock string) *controlClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}
	return &controlClient{mountpoint: mountpoint, socket: sock, http: &http.Client{Transport: tr}}
}

// errNoDaemon says that nothing listens on the control socket.
type errNoDaemon struct {
	mountpoint string
	err        error
}

func (e *errNoDaemon) Error() string {
	return fmt.Sprintf("no tierfs daemon answers for %s (is it mounted?)", e.mountpoint)
}

func (e *errNoDaemon) Unwrap() error { return e.err }

// apiError is an error reply from the daemon.
type apiError struct {
	Code int
	Msg  string
}

func (e *apiError) Error() string { return e.Msg }

// do sends a request and decodes the JSON reply into out.
func (c *controlClient) do(ctx context.Context, method, path string, q url.Values, out any) error {
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
		var e errorResponse
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s: %s", resp.Status, bytesTrim(body))
		}
		return &apiError{Code: resp.StatusCode, Msg: e.Error}
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

func (c *controlClient) Status(ctx context.Context) (statusResponse, error) {
	var st statusResponse
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

func (c *controlClient) List(ctx context.Context, rel string, recursive bool) ([]tiering.Entry, error) {
	q := url.Values{"path": {rel}}
	if recursive {
		q.Set("recursive", "1")
	}
	var ents []tiering.Entry
	err := c.do(ctx, http.MethodGet, "/v1/ls", q, &ents)
	return ents, err
}

func (c *controlClient) Move(ctx context.Context, rel, tier string) error {
	return c.do(ctx, http.MethodPost, "/v1/move", url.Values{"path": {rel}, "tier": {tier}}, nil)
}

// Migrate queues a move of rel to tier.
func (c *controlClient) Migrate(ctx context.Context, rel, tier string) (jobResponse, error) {
	var j jobResponse
	err := c.do(ctx, http.MethodPost, "/v1/migrate", url.Values{"path": {rel}, "tier": {tier}}, &j)
	return j, err
}

// Job reports a queued move's progress.
func (c *controlClient) Job(ctx context.Context, id uint64) (jobResponse, error) {
	var j jobResponse
	err := c.do(ctx, http.MethodGet, "/v1/job", url.Values{"id": {strconv.FormatUint(id, 10)}}, &j)
	return j, err
}

// Pin keeps rel on tier, moving it there.
func (c *controlClient) Pin(ctx context.Context, rel, tier string) (pinResponse, error) {
	var p pinResponse
	err := c.do(ctx, http.MethodPost, "/v1/pin", url.Values{"path": {rel}, "tier": {tier}}, &p)
	return p, err
}

// Unpin lets the policy move rel again.
func (c *controlClient) Unpin(ctx context.Context, rel string) error {
	return c.do(ctx, http.MethodPost, "/v1/unpin", url.Values{"path": {rel}}, nil)
}

// Reload makes the daemon re-read its configuration file.
func (c *controlClient) Reload(ctx context.Context) (reloadResult, error) {
	var r reloadResult
	err := c.do(ctx, http.MethodPost, "/v1/reload", nil, &r)
	return r, err
}
