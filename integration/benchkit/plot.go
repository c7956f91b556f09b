package benchkit

// A small SVG line-plot writer for the benchmark reports: time series on
// one or two y axes, shaded x ranges (bursts), horizontal reference lines
// (a threshold, a capacity), axis ticks at round numbers and a legend.
// No third-party plotting library: the output is plain SVG 1.1 that a
// browser, GitHub's Markdown view or an image viewer shows as is.

import (
	"bytes"
	"errors"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Series is one line of a plot. X and Y have the same length; a point
// whose X or Y is NaN or infinite breaks the line there (a gap).
type Series struct {
	Name string
	X, Y []float64
	// Right puts the series on the right-hand y axis (Plot.Y2Label).
	Right bool
	// Color is an SVG colour; "" picks one from the palette.
	Color string
	// Dashed draws the line dashed.
	Dashed bool
	// Step draws each value over the interval from the previous point to
	// its own X (a step function), for values that are averages over
	// that interval.
	Step bool
}

// Band is a shaded range of x, e.g. a burst.
type Band struct {
	X0, X1 float64
	Label  string // drawn at the top of the band; may be ""
}

// HLine is a horizontal reference line at Y on the left (or right) axis.
type HLine struct {
	Y     float64
	Right bool
	Label string
	Color string
}

// Plot is a line plot. The zero values of Width and Height mean 900×420.
type Plot struct {
	Title   string
	XLabel  string
	YLabel  string // left axis
	Y2Label string // right axis; used when a series has Right set
	Series  []Series
	Bands   []Band
	HLines  []HLine
	Width   int
	Height  int
	// YMin/YMax (Y2Min/Y2Max) fix an axis's range when YMax > YMin;
	// otherwise it spans the data from 0 (or the data's minimum when it
	// is negative) to a round number above the maximum.
	YMin, YMax   float64
	Y2Min, Y2Max float64
}

// Palette is the colours given to series without their own, in order.
var Palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"}

// Layout margins, in SVG user units.
const (
	marginLeft   = 78
	marginRight  = 78
	marginTop    = 40
	marginBottom = 56
	legendRow    = 18
)

// ErrNoData is returned for a plot with no finite point.
var ErrNoData = errors.New("plot: no series has a finite point")

// SVG renders the plot.
func (p *Plot) SVG() ([]byte, error) {
	w, h := p.Width, p.Height
	if w <= 0 {
		w = 900
	}
	if h <= 0 {
		h = 420
	}
	for i, s := range p.Series {
		if len(s.X) != len(s.Y) {
			return nil, fmt.Errorf("plot: series %d (%q): %d x values, %d y values", i, s.Name, len(s.X), len(s.Y))
		}
	}
	hasRight := false
	for _, s := range p.Series {
		hasRight = hasRight || s.Right
	}
	for _, l := range p.HLines {
		hasRight = hasRight || l.Right
	}

	// Data ranges.
	xr, yl, yr := newRange(), newRange(), newRange()
	for _, s := range p.Series {
		for i := range s.X {
			if !finite(s.X[i]) || !finite(s.Y[i]) {
				continue
			}
			xr.add(s.X[i])
			if s.Right {
				yr.add(s.Y[i])
			} else {
				yl.add(s.Y[i])
			}
		}
	}
	if xr.empty() {
		return nil, ErrNoData
	}
	for _, b := range p.Bands {
		if finite(b.X0) && finite(b.X1) {
			xr.add(b.X0)
			xr.add(b.X1)
		}
	}
	for _, l := range p.HLines {
		if !finite(l.Y) {
			continue
		}
		if l.Right {
			yr.add(l.Y)
		} else {
			yl.add(l.Y)
		}
	}
	xt := Ticks(xr.lo, xr.hi, 8)
	x0, x1 := xt[0], xt[len(xt)-1]
	ylt := axisTicks(yl, p.YMin, p.YMax)
	yrt := axisTicks(yr, p.Y2Min, p.Y2Max)

	// Legend rows under the title: entries flow left to right, each as
	// wide as its label, and wrap when the next one would pass the plot.
	legend := p.Series
	names := make([]string, len(legend))
	for i, s := range legend {
		names[i] = s.Name
		if hasRight {
			if s.Right {
				names[i] += " (right)"
			} else {
				names[i] += " (left)"
			}
		}
	}
	pos, rows := legendLayout(names, w-marginLeft-marginRight)
	top := marginTop + rows*legendRow
	plotW := float64(w - marginLeft - marginRight)
	plotH := float64(h - top - marginBottom)
	if plotW < 50 || plotH < 50 {
		return nil, fmt.Errorf("plot: %dx%d is too small for %d legend rows", w, h, rows)
	}
	px := func(x float64) float64 { return marginLeft + (x-x0)/(x1-x0)*plotW }
	pyFor := func(t []float64) func(float64) float64 {
		lo, hi := t[0], t[len(t)-1]
		return func(y float64) float64 { return float64(top) + plotH - (y-lo)/(hi-lo)*plotH }
	}
	pyl, pyr := pyFor(ylt), pyFor(yrt)

	var b bytes.Buffer
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<title>%s</title>`+"\n", esc(p.Title))
	fmt.Fprintf(&b, `<rect class="background" x="0" y="0" width="%d" height="%d" fill="white"/>`+"\n", w, h)
	if p.Title != "" {
		fmt.Fprintf(&b, `<text class="title" x="%d" y="20" text-anchor="middle" font-size="15" font-weight="bold">%s</text>`+"\n", w/2, esc(p.Title))
	}

	// Bands first, under everything.
	clampX := func(x float64) float64 { return math.Max(x0, math.Min(x1, x)) }
	// Band labels go on the first of three lines where they overlap no
	// label before them (10 px text: about 6 px a character).
	var labelEnds [3]float64
	for i := range labelEnds {
		labelEnds[i] = math.Inf(-1)
	}
	for _, bd := range p.Bands {
		if !finite(bd.X0) || !finite(bd.X1) || bd.X1 <= bd.X0 {
			continue
		}
		a, c := px(clampX(bd.X0)), px(clampX(bd.X1))
		fmt.Fprintf(&b, `<rect class="band" x="%s" y="%d" width="%s" height="%s" fill="#000000" fill-opacity="0.07"/>`+"\n",
			f2(a), top, f2(c-a), f2(plotH))
		if bd.Label != "" {
			half := 3 * float64(len([]rune(bd.Label)))
			line := 0
			for line < len(labelEnds)-1 && (a+c)/2-half < labelEnds[line]+4 {
				line++
			}
			labelEnds[line] = (a+c)/2 + half
			fmt.Fprintf(&b, `<text class="band-label" x="%s" y="%d" text-anchor="middle" font-size="10" fill="#555555">%s</text>`+"\n",
				f2((a+c)/2), top+11+12*line, esc(bd.Label))
		}
	}

	// Grid and ticks.
	fmt.Fprintf(&b, `<g class="axis x-axis" stroke="#000000">`+"\n")
	for _, t := range xt {
		x := px(t)
		fmt.Fprintf(&b, `<line class="grid" x1="%s" y1="%d" x2="%s" y2="%s" stroke="#dddddd"/>`+"\n", f2(x), top, f2(x), f2(float64(top)+plotH))
		fmt.Fprintf(&b, `<line class="tick" x1="%s" y1="%s" x2="%s" y2="%s"/>`+"\n", f2(x), f2(float64(top)+plotH), f2(x), f2(float64(top)+plotH+5))
		fmt.Fprintf(&b, `<text class="tick-label" x="%s" y="%s" text-anchor="middle" stroke="none">%s</text>`+"\n", f2(x), f2(float64(top)+plotH+18), tickLabel(t, xt))
	}
	fmt.Fprintf(&b, `</g>`+"\n")
	fmt.Fprintf(&b, `<g class="axis y-axis" stroke="#000000">`+"\n")
	for _, t := range ylt {
		y := pyl(t)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" y1="%s" x2="%s" y2="%s" stroke="#dddddd"/>`+"\n", marginLeft, f2(y), f2(marginLeft+plotW), f2(y))
		fmt.Fprintf(&b, `<line class="tick" x1="%d" y1="%s" x2="%d" y2="%s"/>`+"\n", marginLeft-5, f2(y), marginLeft, f2(y))
		fmt.Fprintf(&b, `<text class="tick-label" x="%d" y="%s" text-anchor="end" stroke="none">%s</text>`+"\n", marginLeft-8, f2(y+4), tickLabel(t, ylt))
	}
	fmt.Fprintf(&b, `</g>`+"\n")
	if hasRight {
		fmt.Fprintf(&b, `<g class="axis y2-axis" stroke="#000000">`+"\n")
		for _, t := range yrt {
			y := pyr(t)
			xr := marginLeft + plotW
			fmt.Fprintf(&b, `<line class="tick" x1="%s" y1="%s" x2="%s" y2="%s"/>`+"\n", f2(xr), f2(y), f2(xr+5), f2(y))
			fmt.Fprintf(&b, `<text class="tick-label" x="%s" y="%s" text-anchor="start" stroke="none">%s</text>`+"\n", f2(xr+8), f2(y+4), tickLabel(t, yrt))
		}
		fmt.Fprintf(&b, `</g>`+"\n")
	}
	// The frame.
	fmt.Fprintf(&b, `<rect class="frame" x="%d" y="%d" width="%s" height="%s" fill="none" stroke="#000000"/>`+"\n", marginLeft, top, f2(plotW), f2(plotH))
	// Axis labels.
	fmt.Fprintf(&b, `<text class="axis-label x-label" x="%s" y="%d" text-anchor="middle">%s</text>`+"\n", f2(marginLeft+plotW/2), h-12, esc(p.XLabel))
	cy := float64(top) + plotH/2
	fmt.Fprintf(&b, `<text class="axis-label y-label" x="16" y="%s" text-anchor="middle" transform="rotate(-90 16 %s)">%s</text>`+"\n", f2(cy), f2(cy), esc(p.YLabel))
	if hasRight {
		xr := float64(w) - 14
		fmt.Fprintf(&b, `<text class="axis-label y2-label" x="%s" y="%s" text-anchor="middle" transform="rotate(90 %s %s)">%s</text>`+"\n", f2(xr), f2(cy), f2(xr), f2(cy), esc(p.Y2Label))
	}

	// Reference lines.
	for _, l := range p.HLines {
		if !finite(l.Y) {
			continue
		}
		py := pyl
		if l.Right {
			py = pyr
		}
		y := py(l.Y)
		col := l.Color
		if col == "" {
			col = "#555555"
		}
		fmt.Fprintf(&b, `<line class="hline" x1="%d" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-dasharray="2,3"/>`+"\n",
			marginLeft, f2(y), f2(marginLeft+plotW), f2(y), esc(col))
		if l.Label != "" {
			fmt.Fprintf(&b, `<text class="hline-label" x="%s" y="%s" text-anchor="end" font-size="10" fill="%s">%s</text>`+"\n",
				f2(marginLeft+plotW-4), f2(y-3), esc(col), esc(l.Label))
		}
	}

	// Series, clipped to the plot area.
	fmt.Fprintf(&b, `<defs><clipPath id="plot-area"><rect x="%d" y="%d" width="%s" height="%s"/></clipPath></defs>`+"\n", marginLeft, top, f2(plotW), f2(plotH))
	for i, s := range p.Series {
		col := s.Color
		if col == "" {
			col = Palette[i%len(Palette)]
		}
		py := pyl
		if s.Right {
			py = pyr
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6,4"`
		}
		axis := "left"
		if s.Right {
			axis = "right"
		}
		fmt.Fprintf(&b, `<g class="series" data-name="%s" data-axis="%s" clip-path="url(#plot-area)">`+"\n", esc(s.Name), axis)
		for _, run := range segments(s) {
			var pts []string
			for k, j := range run {
				x, y := px(s.X[j]), py(s.Y[j])
				if s.Step && k > 0 {
					pts = append(pts, f2(px(s.X[run[k-1]]))+","+f2(y))
				}
				pts = append(pts, f2(x)+","+f2(y))
			}
			if len(run) == 1 {
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="2" fill="%s"/>`+"\n", f2(px(s.X[run[0]])), f2(py(s.Y[run[0]])), esc(col))
				continue
			}
			fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.6"%s/>`+"\n", strings.Join(pts, " "), esc(col), dash)
		}
		fmt.Fprintf(&b, `</g>`+"\n")
	}

	// Legend.
	fmt.Fprintf(&b, `<g class="legend">`+"\n")
	for i, s := range legend {
		col := s.Color
		if col == "" {
			col = Palette[i%len(Palette)]
		}
		lx := marginLeft + pos[i][0]
		ly := marginTop + pos[i][1]*legendRow - 4
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6,4"`
		}
		name := names[i]
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", lx, ly, lx+22, ly, esc(col), dash)
		fmt.Fprintf(&b, `<text class="legend-entry" x="%d" y="%d">%s</text>`+"\n", lx+28, ly+4, esc(name))
	}
	fmt.Fprintf(&b, `</g>`+"\n")
	b.WriteString("</svg>\n")
	return b.Bytes(), nil
}

