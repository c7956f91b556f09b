package policy

import "time"

// Tier is one tier as the planner sees it, fastest first.
type Tier struct {
	Name     string
	Capacity int64 // bytes
	Used     int64 // bytes
	// Threshold is the tier's effective migrate_threshold (its own or
	// [policy]'s): a fraction in (0,1], or -1 for no moves into or out of
	// it by the policy.
	Threshold float64
}

// File is one regular file as the planner sees it.
type File struct {
	Path string // relative to the mount root, "/"-separated
	Ino  uint64 // tierfs inode number: a move names it so a renamed or replaced file is not moved by mistake
	Tier int    // index into Snapshot.Tiers
	Size int64  // bytes it takes on its tier (allocated)
	// ModTime is the last write (data or size change).
	ModTime time.Time
	// LastRead is the last read through the mount; zero if none since
	// mount.
	LastRead time.Time
	// Pinned files are never moved by the plan: a [policy] pin glob or a
	// pin set from the CLI (PinTier) matched them.
	Pinned bool
	// PinTier, when >= 0, is the tier a CLI pin wants the file on; the
	// plan moves it there (and nowhere else). -1 when not pinned so.
	PinTier int
	// Links is the file's number of names. A file with several is listed
	// under each (one Ino) and planned once: a move takes all its names.
	Links int
}

// Snapshot is everything Plan looks at.
type Snapshot struct {
	Now   time.Time
	Tiers []Tier
	Files []File
	// Complete is set when no name was removed or renamed while the
	// snapshot was taken: a file that existed before it and is not in it
	// is gone. Without it, a file may be missing because it was renamed
	// into a directory already walked.
	Complete bool
}

// Move is one planned move.
type Move struct {
	Path     string
	Ino      uint64
	From, To int
	Bytes    int64
	Reason   string // "demote: fast above threshold 0.50", "promote: read on slow", "pin"
}
