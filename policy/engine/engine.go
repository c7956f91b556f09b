// Package engine runs the policy: every interval it takes a snapshot of
// the store, asks policy.Plan for moves and carries them out with a
// bounded number of workers under a shared bandwidth cap. It also queues
// the operator's own moves (tierfs migrate) and keeps CLI pins.
//
// A CLI pin is bound to one file, by its tierfs inode number (never
// reused): it follows the file through renames (Kafka's .log ->
// .log.deleted) and ends with it, when its last name is unlinked or a
// rename replaces it. Each plan's snapshot tells the engine the file's
// name now, and a snapshot during which nothing was removed or renamed
// (policy.Snapshot.Complete) that lacks the file ends its pin. Glob pins
// in the configuration are rules over names and stay.
package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/policy"
)

// Source is what a plan reads of the tiers.
type Source interface {
	// Snapshot lists every file and tier as they are now; thresholds and
	// pins are the engine's to fill in.
	Snapshot(now time.Time) (policy.Snapshot, error)
	// FileIno is the inode number of the regular file at rel, as the
	// snapshot names it: what a CLI pin is bound to. It is ErrNoFile
	// when rel names no regular file.
	FileIno(rel string) (uint64, error)
}

// Mover carries out one move. Its errors are ErrChanged, ErrGone,
// ErrAlreadyThere or context.Canceled (wrapped) when the move had nothing
// left to do.
type Mover interface {
	Move(ctx context.Context, m MoveRequest) error
}

// Store is the tiers as the engine drives them: the daemon adapts the
// store to it, so that the engine knows nothing of how moves are done.
type Store interface {
	Source
	Mover
}

// MoveRequest is one move the engine asks for.
type MoveRequest struct {
	Path string
	// Ino, when non-zero, must be the file's inode number: a plan's
	// snapshot may be older than a rename or a replacement.
	Ino    uint64
	To     string // tier name
	Manual bool   // an operator's (tierfs migrate, pin), not the plan's
	// Reason is the job's: the plan's ("demote: ...", "promote: ...",
	// "pin"), "manual" (tierfs migrate) or "pin" (tierfs pin).
	Reason string
	// Limiter paces the copy; every move shares it, for max_rate.
	Limiter Pacer
	// Progress, if set, is told the bytes copied so far and the total.
	Progress func(done, total int64)
}

// Pacer paces a move's copy under max_rate: *rate.Limiter's methods,
// which the engine's own pacer also measures.
type Pacer interface {
	Limit() rate.Limit
	Burst() int
	WaitN(ctx context.Context, n int) error
}

// throttle is the engine's limiter, counting the time copies wait on it.
type throttle struct {
	*rate.Limiter
	waited *atomic.Int64 // nanoseconds
}

func (t throttle) WaitN(ctx context.Context, n int) error {
	start := time.Now()
	err := t.Limiter.WaitN(ctx, n)
	t.waited.Add(int64(time.Since(start)))
	return err
}

// The outcomes of a move that had nothing to do, and of a pin's lookup.
var (
	// ErrChanged: the name no longer holds the file the move was
	// planned for (renamed away, or replaced).
	ErrChanged = errors.New("file changed since it was planned")
	// ErrGone: the file was deleted before or while it moved.
	ErrGone = errors.New("file deleted")
	// ErrNoFile: the name holds no regular file.
	ErrNoFile = errors.New("no regular file")
	// ErrAlreadyThere: the file was on the tier asked for; nothing was
	// copied, and it is no move to count or log as one.
	ErrAlreadyThere = errors.New("already on that tier")
)

// pin is a CLI pin.
type pin struct {
	Path string `json:"path"`          // the file's name when last seen
	Ino  uint64 `json:"ino,omitempty"` // 0 until bound (pins.json kept paths before)
	Tier string `json:"tier"`
	// seq orders pins against snapshots: only a pin set before a
	// snapshot began can end for lack of its file in it.
	seq uint64
}

// pinsFile is what pins.json holds (before version 2: a map of paths to
// tier names).
type pinsFile struct {
	Version int    `json:"version"`
	Pins    []*pin `json:"pins"`
}

const pinsVersion = 2

// ErrNotPinned is Unpin's answer for a file no CLI pin holds.
var ErrNotPinned = errors.New("not pinned")

// Config is the engine's share of the configuration.
type Config struct {
	Policy policy.Config
	// Thresholds is each tier's effective migrate_threshold (its own, or
	// [policy]'s), fastest first.
	Thresholds []float64
}

