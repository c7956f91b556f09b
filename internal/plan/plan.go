// Package plan sizes a tierfs fast tier for Kafka bursts: how long a
// burst is absorbed before the fast tier is full, how long the tier takes
// to drain again, the ingest the tiers sustain, and the threshold that
// absorbs a burst of a given length. The formulas are pure (no I/O) and
// unit-free: sizes and rates in any one unit (bytes and bytes/s, or MiB
// and MiB/s), times in seconds. `tierfs plan` prints them and the burst
// benchmark (integration/bench, TestBurst) checks its measurements
// against them. MeasureWrite, in measure.go, times a tier's writes.
//
// The model, Pafka's: a fast tier of capacity C with migrate_threshold t
// keeps (1 − t)·C free in steady operation, the reserve. A burst writes
// at R; while the tier is above t·C the policy moves files down at M, the
// smaller of the slow tier's write bandwidth and [policy] max_rate. The
// reserve fills at R − M and the burst is absorbed for (1 − t)·C/(R − M);
// then writes go at the slow tier's speed (spills). Between bursts the
// producers write at L and the excess drains at M − L. In the long run
// the tiers hold no more than M: everything written ends on the slow
// tier.
package plan

import (
	"math"
)

// Absorb is how long room is absorbed: filled at in while out is taken
// away, room/(in − out); +Inf when out keeps up (in ≤ out). With out = 0
// it is the (1 − t)·C/R.
func Absorb(room, in, out float64) float64 {
	if in <= out {
		return math.Inf(1)
	}
	return max(room, 0) / (in - out)
}

// Drain is how long excess takes to go at out while in keeps coming,
// excess/(out − in); +Inf when out does not keep up (out ≤ in).
func Drain(excess, out, in float64) float64 {
	if out <= in {
		if excess <= 0 {
			return 0
		}
		return math.Inf(1)
	}
	return max(excess, 0) / (out - in)
}

// Demotion is the rate the policy moves files down at: the slow tier's
// write bandwidth, capped by max_rate (0: no cap).
func Demotion(slowBW, maxRate float64) float64 {
	if maxRate > 0 && maxRate < slowBW {
		return maxRate
	}
	return slowBW
}

// TimeUntilFull is how long a burst at rate takes to fill a tier of
// capacity bytes from used: at rate up to the threshold's mark t·C (no
// move starts below it), then at rate − demotion; +Inf when the moves
// keep up.
func TimeUntilFull(capacity, threshold, used, rate, demotion float64) float64 {
	mark := math.Min(math.Max(threshold, 0), 1) * capacity
	used = math.Max(used, 0)
	var below float64
	if used < mark {
		if rate <= 0 {
			return math.Inf(1)
		}
		below = (mark - used) / rate
		used = mark
	}
	return below + Absorb(capacity-used, rate, demotion)
}

// ReserveFor is the reserve a burst of duration seconds at rate needs
// when demotion moves files down meanwhile, with lag seconds at the full
// rate first (the policy notices a crossing at its next plan).
func ReserveFor(duration, rate, demotion, lag float64) float64 {
	return max(rate-demotion, 0)*duration + max(rate, 0)*max(lag, 0)
}

// ThresholdFor is the highest migrate_threshold whose reserve (1 − t)·C
// holds reserve bytes, rounded down to a hundredth (a lower threshold
// keeps more room; a higher one keeps more data on the fast tier). ok is
// false when no threshold does: t would be under MinThreshold.
func ThresholdFor(capacity, reserve float64) (t float64, ok bool) {
	if capacity <= 0 {
		return 0, false
	}
	t = math.Floor((1-reserve/capacity)*100+1e-9) / 100
	t = min(t, 1)
	if t < MinThreshold {
		return t, false
	}
	return t, true
}

// MinThreshold is the lowest threshold ThresholdFor recommends: the
// policy demotes down to threshold − 0.05 (policy.Hysteresis), so a lower
// one empties the fast tier of all but the newest files.
const MinThreshold = 0.10

// Input is what Compute plans from. Sizes in bytes, rates in bytes/s,
// durations in seconds.
type Input struct {
	Capacity  float64 // the fast tier's capacity, C
	Threshold float64 // its migrate_threshold, t, in (0, 1]
	// Used is the fast tier's usage when the burst begins; < 0 means
	// t·C, where steady operation leaves it.
	Used   float64
	Peak   float64 // the producers' peak rate, R
	SlowBW float64 // the slow tier's write bandwidth, W
	// FastBW is the fast tier's write bandwidth; 0: not known. A burst
	// goes no faster than it.
	FastBW  float64
	MaxRate float64 // [policy] max_rate; 0: no cap
	Base    float64 // the producers' rate between bursts, L
	// Burst is the length of the burst to absorb, for the recommended
	// threshold; 0: none asked.
	Burst float64
	// Lag is how long the policy takes to notice the fast tier is over
	// its threshold (its interval); the recommendation budgets it at the
	// full rate.
	Lag float64
}

// Result is what Compute finds. Times are seconds; Inf marks those that
// never end (the moves keep up).
type Result struct {
	Reserve   float64 // (1 − t)·C
	Demotion  float64 // Demotion(SlowBW, MaxRate)
	Rate      float64 // the burst's rate on the fast tier: Peak, capped by FastBW
	FillRate  float64 // Rate − Demotion: how fast the reserve fills
	Absorbed  float64 // TimeUntilFull from Used: how long the burst is absorbed
	Drain     float64 // Drain(Reserve, Demotion, Base): a full reserve back to t·C after a burst
	Sustained float64 // the ingest the tiers hold in the long run: Demotion
	// Recommended is set when Input.Burst is.
	Recommended *Recommendation
}

// Recommendation is the threshold for a burst of Input.Burst seconds.
type Recommendation struct {
	Burst   float64 // seconds
	Reserve float64 // ReserveFor(Burst, Rate, Demotion, Lag)
	// Threshold is ThresholdFor(Capacity, Reserve); OK false when no
	// threshold of at least MinThreshold holds the reserve.
	Threshold float64
	OK        bool
	// Capacity is the fast tier that holds the reserve with the current
	// threshold: Reserve/(1 − t).
	Capacity float64
	// Absorbed is how long the burst is absorbed with Threshold.
	Absorbed float64
}

// Compute plans in.
func Compute(in Input) Result {
	var r Result
	t := math.Min(math.Max(in.Threshold, 0), 1)
	r.Reserve = (1 - t) * in.Capacity
	r.Demotion = Demotion(in.SlowBW, in.MaxRate)
	r.Rate = in.Peak
	if in.FastBW > 0 && in.FastBW < r.Rate {
		r.Rate = in.FastBW
	}
	r.FillRate = r.Rate - r.Demotion
	used := in.Used
	if used < 0 {
		used = t * in.Capacity
	}
	r.Absorbed = TimeUntilFull(in.Capacity, t, used, r.Rate, r.Demotion)
	r.Drain = Drain(r.Reserve, r.Demotion, in.Base)
	r.Sustained = r.Demotion
	if in.Burst > 0 {
		rec := &Recommendation{Burst: in.Burst, Reserve: ReserveFor(in.Burst, r.Rate, r.Demotion, in.Lag)}
		rec.Threshold, rec.OK = ThresholdFor(in.Capacity, rec.Reserve)
		if t < 1 {
			rec.Capacity = rec.Reserve / (1 - t)
		} else {
			rec.Capacity = math.Inf(1)
		}
		if rec.OK {
			rec.Absorbed = Absorb((1-rec.Threshold)*in.Capacity, r.Rate, r.Demotion)
		}
		r.Recommended = rec
	}
	return r
}
