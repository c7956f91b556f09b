package benchkit

import (
	"fmt"
	"math"
)

// Verdict is one target of the issue judged on one configuration: the
// ratios of the rounds (each round ran every target once, in turns), the
// goal, and which of them is judged: the median, or the lowest round for
// a target that must hold in every run.
type Verdict struct {
	Section string // "micro", "kafka"
	Target  string // "1 MiB writes ≥ 1.5× mergerfs"
	Config  string // what was judged: "the defaults (supervised, /dev/fuse)"
	Ratios  []float64
	Goal    float64
	// EveryRun judges the lowest round instead of the median.
	EveryRun bool
}

// Judged is the figure the verdict rests on: the median of the rounds'
// ratios, or the lowest with EveryRun; NaN with no rounds.
func (v Verdict) Judged() float64 {
	if v.EveryRun {
		lo, _ := Spread(v.Ratios)
		return lo
	}
	return Median(v.Ratios)
}

// Met says whether the judged figure reaches the goal.
func (v Verdict) Met() bool {
	j := v.Judged()
	return !math.IsNaN(j) && j >= v.Goal
}

// Outcome is "met", "missed by 27% (1.10 against 1.50)" or "n/a".
func (v Verdict) Outcome() string {
	j := v.Judged()
	switch {
	case math.IsNaN(j) || math.IsInf(j, 0):
		return "n/a"
	case j >= v.Goal:
		return "met"
	}
	return fmt.Sprintf("missed by %.0f%% (%.2f against %.2f)", 100*(v.Goal-j)/v.Goal, j, v.Goal)
}

// Line is the verdict on one line of make bench's output: section,
// target, configuration, outcome, and the ratio with its spread:
//
//	VERDICT micro: 1 MiB writes ≥ 1.5× mergerfs on the defaults (supervised, /dev/fuse): met; 1.62× (1.55–1.70), median of 5 rounds
func (v Verdict) Line() string {
	on := fmt.Sprintf("median of %d rounds", len(v.Ratios))
	if v.EveryRun {
		on = fmt.Sprintf("lowest of %d rounds", len(v.Ratios))
	}
	return fmt.Sprintf("VERDICT %s: %s on %s: %s; %s, %s", v.Section, v.Target, v.Config, v.Outcome(), RatioCell(v.Ratios), on)
}