// Job is one queued or running move.
type Job struct {
	Path   string `json:"path"`
	Ino    uint64 `json:"ino,omitempty"`
	To     string `json:"to"`
	Reason string `json:"reason"`
	Manual bool   `json:"manual,omitempty"`

	done  atomic.Int64
	total atomic.Int64
	// started and ended are when the move began and ended (unix
	// nanoseconds, 0 until then): the time spent queued is not in them.
	started atomic.Int64
	ended   atomic.Int64
	already atomic.Bool
	fin     chan struct{}
	err     error
}

// Progress reports bytes copied and the file's size.
func (j *Job) Progress() (done, total int64) { return j.done.Load(), j.total.Load() }

// Moving is how long the move has run (until now, or until it ended);
// 0 while queued.
func (j *Job) Moving(now time.Time) time.Duration {
	s := j.started.Load()
	if s == 0 {
		return 0
	}
	if e := j.ended.Load(); e != 0 {
		return time.Duration(e - s)
	}
	return now.Sub(time.Unix(0, s))
}

// Already reports whether the job found its file on the tier already:
// it ended without moving anything.
func (j *Job) Already() bool { return j.already.Load() }

// Wait blocks until the job ends and returns its error.
func (j *Job) Wait(ctx context.Context) error {
	select {
	case <-j.fin:
		return j.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Finished reports whether the job ended, and how.
func (j *Job) Finished() (bool, error) {
	select {
	case <-j.fin:
		return true, j.err
	default:
		return false, nil
	}
}

// JobStatus is a job in `tierfs status`.
type JobStatus struct {
	Path   string `json:"path"`
	To     string `json:"to"`
	Reason string `json:"reason"`
	Done   int64  `json:"bytes_done"`
	Total  int64  `json:"bytes_total"`
}

// Status is the engine's part of `tierfs status`: its queue and plans.
// How moves ended is the store's move ledger (tiering.MoveStats), not
// counted here.
type Status struct {
	Enabled  bool        `json:"enabled"`
	Queued   []JobStatus `json:"queued"`
	InFlight []JobStatus `json:"in_flight"`
	// PlanErrors are the last errors of planning (a snapshot that
	// failed), oldest first.
	PlanErrors []string  `json:"plan_errors,omitempty"`
	LastPlan   time.Time `json:"last_plan,omitempty"`
	// ThrottledSeconds is how long copies waited for max_rate, in all.
	ThrottledSeconds float64           `json:"throttled_seconds"`
	Pins             map[string]string `json:"pins,omitempty"`
}

const maxErrors = 10

// Engine plans and moves.
type Engine struct {
	store    Store
	log      zerolog.Logger
	pinsPath string
	now      func() time.Time

	// mu guards what follows. It may be held across a call into the
	// store (FileIno, to bind pins kept by path), never the reverse: the
	// store calls nothing of the engine.
	mu         sync.Mutex
	cfg        Config
	limiter    *rate.Limiter
	pins       []*pin
	pinSeq     uint64 // the next pin's seq
	pinsDirty  bool   // pins.json is behind: a save failed
	queue      []*Job
	byPath     map[string]*Job // queued or running
	running    map[*Job]bool
	planErrors []string
	lastPlan   time.Time

	throttled atomic.Int64 // nanoseconds copies waited on limiter

	wake chan struct{}
}

// New makes an engine; pinsPath is where CLI pins are kept across
// restarts ("" keeps them in memory only).
func New(store Store, cfg Config, pinsPath string, log zerolog.Logger) (*Engine, error) {
	e := &Engine{
		store: store, log: log, pinsPath: pinsPath, now: time.Now,
		cfg: cfg, pinSeq: 1,
		byPath: map[string]*Job{}, running: map[*Job]bool{},
		wake: make(chan struct{}, 1),
	}
	e.limiter = rate.NewLimiter(rate.Inf, 1)
	e.applyRate(cfg.Policy.MaxRate)
	if pinsPath != "" {
		b, err := os.ReadFile(pinsPath)
		switch {
		case err == nil:
			if e.pins, err = decodePins(b); err != nil {
				return nil, fmt.Errorf("pins in %s: %w", pinsPath, err)
			}
		case !errors.Is(err, os.ErrNotExist):
			return nil, err
		}
	}
	e.mu.Lock()
	e.bindLocked()
	e.mu.Unlock()
	return e, nil
}

// decodePins reads pins.json: version 2, or the map of paths to tiers
// that came before (those pins are bound to their files by bindLocked).
func decodePins(b []byte) ([]*pin, error) {
	var f pinsFile
	if err := json.Unmarshal(b, &f); err == nil && f.Version == pinsVersion {
		var out []*pin
		for _, p := range f.Pins {
			if p != nil && p.Path != "" && p.Tier != "" {
				out = append(out, p)
			}
		}
		return out, nil
	}
	var old map[string]string
	if err := json.Unmarshal(b, &old); err != nil {
		return nil, err
	}
	out := make([]*pin, 0, len(old))
	for path, tier := range old {
		out = append(out, &pin{Path: path, Tier: tier})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// bindLocked binds the pins that name a path alone (kept so before pins
// were bound to files) to the file at that path now; a pin whose path
// holds no file ends. Saved when anything changed.
func (e *Engine) bindLocked() {
	changed := false
	keep := e.pins[:0]
	for _, p := range e.pins {
		if p.Ino == 0 {
			ino, err := e.store.FileIno(p.Path)
			switch {
			case err == nil:
				p.Ino, changed = ino, true
			case errors.Is(err, ErrNoFile):
				e.log.Info().Str("path", p.Path).Str("tier", p.Tier).Msg("pin ended: no file has its name")
				changed = true
				continue
			default:
				e.log.Warn().Err(err).Str("path", p.Path).Msg("pin not bound to its file yet")
			}
		}
		keep = append(keep, p)
	}
	clear(e.pins[len(keep):])
	e.pins = keep
	if changed {
		e.savePinsQuietLocked()
	}
}

// savePinsQuietLocked saves pins that changed on their own (a file
// renamed or gone): a failure is logged and retried at the next plan.
func (e *Engine) savePinsQuietLocked() {
	if err := e.savePinsLocked(); err != nil {
		if !e.pinsDirty {
			e.log.Warn().Err(err).Str("path", e.pinsPath).Msg("cannot save the CLI pins; retrying at each plan")
		}
		e.pinsDirty = true
	}
}

// applyRate sets the shared bandwidth cap (bytes per second, 0 =
// unlimited). The burst is a tenth of a second's worth, between 64 KiB and
// the copy chunk, so one worker never runs far ahead of the cap.
func (e *Engine) applyRate(r units.Rate) {
	v := int64(r)
	if v <= 0 {
		e.limiter.SetLimit(rate.Inf)
		e.limiter.SetBurst(1 << 20)
		return
	}
	e.limiter.SetLimit(rate.Limit(v))
	e.limiter.SetBurst(int(min(max(v/10, 64<<10), 1<<20)))
}

// Reconfigure applies a new configuration live: thresholds, rate,
// threads, interval and pins.
func (e *Engine) Reconfigure(cfg Config) {
	e.mu.Lock()
	e.cfg = cfg
	e.applyRate(cfg.Policy.MaxRate)
	e.mu.Unlock()
	e.poke()
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run plans every interval and dispatches moves until ctx ends; then it
// cancels running copies and waits for them.
func (e *Engine) Run(ctx context.Context) {
	jobCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	interval := func() time.Duration {
		e.mu.Lock()
		defer e.mu.Unlock()
		return max(time.Duration(e.cfg.Policy.Interval), 10*time.Millisecond)
	}
	cur := interval()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			e.Plan()
			cur = interval()
			timer.Reset(cur)
		case <-e.wake:
			if iv := interval(); iv != cur {
				// Reloaded: the new interval starts now.
				cur = iv
				if !timer.Stop() {
					select {
					case <-timer.C:
					default:
					}
				}
				timer.Reset(cur)
			}
		}
		e.dispatch(jobCtx, &wg)
	}
}

// Plan takes a snapshot and queues what policy.Plan says, unless moves
// are still queued or running (a plan on a stale snapshot would repeat
// them). It returns the number of moves queued.
func (e *Engine) Plan() int {
	e.mu.Lock()
	busy := len(e.queue) > 0 || len(e.running) > 0
	cfg := e.cfg
	before := e.pinSeq // pins set before the snapshot began
	e.mu.Unlock()
	if busy {
		return 0
	}
	snap, err := e.store.Snapshot(e.now())
	if err != nil {
		e.recordErr(fmt.Errorf("snapshot: %w", err))
		return 0
	}
	pins := e.followPins(&snap, before)
	tierIdx := map[string]int{}
	for i := range snap.Tiers {
		tierIdx[snap.Tiers[i].Name] = i
		if i < len(cfg.Thresholds) {
			snap.Tiers[i].Threshold = cfg.Thresholds[i]
		} else {
			snap.Tiers[i].Threshold = cfg.Policy.MigrateThreshold
		}
	}
	for i := range snap.Files {
		f := &snap.Files[i]
		if policy.PinnedByGlob(cfg.Policy.Pin, f.Path) {
			f.Pinned = true
		}
		if t, ok := pins[f.Ino]; ok {
			f.Pinned = true
			if ti, ok := tierIdx[t]; ok {
				f.PinTier = ti
			}
		}
	}
	moves := policy.Plan(snap, cfg.Policy)
	n := 0
	e.mu.Lock()
	e.lastPlan = snap.Now
	for _, m := range moves {
		if _, dup := e.byPath[m.Path]; dup {
			continue
		}
		j := newJob(m.Path, snap.Tiers[m.To].Name, m.Reason, false)
		j.Ino = m.Ino
		j.total.Store(m.Bytes)
		e.queue = append(e.queue, j)
		e.byPath[m.Path] = j
		n++
	}
	e.mu.Unlock()
	if n > 0 {
		e.log.Debug().Int("moves", n).Msg("plan")
		e.poke()
	}
	return n
}

// followPins brings the CLI pins up to date with a snapshot: each pin's
// file is named as it is now, and a pin set before the snapshot began
// whose file a complete snapshot lacks ends (the file was unlinked or
// replaced). It returns the pinned files' tiers by inode number.
func (e *Engine) followPins(snap *policy.Snapshot, before uint64) map[uint64]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.hasUnboundLocked() {
		e.bindLocked()
	}
	byIno := make(map[uint64]*pin, len(e.pins))
	for _, p := range e.pins {
		if p.Ino != 0 {
			byIno[p.Ino] = p
		}
	}
	// A file with several names keeps the name its pin knows.
	names := map[*pin]string{}
	for i := range snap.Files {
		f := &snap.Files[i]
		if p := byIno[f.Ino]; p != nil {
			if cur, ok := names[p]; !ok || (cur != p.Path && f.Path == p.Path) {
				names[p] = f.Path
			}
		}
	}
	changed := false
	keep := e.pins[:0]
	for _, p := range e.pins {
		name, seen := names[p]
		switch {
		case seen && name != p.Path:
			e.log.Info().Str("path", name).Str("was", p.Path).Str("tier", p.Tier).Msg("pin follows its file's rename")
			p.Path, changed = name, true
		case !seen && p.Ino != 0 && snap.Complete && p.seq < before:
			e.log.Info().Str("path", p.Path).Str("tier", p.Tier).Msg("pin ended with its file")
			changed = true
			continue
		}
		keep = append(keep, p)
	}
	clear(e.pins[len(keep):])
	e.pins = keep
	if changed || e.pinsDirty {
		e.savePinsQuietLocked()
	}
	out := make(map[uint64]string, len(e.pins))
	for _, p := range e.pins {
		if p.Ino != 0 {
			out[p.Ino] = p.Tier
		}
	}
	return out
}

func (e *Engine) hasUnboundLocked() bool {
	for _, p := range e.pins {
		if p.Ino == 0 {
			return true
		}
	}
	return false
}

// pinOfLocked is the CLI pin of the file at rel (inode number ino, when
// known): bound to that file, or, not yet bound, naming rel.
func (e *Engine) pinOfLocked(rel string, ino uint64, known bool) *pin {
	for _, p := range e.pins {
		if (known && p.Ino == ino) || (p.Ino == 0 && p.Path == rel) {
			return p
		}
	}
	return nil
}

// StaysOn says whether the plan leaves the file at rel (inode number ino)
// on the tier named tier by an operator's word: a [policy] pin glob
// matches its name, or a CLI pin holds it on that tier. The daemon gives
// only such files kernel passthrough handles (fs/passthrough.go).
func (e *Engine) StaysOn(rel string, ino uint64, tier string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if policy.PinnedByGlob(e.cfg.Policy.Pin, rel) {
		return true
	}
	p := e.pinOfLocked(rel, ino, true)
	return p != nil && p.Tier == tier
}

func newJob(path, to, reason string, manual bool) *Job {
	return &Job{Path: path, To: to, Reason: reason, Manual: manual, fin: make(chan struct{})}
}

func (e *Engine) dispatch(ctx context.Context, wg *sync.WaitGroup) {
	e.mu.Lock()
	defer e.mu.Unlock()
	threads := max(e.cfg.Policy.MigrateThreads, 1)
	for len(e.queue) > 0 && len(e.running) < threads {
		j := e.queue[0]
		e.queue = e.queue[1:]
		e.running[j] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.execute(ctx, j)
		}()
	}
}

func (e *Engine) execute(ctx context.Context, j *Job) {
	start := e.now()
	j.started.Store(start.UnixNano())
	err := e.store.Move(ctx, MoveRequest{
		Path:    j.Path,
		Ino:     j.Ino,
		To:      j.To,
		Manual:  j.Manual,
		Reason:  j.Reason,
		Limiter: throttle{e.limiter, &e.throttled},
		Progress: func(done, total int64) {
			j.done.Store(done)
			j.total.Store(total)
		},
	})
	end := e.now()
	j.ended.Store(max(end.UnixNano(), start.UnixNano()+1))
	// Nothing moved: no move to count or log as one.
	already := errors.Is(err, ErrAlreadyThere)
	if already {
		err = nil
		j.already.Store(true)
	}
	e.mu.Lock()
	delete(e.running, j)
	delete(e.byPath, j.Path)
	e.mu.Unlock()
	// The store's ledger counts the move; the log says what the engine
	// asked for. A file renamed, replaced or deleted since the plan
	// (Kafka replaces its checkpoints and deletes segments at any time)
	// is no failure: the next plan sees the directory as it is now.
	benign := errors.Is(err, context.Canceled) || errors.Is(err, ErrChanged) ||
		(!j.Manual && errors.Is(err, ErrGone))
	if err != nil && !benign {
		e.log.Warn().Err(err).Str("path", j.Path).Str("to", j.To).Str("reason", j.Reason).Msg("move failed")
	} else if already {
		e.log.Info().Str("path", j.Path).Str("to", j.To).Str("reason", j.Reason).Msg("already on the tier: nothing moved")
	} else if err == nil {
		e.log.Info().Str("path", j.Path).Str("to", j.To).Str("reason", j.Reason).Int64("bytes", j.total.Load()).
			Int64("dur_ms", end.Sub(start).Milliseconds()).Msg("moved")
	}
	j.err = err
	close(j.fin)
	e.poke()
}

// recordErr keeps an error of planning for status.
func (e *Engine) recordErr(err error) {
	e.log.Warn().Err(err).Msg("policy")
	e.mu.Lock()
	e.planErrors = append(e.planErrors, e.now().UTC().Format(time.RFC3339)+" "+err.Error())
	if len(e.planErrors) > maxErrors {
		e.planErrors = e.planErrors[len(e.planErrors)-maxErrors:]
	}
	e.mu.Unlock()
}

// Migrate queues an operator's move of rel to the named tier, ahead of
// the policy's moves.
func (e *Engine) Migrate(rel, tier string) (*Job, error) {
	ino, err := e.store.FileIno(rel)
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.migrateLocked(rel, tier, ino, err == nil, "manual")
}

// migrateLocked queues the move; reason is "manual" (tierfs migrate) or
// "pin" (tierfs pin). Its errors do not name the file: the caller does.
func (e *Engine) migrateLocked(rel, tier string, ino uint64, known bool, reason string) (*Job, error) {
	// Pinned files stay on their tier: an operator unpins first.
	if p := e.pinOfLocked(rel, ino, known); p != nil && p.Tier != tier {
		return nil, fmt.Errorf("pinned to tier %s: unpin it first", p.Tier)
	}
	for _, g := range e.cfg.Policy.Pin {
		if policy.MatchGlob(g, rel) {
			return nil, fmt.Errorf("pinned by [policy] pin %q: change the configuration first", g)
		}
	}
	if j, ok := e.byPath[rel]; ok {
		if j.To == tier {
			return j, nil
		}
		return nil, fmt.Errorf("already queued to move to %s", j.To)
	}
	j := newJob(rel, tier, reason, true)
	e.queue = append([]*Job{j}, e.queue...)
	e.byPath[rel] = j
	e.poke()
	return j, nil
}

// Pin keeps the file at rel on tier (moving it there now), across
// restarts and renames, until the file is gone or unpinned. rel must name
// the file as plans do, from the mount root without ".", ".." or empty
// parts: a pin spelt otherwise would never match.
func (e *Engine) Pin(rel, tier string) (*Job, error) {
	if !canonical(rel) {
		return nil, fmt.Errorf("cannot pin %q: name a file from the mount root, without \".\", \"..\" or empty parts", rel)
	}
	ino, err := e.store.FileIno(rel)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	// One pin per file: a new one replaces it.
	keep := e.pins[:0]
	for _, p := range e.pins {
		if p.Ino != ino && !(p.Ino == 0 && p.Path == rel) {
			keep = append(keep, p)
		}
	}
	clear(e.pins[len(keep):])
	e.pins = append(keep, &pin{Path: rel, Ino: ino, Tier: tier, seq: e.pinSeq})
	e.pinSeq++
	if err := e.savePinsLocked(); err != nil {
		return nil, err
	}
	j, err := e.migrateLocked(rel, tier, ino, true, "pin")
	if j != nil && j.Ino == 0 && j.Path == rel {
		j.Ino = ino // the move is of the pinned file, not of one put in its place
	}
	return j, err
}

// canonical reports whether rel names a file as plans do: not empty, no
// empty, "." or ".." part.
func canonical(rel string) bool {
	if rel == "" {
		return false
	}
	for _, c := range strings.Split(rel, "/") {
		if c == "" || c == "." || c == ".." {
			return false
		}
	}
	return true
}

// Unpin lets the policy move the file at rel again: the pin bound to that
// file, or the one that last saw a file under that name.
func (e *Engine) Unpin(rel string) error {
	ino, err := e.store.FileIno(rel)
	known := err == nil
	e.mu.Lock()
	defer e.mu.Unlock()
	keep := e.pins[:0]
	n := len(e.pins)
	for _, p := range e.pins {
		if p.Path != rel && !(known && p.Ino == ino) {
			keep = append(keep, p)
		}
	}
	if len(keep) == n {
		return fmt.Errorf("%s is %w", rel, ErrNotPinned)
	}
	clear(e.pins[len(keep):])
	e.pins = keep
	return e.savePinsLocked()
}

func (e *Engine) savePinsLocked() error {
	if e.pinsPath == "" {
		return nil
	}
	pf := pinsFile{Version: pinsVersion, Pins: append([]*pin{}, e.pins...)}
	sort.Slice(pf.Pins, func(i, j int) bool { return pf.Pins[i].Path < pf.Pins[j].Path })
	b, _ := json.MarshalIndent(pf, "", "  ")
	tmp := e.pinsPath + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, e.pinsPath)
	}
	if err == nil {
		if d, derr := os.Open(filepath.Dir(e.pinsPath)); derr == nil {
			err = d.Sync()
			d.Close()
		}
	}
	if err == nil {
		e.pinsDirty = false
	}
	return err
}

