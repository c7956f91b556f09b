package plan

import "time"

// Sample is what a running daemon's status says at one moment, as far as
// the planner reads it.
type Sample struct {
	At       time.Time
	FastUsed int64 // the first tier's used bytes
	AllUsed  int64 // every tier's used bytes together
	Moved    int64 // bytes moved since the mount (moves of every kind)
	Moving   bool  // a move was queued or in flight
}

// Rates is what two samples say of the traffic between them, bytes/s.
type Rates struct {
	Seconds float64
	// Ingest is what was written into the fast tier: its growth plus what
	// the moves took out of it (a promotion or a deletion meanwhile makes
	// it an estimate).
	Ingest float64
	// Growth is the fast tier's net growth (negative while it drains).
	Growth float64
	// Moved is the moves' rate. It is the slow tier's bandwidth only
	// while moves ran the whole time (Busy).
	Moved float64
	Busy  bool
}

// RatesBetween compares two samples, a before b. ok is false when b is
// not after a.
func RatesBetween(a, b Sample) (r Rates, ok bool) {
	r.Seconds = b.At.Sub(a.At).Seconds()
	if r.Seconds <= 0 {
		return r, false
	}
	moved := float64(b.Moved - a.Moved)
	r.Growth = float64(b.FastUsed-a.FastUsed) / r.Seconds
	r.Moved = moved / r.Seconds
	r.Ingest = max(r.Growth+r.Moved, 0)
	r.Busy = a.Moving && b.Moving
	return r, true
}
