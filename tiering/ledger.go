package tiering

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/tierfs/tierfs/internal/iostats"
)

// The move ledger: every move the store is asked for, counted once, by
// why it was asked for and how it ended. It is the only count of moves:
// `tierfs status` shows it and the metrics export it.

// MoveReason is why a move was asked for.
type MoveReason string

// The reasons of a move.
const (
	ReasonDemote  MoveReason = "demote"  // the policy: a tier above its threshold
	ReasonPromote MoveReason = "promote" // the policy: a file read, or new, on a slower tier
	ReasonSpill   MoveReason = "spill"   // a write found its tier full
	ReasonManual  MoveReason = "manual"  // an operator's (tierfs migrate), or Store.Move
	ReasonPin     MoveReason = "pin"     // a pin (tierfs pin, or the policy keeping one)
)

// MoveReasons lists the reasons, in the order status shows them.
var MoveReasons = []MoveReason{ReasonDemote, ReasonPromote, ReasonSpill, ReasonManual, ReasonPin}

// MoveOutcome is how a move ended.
type MoveOutcome string

// The outcomes of a move. Only OutcomeMoved moved anything and only
// OutcomeFailed is a failure: the others had nothing (left) to do.
const (
	OutcomeMoved    MoveOutcome = "moved"
	OutcomeGone     MoveOutcome = "gone"     // the file was deleted (ErrGone, ENOENT)
	OutcomeChanged  MoveOutcome = "changed"  // renamed or replaced since asked (ErrChanged, ESTALE)
	OutcomeBusy     MoveOutcome = "busy"     // another move of the file was under way (ErrBusy)
	OutcomeCanceled MoveOutcome = "canceled" // shutdown (context canceled)
	OutcomeFailed   MoveOutcome = "failed"
)

// MoveOutcomes lists the outcomes.
var MoveOutcomes = []MoveOutcome{OutcomeMoved, OutcomeGone, OutcomeChanged, OutcomeBusy, OutcomeCanceled, OutcomeFailed}

// Outcome classifies the error a move returned; it is the one
// classification of moves in tierfs.
func Outcome(err error) MoveOutcome {
	switch {
	case err == nil:
		return OutcomeMoved
	case errors.Is(err, ErrBusy):
		return OutcomeBusy
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return OutcomeCanceled
	case errors.Is(err, ErrChanged), errors.Is(err, unix.ESTALE):
		return OutcomeChanged
	case errors.Is(err, ErrGone), errors.Is(err, unix.ENOENT):
		return OutcomeGone
	}
	return OutcomeFailed
}

// Pacer paces a move's copy: *rate.Limiter, or one that also measures
// the time it makes the copy wait.
type Pacer interface {
	Limit() rate.Limit
	Burst() int
	WaitN(ctx context.Context, n int) error
}

// MoveStats is the ledger as `tierfs status` shows it: moves since the
// mount. Started counts every move the store was asked for and did not
// find done already (a file already on its tier counts nowhere);
// Started = InFlight + Moved + Skipped + Failed.
type MoveStats struct {
	Started  int64 `json:"started"`
	InFlight int64 `json:"in_flight"`
	Moved    int64 `json:"moved"`
	// Skipped: the move had nothing (left) to do: the file was deleted,
	// renamed or replaced, already moving, or the daemon was stopping.
	Skipped int64 `json:"skipped"`
	Failed  int64 `json:"failed"`
	// Spills are the moves (moved) of files whose tier was full.
	Spills     int64         `json:"spills"`
	BytesMoved int64         `json:"bytes_moved"`
	ByReason   []ReasonStats `json:"by_reason"`
	// LastErrors are the last failures, oldest first: time, file, tiers
	// and error.
	LastErrors []string `json:"last_errors,omitempty"`
}

