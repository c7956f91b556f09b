package benchkit

import (
	"math"
	"testing"
)

func TestVerdict(t *testing.T) {
	tests := []struct {
		v    Verdict
		met  bool
		line string
	}{
		{Verdict{Section: "micro", Target: "1 MiB writes ≥ 1.5× mergerfs", Config: "the defaults (supervised, /dev/fuse)",
			Ratios: []float64{1.6, 1.55, 1.7, 1.4, 1.62}, Goal: 1.5}, true,
			"VERDICT micro: 1 MiB writes ≥ 1.5× mergerfs on the defaults (supervised, /dev/fuse): met; 1.60× (1.40–1.70), median of 5 rounds"},
		// The same rounds judged in every run: the lowest (1.40) misses.
		{Verdict{Section: "kafka", Target: "producer ≥ 1.5× raw in every run", Config: "defaults",
			Ratios: []float64{1.6, 1.55, 1.7, 1.4, 1.62}, Goal: 1.5, EveryRun: true}, false,
			"VERDICT kafka: producer ≥ 1.5× raw in every run on defaults: missed by 7% (1.40 against 1.50); 1.60× (1.40–1.70), lowest of 5 rounds"},
		{Verdict{Section: "micro", Target: "x", Config: "c", Goal: 1}, false,
			"VERDICT micro: x on c: n/a; n/a, median of 0 rounds"},
	}
	for _, tt := range tests {
		if got := tt.v.Met(); got != tt.met {
			t.Errorf("%s: Met() = %v, want %v", tt.v.Target, got, tt.met)
		}
		if got := tt.v.Line(); got != tt.line {
			t.Errorf("Line():\n got %s\nwant %s", got, tt.line)
		}
	}
	if j := (Verdict{Ratios: []float64{0.9, 1.1, 1.0}, EveryRun: true}).Judged(); j != 0.9 {
		t.Errorf("Judged, every run = %v, want 0.9", j)
	}
	if j := (Verdict{}).Judged(); !math.IsNaN(j) {
		t.Errorf("Judged of no rounds = %v, want NaN", j)
	}
}
