package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/policy"
	"github.com/tierfs/tierfs/policy/engine"
	"github.com/tierfs/tierfs/tiering"
)

// Adapter lets the policy engine drive a store: it turns the store's
// listing into the planner's snapshot, and the engine's move requests
// into moves, with the store's errors told in the engine's terms. Neither
// tiering nor the engine knows the other.
type Adapter struct {
	Store *tiering.Store
	// OnList, if set, sees each complete listing a plan takes (the
	// metrics count bytes per topic from it: no walk of their own).
	OnList func(tiering.Listing)
}

var _ engine.Store = Adapter{}

// Snapshot implements engine.Source.
func (a Adapter) Snapshot(now time.Time) (policy.Snapshot, error) {
	l, err := a.Store.ListFiles()
	if err == nil && a.OnList != nil {
		a.OnList(l)
	}
	snap := policy.Snapshot{Now: now, Complete: l.Complete}
	for _, t := range l.Tiers {
		snap.Tiers = append(snap.Tiers, policy.Tier{Name: t.Name, Capacity: t.Capacity, Used: t.Used})
	}
	snap.Files = make([]policy.File, 0, len(l.Files))
	for _, f := range l.Files {
		snap.Files = append(snap.Files, policy.File{
			Path: f.Path, Ino: f.Ino, Tier: f.Tier, Size: f.Allocated,
			ModTime: f.ModTime, LastRead: f.LastRead, PinTier: -1, Links: f.Links,
		})
	}
	return snap, err
}

// FileIno implements engine.Source.
func (a Adapter) FileIno(rel string) (uint64, error) {
	ino, err := a.Store.FileIno(rel)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
		// Both: the engine knows its own, the control server the errno.
		return 0, fmt.Errorf("%w: %w", engine.ErrNoFile, err)
	}
	return ino, err
}

// Move implements engine.Mover.
func (a Adapter) Move(ctx context.Context, m engine.MoveRequest) error {
	o := tiering.MoveOptions{Ino: m.Ino, Reason: moveReason(m), Progress: m.Progress}
	if m.Limiter != nil {
		o.Limiter = m.Limiter
	}
	err := a.Store.MoveWith(ctx, m.Path, m.To, o)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, tiering.ErrAlreadyThere):
		return fmt.Errorf("%w: %w", engine.ErrAlreadyThere, err)
	case errors.Is(err, tiering.ErrChanged):
		return fmt.Errorf("%w: %w", engine.ErrChanged, err)
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESTALE):
		return fmt.Errorf("%w: %w", engine.ErrGone, err)
	}
	return err
}

// moveReason is the ledger's reason for an engine's move: the first word
// of the plan's reason ("demote: fast above threshold 0.50"), "pin" for
// pins, "manual" for an operator's migrate.
func moveReason(m engine.MoveRequest) tiering.MoveReason {
	word, _, _ := strings.Cut(m.Reason, ":")
	switch r := tiering.MoveReason(word); r {
	case tiering.ReasonDemote, tiering.ReasonPromote, tiering.ReasonPin:
		return r
	}
	return tiering.ReasonManual
}