// ReasonStats is the ledger's line for one reason.
type ReasonStats struct {
	Reason     MoveReason            `json:"reason"`
	Started    int64                 `json:"started"`
	Outcomes   map[MoveOutcome]int64 `json:"outcomes"`
	BytesMoved int64                 `json:"bytes_moved"`
	// MovedTo counts the moves that moved, by destination tier.
	MovedTo map[string]int64 `json:"moved_to,omitempty"`
}

const maxLastErrors = 10

// ledger is the store's count of moves. mu is a leaf; moves are few and
// long, so one mutex serves.
type ledger struct {
	mu       sync.Mutex
	claims   map[*File]*moveClaim
	reasons  map[MoveReason]*reasonCount
	inFlight int64
	errs     []string
	durs     map[MoveReason]*iostats.Histogram // of the moves that moved
}

type reasonCount struct {
	started  int64
	outcomes map[MoveOutcome]int64
	bytes    int64
	movedTo  map[string]int64
}

// moveClaim is a move under way: who asked and why. A file has at most
// one; the move that holds it is the only one that runs moveFileWith on
// the file, so moveDone finds its own.
type moveClaim struct {
	reason   MoveReason
	name     string
	recorded bool // moveDone counted it
}

func (l *ledger) countLocked(r MoveReason) *reasonCount {
	if l.reasons == nil {
		l.reasons = map[MoveReason]*reasonCount{}
		l.durs = map[MoveReason]*iostats.Histogram{}
		for _, r := range MoveReasons {
			l.durs[r] = iostats.NewHistogram(iostats.MoveBounds)
		}
	}
	c := l.reasons[r]
	if c == nil {
		c = &reasonCount{outcomes: map[MoveOutcome]int64{}, movedTo: map[string]int64{}}
		l.reasons[r] = c
	}
	return c
}

// claim makes f's move the caller's; false when another holds it.
func (l *ledger) claim(f *File, reason MoveReason, name string) (*moveClaim, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.claims == nil {
		l.claims = map[*File]*moveClaim{}
	}
	if l.claims[f] != nil {
		return nil, false
	}
	c := &moveClaim{reason: reason, name: name}
	l.claims[f] = c
	return c, true
}

// begin counts a claimed move as started.
func (l *ledger) begin(c *moveClaim) {
	l.mu.Lock()
	l.countLocked(c.reason).started++
	l.inFlight++
	l.mu.Unlock()
}

// unclaim ends f's claim c; a started move that moveDone did not count
// is counted here with err.
func (l *ledger) unclaim(f *File, c *moveClaim, started bool, src, dest *Tier, err error) {
	l.mu.Lock()
	delete(l.claims, f)
	if started && !c.recorded {
		l.endLocked(c, src, dest, 0, 0, err)
	}
	l.mu.Unlock()
}

// skip counts a move that ended before it began (no such file, a file
// that changed, busy).
func (l *ledger) skip(reason MoveReason, name string, err error) {
	if reason == "" {
		reason = ReasonManual
	}
	l.mu.Lock()
	l.countLocked(reason).started++
	l.inFlight++
	l.endLocked(&moveClaim{reason: reason, name: name}, nil, nil, 0, 0, err)
	l.mu.Unlock()
}

// done counts the end of f's move; moveDone calls it. It returns the
// claim's reason and name for the log.
func (l *ledger) done(f *File, src, dest *Tier, bytes int64, dur time.Duration, err error) (MoveReason, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.claims[f]
	if c == nil {
		// A move that did not come through moveRecorded: counted, as
		// an operator's.
		c = &moveClaim{reason: ReasonManual}
		l.countLocked(c.reason).started++
		l.inFlight++
	} else if c.recorded {
		return c.reason, c.name
	}
	c.recorded = true
	l.endLocked(c, src, dest, bytes, dur, err)
	return c.reason, c.name
}