// WriteFile renders the plot into path.
func (p *Plot) WriteFile(path string) error {
	b, err := p.SVG()
	if err != nil {
		return err
	}
	// The first plot of a fresh checkout comes before any fragment.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// segments splits a series into runs of consecutive finite points.
func segments(s Series) [][]int {
	var out [][]int
	var cur []int
	for i := range s.X {
		if finite(s.X[i]) && finite(s.Y[i]) {
			cur = append(cur, i)
			continue
		}
		if len(cur) > 0 {
			out = append(out, cur)
			cur = nil
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

type span struct{ lo, hi float64 }

func newRange() *span { return &span{lo: math.Inf(1), hi: math.Inf(-1)} }

func (r *span) add(v float64) {
	r.lo = math.Min(r.lo, v)
	r.hi = math.Max(r.hi, v)
}

func (r *span) empty() bool { return r.lo > r.hi }

// axisTicks is the ticks of a y axis: fixed (lo < hi given), or from 0 (the
// minimum if negative) to the data's maximum.
func axisTicks(r *span, lo, hi float64) []float64 {
	if hi > lo {
		return Ticks(lo, hi, 6)
	}
	if r.empty() {
		return Ticks(0, 1, 6)
	}
	return Ticks(math.Min(0, r.lo), r.hi, 6)
}

// Ticks returns about n round tick values (multiples of 1, 2, 2.5 or 5
// times a power of ten) from at or below lo to at or above hi; the first
// and last are the axis's ends. A zero-width range is widened.
func Ticks(lo, hi float64, n int) []float64 {
	if !finite(lo) || !finite(hi) {
		lo, hi = 0, 1
	}
	if lo > hi {
		lo, hi = hi, lo
	}
	if hi == lo {
		d := math.Max(math.Abs(lo)*0.1, 1)
		if lo >= 0 && lo-d < 0 {
			lo, hi = 0, hi+d
		} else {
			lo, hi = lo-d, hi+d
		}
	}
	n = max(n, 2)
	step := niceStep((hi - lo) / float64(n-1))
	start := math.Floor(lo/step+1e-9) * step
	end := math.Ceil(hi/step-1e-9) * step
	var out []float64
	for k := 0; ; k++ {
		v := start + float64(k)*step
		// Round away the float noise: 0.30000000000000004 → 0.3.
		v = math.Round(v/step*1e6) / 1e6 * step
		out = append(out, v)
		if v >= end-step*1e-9 || k > 1000 {
			break
		}
	}
	if len(out) < 2 {
		out = append(out, start+step)
	}
	return out
}

// niceStep rounds a raw step up to 1, 2, 2.5 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 || !finite(raw) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= raw*(1-1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// tickLabel formats v with as many decimals as the ticks' step needs.
func tickLabel(v float64, ticks []float64) string {
	dec := 0
	if len(ticks) > 1 {
		step := math.Abs(ticks[1] - ticks[0])
		for dec < 6 && math.Abs(step*math.Pow(10, float64(dec))-math.Round(step*math.Pow(10, float64(dec)))) > 1e-6 {
			dec++
		}
	}
	if v == 0 {
		v = 0 // no "-0"
	}
	return strconv.FormatFloat(v, 'f', dec, 64)
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func f2(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }

func esc(s string) string { return html.EscapeString(s) }

// legendCharW is the width allowed per character of a 12 px sans-serif
// legend label (an over-estimate: labels must not overlap).
const legendCharW = 7

// legendLayout places legend entries (a 22 px line, a gap, the label)
// left to right in rows of at most avail pixels: pos[i] is entry i's x
// offset and row; rows is the number of rows.
func legendLayout(names []string, avail int) (pos [][2]int, rows int) {
	x, row := 0, 0
	for _, n := range names {
		wEntry := 28 + legendCharW*len([]rune(n)) + 18
		if x > 0 && x+wEntry > avail {
			x, row = 0, row+1
		}
		pos = append(pos, [2]int{x, row})
		x += wEntry
	}
	if len(names) > 0 {
		rows = row + 1
	}
	return pos, rows
}
