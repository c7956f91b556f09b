// Package iostats holds the counters that the request and move paths
// update as they go: fixed arrays of atomics, so that counting takes no
// lock and allocates nothing. internal/metrics reads them when scraped.
// It imports nothing of tierfs: fs and tiering both count into it.
package iostats

import (
	"sync/atomic"
	"time"
)

// Histogram counts durations into fixed buckets.
type Histogram struct {
	bounds []int64 // upper bounds, nanoseconds, ascending
	counts []atomic.Uint64
	sum    atomic.Int64 // nanoseconds
}

// NewHistogram makes a histogram with the given upper bounds (ascending);
// one more bucket takes what lies above the last.
func NewHistogram(bounds []time.Duration) *Histogram {
	h := &Histogram{bounds: make([]int64, len(bounds)), counts: make([]atomic.Uint64, len(bounds)+1)}
	for i, b := range bounds {
		h.bounds[i] = int64(b)
	}
	return h
}

// Observe counts one duration.
func (h *Histogram) Observe(d time.Duration) {
	ns := int64(d)
	i := 0
	for i < len(h.bounds) && ns > h.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(ns)
}

// HistogramSnapshot is a histogram as Prometheus wants it: cumulative
// counts by upper bound in seconds.
type HistogramSnapshot struct {
	Count   uint64
	Sum     float64 // seconds
	Buckets map[float64]uint64
}

// Snapshot reads the histogram. Buckets and count are read one after the
// other while others may observe: the count is the sum of the buckets
// read, so that the two agree.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Buckets: make(map[float64]uint64, len(h.bounds))}
	var cum uint64
	for i := range h.counts {
		cum += h.counts[i].Load()
		if i < len(h.bounds) {
			s.Buckets[time.Duration(h.bounds[i]).Seconds()] = cum
		}
	}
	s.Count = cum
	s.Sum = time.Duration(h.sum.Load()).Seconds()
	return s
}

// LatencyBounds are the buckets of a request's latency: tens of
// microseconds (a getattr) to seconds (an fsync on a slow disk).
var LatencyBounds = []time.Duration{
	25 * time.Microsecond, 50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond,
	500 * time.Microsecond, time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
	250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
}

// MoveBounds are the buckets of a move's duration: a small file on a
// fast disk to a large segment copied at a capped rate.
var MoveBounds = []time.Duration{
	10 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond, time.Second,
	2500 * time.Millisecond, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 30 * time.Minute,
}

// MaxErrno bounds the errnos counted one by one; larger ones (none on
// Linux today) count as MaxErrno.
const MaxErrno = 255

// Requests counts requests by operation: how many, how long, and the
// errors they answered.
type Requests struct {
	names   []string
	latency []*Histogram
	errnos  [MaxErrno + 1]atomic.Uint64
}

// NewRequests makes the counters of the operations named names; an
// operation is its index in names.
func NewRequests(names []string) *Requests {
	r := &Requests{names: names, latency: make([]*Histogram, len(names))}
	for i := range names {
		r.latency[i] = NewHistogram(LatencyBounds)
	}
	return r
}

// Done counts a request of operation op that took d and answered errno
// (0: success).
func (r *Requests) Done(op int, d time.Duration, errno int32) {
	r.latency[op].Observe(d)
	if errno != 0 {
		r.errnos[min(max(errno, 0), MaxErrno)].Add(1)
	}
}

// Names are the operations, by index.
func (r *Requests) Names() []string { return r.names }

// Latency is the histogram of operation op.
func (r *Requests) Latency(op int) *Histogram { return r.latency[op] }

// Errors counts the error replies by errno (index).
func (r *Requests) Errors() [MaxErrno + 1]uint64 {
	var out [MaxErrno + 1]uint64
	for i := range r.errnos {
		out[i] = r.errnos[i].Load()
	}
	return out
}