func (l *ledger) endLocked(c *moveClaim, src, dest *Tier, bytes int64, dur time.Duration, err error) {
	rc := l.countLocked(c.reason)
	o := Outcome(err)
	rc.outcomes[o]++
	l.inFlight--
	switch o {
	case OutcomeMoved:
		rc.bytes += bytes
		if dest != nil {
			rc.movedTo[dest.Name]++
		}
		l.durs[c.reason].Observe(dur)
	case OutcomeFailed:
		what := c.name
		if what == "" {
			what = "a file"
		}
		if src != nil && dest != nil {
			what += fmt.Sprintf(" from %s to %s", src.Name, dest.Name)
		}
		l.errs = append(l.errs, fmt.Sprintf("%s %s (%s): %v", time.Now().UTC().Format(time.RFC3339), what, c.reason, err))
		if len(l.errs) > maxLastErrors {
			l.errs = l.errs[len(l.errs)-maxLastErrors:]
		}
	}
}

// stats is the ledger as status shows it.
func (l *ledger) stats() MoveStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := MoveStats{InFlight: l.inFlight, LastErrors: append([]string(nil), l.errs...), ByReason: []ReasonStats{}}
	for _, r := range MoveReasons {
		rs := ReasonStats{Reason: r, Outcomes: map[MoveOutcome]int64{}}
		if c := l.reasons[r]; c != nil {
			rs.Started, rs.BytesMoved = c.started, c.bytes
			for o, n := range c.outcomes {
				rs.Outcomes[o] = n
			}
			if len(c.movedTo) > 0 {
				rs.MovedTo = map[string]int64{}
				for t, n := range c.movedTo {
					rs.MovedTo[t] = n
				}
			}
		}
		st.Started += rs.Started
		st.BytesMoved += rs.BytesMoved
		for o, n := range rs.Outcomes {
			switch o {
			case OutcomeMoved:
				st.Moved += n
				if r == ReasonSpill {
					st.Spills += n
				}
			case OutcomeFailed:
				st.Failed += n
			default:
				st.Skipped += n
			}
		}
		st.ByReason = append(st.ByReason, rs)
	}
	return st
}

// duration is the histogram of how long the moves that moved took.
func (l *ledger) duration(r MoveReason) iostats.HistogramSnapshot {
	l.mu.Lock()
	l.countLocked(r)
	h := l.durs[r]
	l.mu.Unlock()
	if h == nil {
		return iostats.NewHistogram(iostats.MoveBounds).Snapshot()
	}
	return h.Snapshot()
}

// MoveStats is the move ledger: every move since the mount, by reason and
// outcome.
func (s *Store) MoveStats() MoveStats { return s.ledger.stats() }

// MoveDuration is how long the moves for reason r that moved took.
func (s *Store) MoveDuration(r MoveReason) iostats.HistogramSnapshot { return s.ledger.duration(r) }

// moveRecorded moves f to dest on the ledger: the one way into
// moveFileWith. A file already on dest is no move and counts nowhere:
// ErrAlreadyThere.
func (s *Store) moveRecorded(ctx context.Context, f *File, dest *Tier, o *MoveOptions, name string) error {
	reason := o.Reason
	if reason == "" {
		reason = ReasonManual
	}
	c, ok := s.ledger.claim(f, reason, name)
	if !ok {
		s.ledger.skip(reason, name, ErrBusy)
		return ErrBusy
	}
	// Only a move changes f.tier, and this claim keeps others out.
	f.mu.RLock()
	src := f.tier
	f.mu.RUnlock()
	if src == dest {
		s.ledger.unclaim(f, c, false, nil, nil, nil)
		return ErrAlreadyThere
	}
	// This move holds a reference on f, so no passthrough handle can
	// come once this says there is none (passthrough.go).
	if s.passthroughHeld(f) {
		s.ledger.unclaim(f, c, false, nil, nil, nil)
		s.ledger.skip(reason, name, ErrPassthrough)
		return ErrPassthrough
	}
	s.ledger.begin(c)
	err := s.moveFileWith(ctx, f, dest, o)
	s.ledger.unclaim(f, c, true, src, dest, err)
	return err
}
