package benchkit

import (
	"math"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{5}, 5},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, 10, 1, 1000, 10}, 10},
		{[]float64{-1, -3}, -2},
	} {
		in := append([]float64(nil), c.xs...)
		if got := Median(c.xs); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", in, got, c.want)
		}
		for i := range in {
			if in[i] != c.xs[i] {
				t.Fatalf("Median reordered its input: %v, was %v", c.xs, in)
			}
		}
	}
	if got := Median(nil); !math.IsNaN(got) {
		t.Errorf("Median(nil) = %v, want NaN", got)
	}
}

func TestSpread(t *testing.T) {
	lo, hi := Spread([]float64{3, -2, 7.5, 0})
	if lo != -2 || hi != 7.5 {
		t.Errorf("Spread = %v, %v, want -2, 7.5", lo, hi)
	}
	lo, hi = Spread([]float64{4})
	if lo != 4 || hi != 4 {
		t.Errorf("Spread of one = %v, %v, want 4, 4", lo, hi)
	}
	lo, hi = Spread(nil)
	if !math.IsNaN(lo) || !math.IsNaN(hi) {
		t.Errorf("Spread(nil) = %v, %v, want NaN, NaN", lo, hi)
	}
}

func TestNumCellRatio(t *testing.T) {
	for _, c := range []struct {
		x    float64
		want string
	}{
		{1234.6, "1235"}, {45.67, "45.7"}, {3.14159, "3.14"}, {0.81234, "0.812"},
		{0.0012345, "0.00123"}, {0, "0"}, {math.NaN(), "n/a"}, {-12.34, "-12.3"},
	} {
		if got := Num(c.x); got != c.want {
			t.Errorf("Num(%v) = %q, want %q", c.x, got, c.want)
		}
	}
	if got, want := Cell([]float64{300, 100, 200}), "200 (100–300)"; got != want {
		t.Errorf("Cell = %q, want %q", got, want)
	}
	if got := Cell(nil); got != "n/a" {
		t.Errorf("Cell(nil) = %q, want n/a", got)
	}
	if got, want := Ratio([]float64{3, 3, 3}, []float64{2, 1, 2}), "1.50×"; got != want {
		t.Errorf("Ratio = %q, want %q", got, want)
	}
	if got := Ratio([]float64{1}, []float64{0}); got != "n/a" {
		t.Errorf("Ratio over 0 = %q, want n/a", got)
	}
	if got := Ratio(nil, []float64{1}); got != "n/a" {
		t.Errorf("Ratio of nothing = %q, want n/a", got)
	}
}

func TestPaired(t *testing.T) {
	// Round by round: the ratio of each pair, not of the medians.
	a := []float64{55, 44, 43, 59, 70}
	b := []float64{48, 50, 55, 79}
	got := Paired(a, b)
	want := []float64{55.0 / 48, 44.0 / 50, 43.0 / 55, 59.0 / 79}
	if len(got) != len(want) {
		t.Fatalf("Paired = %v, want %v (only the rounds both have)", got, want)
	}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-12 {
			t.Errorf("Paired[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	if got := Paired([]float64{1, 2}, []float64{0, 4}); len(got) != 1 || got[0] != 0.5 {
		t.Errorf("Paired with a zero = %v, want [0.5] (the zero's pair left out)", got)
	}
	if got := RatioCell(Paired(a, b)); got != "0.831× (0.747–1.15)" {
		t.Errorf("RatioCell = %q", got)
	}
	if got := RatioCell(nil); got != "n/a" {
		t.Errorf("RatioCell(nil) = %q, want n/a", got)
	}
}

func TestPercentile(t *testing.T) {
	var hundred []float64
	for i := 100; i >= 1; i-- { // reversed: Percentile sorts a copy
		hundred = append(hundred, float64(i))
	}
	thousand := make([]float64, 1000)
	for i := range thousand {
		thousand[i] = float64(i + 1)
	}
	for _, c := range []struct {
		xs   []float64
		q    float64
		want float64
	}{
		{hundred, 50, 50},
		{hundred, 99, 99},
		{hundred, 99.9, 100},
		{hundred, 100, 100},
		{hundred, 0.5, 1},
		{thousand, 99.9, 999},
		{thousand, 99, 990},
		{[]float64{7}, 99.9, 7},
		{[]float64{3, 1, 2}, 50, 2},
	} {
		if got := Percentile(c.xs, c.q); got != c.want {
			t.Errorf("Percentile(%d samples, %v) = %v, want %v", len(c.xs), c.q, got, c.want)
		}
	}
	if hundred[0] != 100 {
		t.Errorf("Percentile reordered its input")
	}
	for _, q := range []float64{0, -1, 101, math.NaN()} {
		if got := Percentile(hundred, q); !math.IsNaN(got) {
			t.Errorf("Percentile(q=%v) = %v, want NaN", q, got)
		}
	}
	if got := Percentile(nil, 50); !math.IsNaN(got) {
		t.Errorf("Percentile(nil) = %v, want NaN", got)
	}
}
