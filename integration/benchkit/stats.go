package benchkit

import (
	"fmt"
	"math"
	"sort"
	"strconv"
)

// Median is the median of the samples (the mean of the two middle ones
// for an even count); NaN for none. xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Spread is the smallest and the largest sample; NaN, NaN for none.
func Spread(xs []float64) (lo, hi float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN()
	}
	lo, hi = xs[0], xs[0]
	for _, x := range xs[1:] {
		lo = math.Min(lo, x)
		hi = math.Max(hi, x)
	}
	return lo, hi
}

// Num formats a figure with three significant digits, or as a whole
// number from 100 up, never with an exponent: 1234.6 -> "1235", 45.67 ->
// "45.7", 0.8123 -> "0.812". NaN and infinities -> "n/a".
func Num(x float64) string {
	switch {
	case math.IsNaN(x) || math.IsInf(x, 0):
		return "n/a"
	case x == 0:
		return "0"
	}
	a := math.Abs(x)
	digits := 0
	switch {
	case a >= 100:
		digits = 0
	case a >= 10:
		digits = 1
	case a >= 1:
		digits = 2
	default:
		digits = 2 - int(math.Floor(math.Log10(a)))
	}
	return strconv.FormatFloat(x, 'f', digits, 64)
}

// Cell is "median (min–max)" of the samples, for a table cell.
func Cell(xs []float64) string {
	if len(xs) == 0 {
		return "n/a"
	}
	lo, hi := Spread(xs)
	return fmt.Sprintf("%s (%s–%s)", Num(Median(xs)), Num(lo), Num(hi))
}

// Ratio is the ratio of the medians of a and b, formatted as "1.23×";
// "n/a" when either has no samples or b's median is 0.
func Ratio(a, b []float64) string {
	ma, mb := Median(a), Median(b)
	if math.IsNaN(ma) || math.IsNaN(mb) || mb == 0 {
		return "n/a"
	}
	return Num(ma/mb) + "×"
}

// Paired is the ratio of each pair of samples, a[i]/b[i], for the runs
// both have (a pair with b[i] == 0 is left out): two targets measured
// in turns, round by round, on a machine whose speed drifts between
// rounds.
func Paired(a, b []float64) []float64 {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if b[i] != 0 {
			rs = append(rs, a[i]/b[i])
		}
	}
	return rs
}

// RatioCell is Cell for ratios: "0.88× (0.75–1.14)".
func RatioCell(rs []float64) string {
	if len(rs) == 0 {
		return "n/a"
	}
	lo, hi := Spread(rs)
	return fmt.Sprintf("%s× (%s–%s)", Num(Median(rs)), Num(lo), Num(hi))
}

// Percentile is the q-th percentile (0 < q ≤ 100) of the samples by the
// nearest-rank method: the smallest sample with at least q% of the
// samples at or below it, so p100 is the largest and no value is
// interpolated between two samples. NaN for none or q out of range. xs is
// not modified.
func Percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 || !(q > 0 && q <= 100) {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	// The epsilon keeps 99.9% of 1000 at rank 999 despite float rounding.
	rank := int(math.Ceil(q/100*float64(len(s)) - 1e-9))
	return s[min(max(rank, 1), len(s))-1]
}