func (e *Engine) enabledLocked() bool {
	if len(e.cfg.Thresholds) == 0 {
		return e.cfg.Policy.MigrateThreshold != -1
	}
	for _, t := range e.cfg.Thresholds {
		if t != -1 {
			return true
		}
	}
	return false
}

// Status reports the queue, the moves in flight and the totals.
func (e *Engine) Status() Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := Status{
		Enabled: e.enabledLocked(), PlanErrors: append([]string(nil), e.planErrors...), LastPlan: e.lastPlan,
		ThrottledSeconds: e.Throttled().Seconds(),
		Queued:           []JobStatus{}, InFlight: []JobStatus{},
	}
	if len(e.pins) > 0 {
		st.Pins = map[string]string{}
		for _, p := range e.pins {
			st.Pins[p.Path] = p.Tier
		}
	}
	for _, j := range e.queue {
		d, t := j.Progress()
		st.Queued = append(st.Queued, JobStatus{Path: j.Path, To: j.To, Reason: j.Reason, Done: d, Total: t})
	}
	for j := range e.running {
		d, t := j.Progress()
		st.InFlight = append(st.InFlight, JobStatus{Path: j.Path, To: j.To, Reason: j.Reason, Done: d, Total: t})
	}
	sort.Slice(st.InFlight, func(a, b int) bool { return st.InFlight[a].Path < st.InFlight[b].Path })
	return st
}

// Throttled is how long copies have waited for max_rate since the start.
func (e *Engine) Throttled() time.Duration { return time.Duration(e.throttled.Load()) }

// Queue counts the moves queued and running, and the bytes the running
// ones still have to copy: what the metrics show, without the job lists
// Status builds.
func (e *Engine) Queue() (queued, running int, bytesLeft int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for j := range e.running {
		d, t := j.Progress()
		bytesLeft += max(t-d, 0)
	}
	return len(e.queue), len(e.running), bytesLeft
}
