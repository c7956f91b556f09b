package benchkit

import (
	"bytes"
	"encoding/xml"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// node is a generic XML element.
type node struct {
	XMLName  xml.Name
	Attrs    []xml.Attr `xml:",any,attr"`
	Children []node     `xml:",any"`
	Text     string     `xml:",chardata"`
}

func (n *node) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func (n *node) num(t *testing.T, name string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(n.attr(name), 64)
	if err != nil {
		t.Fatalf("<%s %s=%q>: %v", n.XMLName.Local, name, n.attr(name), err)
	}
	return v
}

// walk calls f on n and every element under it.
func (n *node) walk(f func(*node)) {
	f(n)
	for i := range n.Children {
		n.Children[i].walk(f)
	}
}

// find returns the elements named tag (any tag for "") whose class
// attribute has class among its words (any for "").
func (n *node) find(tag, class string) []*node {
	var out []*node
	n.walk(func(m *node) {
		if tag != "" && m.XMLName.Local != tag {
			return
		}
		if class != "" && !hasWord(m.attr("class"), class) {
			return
		}
		out = append(out, m)
	})
	return out
}

func hasWord(s, w string) bool {
	for _, f := range strings.Fields(s) {
		if f == w {
			return true
		}
	}
	return false
}

func parseSVG(t *testing.T, b []byte) *node {
	t.Helper()
	var root node
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = true
	if err := d.Decode(&root); err != nil {
		t.Fatalf("the SVG does not parse as XML: %v\n%s", err, b)
	}
	if root.XMLName.Local != "svg" || root.XMLName.Space != "http://www.w3.org/2000/svg" {
		t.Fatalf("root element is %v, want svg in the SVG namespace", root.XMLName)
	}
	return &root
}

type point struct{ x, y float64 }

func parsePoints(t *testing.T, s string) []point {
	t.Helper()
	var out []point
	for _, f := range strings.Fields(s) {
		a, b, ok := strings.Cut(f, ",")
		x, err1 := strconv.ParseFloat(a, 64)
		y, err2 := strconv.ParseFloat(b, 64)
		if !ok || err1 != nil || err2 != nil {
			t.Fatalf("bad point %q in %q", f, s)
		}
		out = append(out, point{x, y})
	}
	return out
}

// axisMap fits value → pixel from an axis's tick labels: pixel = a + b·v.
// coord is the attribute of the label's position along the axis ("x" or
// "y"); off is subtracted from it (the y labels sit 4 units below the
// tick).
func axisMap(t *testing.T, root *node, axisClass, coord string, off float64) (a, b float64, vals []float64) {
	t.Helper()
	groups := root.find("g", axisClass)
	if len(groups) != 1 {
		t.Fatalf("%d <g class=%s>, want 1", len(groups), axisClass)
	}
	labels := groups[0].find("text", "tick-label")
	if len(labels) < 2 {
		t.Fatalf("%s: %d tick labels, want at least 2", axisClass, len(labels))
	}
	var px []float64
	for _, l := range labels {
		v, err := strconv.ParseFloat(strings.TrimSpace(l.Text), 64)
		if err != nil {
			t.Fatalf("%s: tick label %q is not a number", axisClass, l.Text)
		}
		vals = append(vals, v)
		px = append(px, l.num(t, coord)-off)
	}
	for i := 1; i < len(vals); i++ {
		if vals[i] <= vals[i-1] {
			t.Fatalf("%s: tick values not increasing: %v", axisClass, vals)
		}
	}
	n := len(vals) - 1
	b = (px[n] - px[0]) / (vals[n] - vals[0])
	a = px[0] - b*vals[0]
	for i := range vals {
		if d := math.Abs(a + b*vals[i] - px[i]); d > 0.05 {
			t.Fatalf("%s: tick %v at %v, off the linear scale by %v", axisClass, vals[i], px[i], d)
		}
	}
	return a, b, vals
}

func TestPlotStructure(t *testing.T) {
	var xs, ys, used []float64
	for i := 0; i <= 120; i++ {
		x := float64(i) / 2
		xs = append(xs, x)
		ys = append(ys, 40+30*math.Sin(x/5))
		used = append(used, 100+float64(i)*8)
	}
	p := &Plot{
		Title:   `Burst <1> & "friends"`,
		XLabel:  "time (s)",
		YLabel:  "MB/s",
		Y2Label: "MiB used",
		Series: []Series{
			{Name: "producer", X: xs, Y: ys},
			{Name: "baseline <hdd>", X: []float64{0, 30, 60}, Y: []float64{10, 12, 11}, Dashed: true},
			{Name: "fast tier used", X: xs, Y: used, Right: true},
		},
		Bands:  []Band{{X0: 10, X1: 20, Label: "burst 1"}},
		HLines: []HLine{{Y: 512, Right: true, Label: "threshold"}},
	}
	b, err := p.SVG()
	if err != nil {
		t.Fatal(err)
	}
	root := parseSVG(t, b)
	vb := strings.Fields(root.attr("viewBox"))
	if len(vb) != 4 {
		t.Fatalf("viewBox %q", root.attr("viewBox"))
	}
	var box [4]float64
	for i, f := range vb {
		box[i], _ = strconv.ParseFloat(f, 64)
	}
	if box[0] != 0 || box[1] != 0 || box[2] != 900 || box[3] != 420 {
		t.Fatalf("viewBox %v, want 0 0 900 420 (the default size)", box)
	}
	frames := root.find("rect", "frame")
	if len(frames) != 1 {
		t.Fatalf("%d frames", len(frames))
	}
	fr := frames[0]
	fx, fy, fw, fh := fr.num(t, "x"), fr.num(t, "y"), fr.num(t, "width"), fr.num(t, "height")

	// The axes: a linear scale from the tick labels.
	ax, bx, xt := axisMap(t, root, "x-axis", "x", 0)
	ay, by, _ := axisMap(t, root, "y-axis", "y", 4)
	ay2, by2, y2t := axisMap(t, root, "y2-axis", "y", 4)
	if xt[0] > 0 || xt[len(xt)-1] < 60 {
		t.Errorf("x ticks %v do not cover the data 0..60", xt)
	}
	if y2t[len(y2t)-1] < 1060 {
		t.Errorf("right ticks %v do not reach the data's maximum 1060", y2t)
	}

	// Every series is there, with all its points, inside the viewBox and
	// the frame, each where its value says.
	series := root.find("g", "series")
	if len(series) != 3 {
		t.Fatalf("%d series groups, want 3", len(series))
	}
	for i, g := range series {
		s := p.Series[i]
		if g.attr("data-name") != s.Name {
			t.Errorf("series %d is named %q, want %q", i, g.attr("data-name"), s.Name)
		}
		lines := g.find("polyline", "")
		if len(lines) != 1 {
			t.Fatalf("series %q: %d polylines, want 1", s.Name, len(lines))
		}
		pts := parsePoints(t, lines[0].attr("points"))
		if len(pts) != len(s.X) {
			t.Fatalf("series %q: %d points, want %d", s.Name, len(pts), len(s.X))
		}
		a, b := ay, by
		if s.Right {
			a, b = ay2, by2
			if g.attr("data-axis") != "right" {
				t.Errorf("series %q on axis %q, want right", s.Name, g.attr("data-axis"))
			}
		}
		for j, pt := range pts {
			if pt.x < box[0] || pt.x > box[0]+box[2] || pt.y < box[1] || pt.y > box[1]+box[3] {
				t.Fatalf("series %q point %d (%v) outside the viewBox %v", s.Name, j, pt, box)
			}
			if pt.x < fx-0.01 || pt.x > fx+fw+0.01 || pt.y < fy-0.01 || pt.y > fy+fh+0.01 {
				t.Fatalf("series %q point %d (%v) outside the plot frame", s.Name, j, pt)
			}
			if d := math.Abs(ax + bx*s.X[j] - pt.x); d > 0.02 {
				t.Fatalf("series %q point %d: x %v drawn at %v, off by %v px", s.Name, j, s.X[j], pt.x, d)
			}
			if d := math.Abs(a + b*s.Y[j] - pt.y); d > 0.02 {
				t.Fatalf("series %q point %d: y %v drawn at %v, off by %v px", s.Name, j, s.Y[j], pt.y, d)
			}
		}
	}
	if got := series[1].find("polyline", "")[0].attr("stroke-dasharray"); got == "" {
		t.Errorf("the dashed series has no stroke-dasharray")
	}

	// Legend: every name, in order, marked with its axis.
	var legend []string
	for _, e := range root.find("text", "legend-entry") {
		legend = append(legend, e.Text)
	}
	want := []string{"producer (left)", "baseline <hdd> (left)", "fast tier used (right)"}
	if strings.Join(legend, "|") != strings.Join(want, "|") {
		t.Errorf("legend %q, want %q", legend, want)
	}
	// Title, labels, band and reference line.
	if ts := root.find("text", "title"); len(ts) != 1 || ts[0].Text != p.Title {
		t.Errorf("title: %+v", ts)
	}
	for _, c := range []string{"x-label", "y-label", "y2-label"} {
		if len(root.find("text", c)) != 1 {
			t.Errorf("no %s", c)
		}
	}
	bands := root.find("rect", "band")
	if len(bands) != 1 {
		t.Fatalf("%d bands", len(bands))
	}
	if d := math.Abs(bands[0].num(t, "x") - (ax + bx*10)); d > 0.02 {
		t.Errorf("band starts at %v, want x=10 at %v", bands[0].num(t, "x"), ax+bx*10)
	}
	if d := math.Abs(bands[0].num(t, "width") - bx*10); d > 0.02 {
		t.Errorf("band width %v, want %v", bands[0].num(t, "width"), bx*10)
	}
	hl := root.find("line", "hline")
	if len(hl) != 1 || math.Abs(hl[0].num(t, "y1")-(ay2+by2*512)) > 0.02 {
		t.Errorf("threshold line: %+v, want at y=%v", hl, ay2+by2*512)
	}
}

func TestPlotOneAxisGapsAndSteps(t *testing.T) {
	nan := math.NaN()
	p := &Plot{
		XLabel: "t", YLabel: "v",
		Series: []Series{
			{Name: "gappy", X: []float64{0, 1, 2, 3, 4, 5, 6}, Y: []float64{1, 2, nan, 4, 5, math.Inf(1), 7}},
			{Name: "steps", X: []float64{0, 2, 4, 6}, Y: []float64{3, 6, 2, 5}, Step: true},
		},
		Width: 400, Height: 300,
	}
	b, err := p.SVG()
	if err != nil {
		t.Fatal(err)
	}
	root := parseSVG(t, b)
	if root.attr("viewBox") != "0 0 400 300" {
		t.Errorf("viewBox %q", root.attr("viewBox"))
	}
	if len(root.find("g", "y2-axis")) != 0 || len(root.find("text", "y2-label")) != 0 {
		t.Errorf("a right axis without a right series")
	}
	series := root.find("g", "series")
	if len(series) != 2 {
		t.Fatalf("%d series", len(series))
	}
	// gappy: 0-1 a line, 3-4 a line, 6 a lone point.
	lines := series[0].find("polyline", "")
	if len(lines) != 2 {
		t.Fatalf("gappy: %d polylines, want 2 (broken at NaN and +Inf)", len(lines))
	}
	if n := len(parsePoints(t, lines[0].attr("points"))); n != 2 {
		t.Errorf("gappy: first run has %d points, want 2", n)
	}
	if n := len(series[0].find("circle", "")); n != 1 {
		t.Errorf("gappy: %d lone points, want 1", n)
	}
	// steps: 4 values → 7 vertices, alternating horizontal and vertical.
	pts := parsePoints(t, series[1].find("polyline", "")[0].attr("points"))
	if len(pts) != 7 {
		t.Fatalf("steps: %d vertices, want 7", len(pts))
	}
	for k := 1; k < len(pts); k++ {
		if pts[k].x != pts[k-1].x && pts[k].y != pts[k-1].y {
			t.Errorf("steps: segment %v→%v is neither horizontal nor vertical", pts[k-1], pts[k])
		}
	}
	// The y axis starts at 0 (all values positive) and reaches 7.
	_, _, yt := axisMap(t, root, "y-axis", "y", 4)
	if yt[0] != 0 || yt[len(yt)-1] < 7 {
		t.Errorf("y ticks %v, want 0 to at least 7", yt)
	}
}

func TestPlotErrors(t *testing.T) {
	if _, err := (&Plot{Series: []Series{{Name: "a", X: []float64{1, 2}, Y: []float64{1}}}}).SVG(); err == nil {
		t.Errorf("mismatched X and Y: no error")
	}
	if _, err := (&Plot{Series: []Series{{Name: "a", X: []float64{math.NaN()}, Y: []float64{1}}}}).SVG(); !errors.Is(err, ErrNoData) {
		t.Errorf("no finite point: %v, want ErrNoData", err)
	}
	if _, err := (&Plot{}).SVG(); !errors.Is(err, ErrNoData) {
		t.Errorf("no series: %v, want ErrNoData", err)
	}
}

func TestPlotWriteFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench", "p.svg") // its directory is made
	p := &Plot{Series: []Series{{Name: "one", X: []float64{5}, Y: []float64{5}}}}
	if err := p.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	root := parseSVG(t, b)
	// One point: a circle, and axes widened around it.
	if n := len(root.find("circle", "")); n != 1 {
		t.Errorf("%d circles, want 1", n)
	}
	_, _, xt := axisMap(t, root, "x-axis", "x", 0)
	if xt[0] >= 5 || xt[len(xt)-1] <= 5 {
		t.Errorf("x ticks %v do not surround the lone point 5", xt)
	}
}

func TestTicks(t *testing.T) {
	for _, c := range []struct {
		lo, hi float64
		n      int
	}{
		{0, 1, 6}, {0, 0.3, 6}, {3, 97, 8}, {-12, 250, 6}, {0, 1e9, 6}, {1e-4, 3e-4, 5}, {7, 7, 6}, {0, 0, 6}, {-5, -5, 4}, {1234, 1240, 6},
	} {
		ts := Ticks(c.lo, c.hi, c.n)
		if len(ts) < 2 || len(ts) > 2*c.n+2 {
			t.Errorf("Ticks(%v, %v, %d) = %v: %d ticks", c.lo, c.hi, c.n, ts, len(ts))
			continue
		}
		if ts[0] > c.lo || ts[len(ts)-1] < c.hi {
			t.Errorf("Ticks(%v, %v, %d) = %v does not cover the range", c.lo, c.hi, c.n, ts)
		}
		step := ts[1] - ts[0]
		// A round step: 1, 2, 2.5 or 5 times a power of ten.
		m := step / math.Pow(10, math.Floor(math.Log10(step)))
		if !(near(m, 1) || near(m, 2) || near(m, 2.5) || near(m, 5)) {
			t.Errorf("Ticks(%v, %v, %d) = %v: step %v is not round", c.lo, c.hi, c.n, ts, step)
		}
		for i := 1; i < len(ts); i++ {
			if !near(ts[i]-ts[i-1], step) {
				t.Errorf("Ticks(%v, %v, %d) = %v: uneven", c.lo, c.hi, c.n, ts)
				break
			}
			if r := ts[i] / step; !near(r, math.Round(r)) {
				t.Errorf("Ticks(%v, %v, %d) = %v: %v is not a multiple of the step", c.lo, c.hi, c.n, ts, ts[i])
			}
		}
	}
	if got := tickLabel(0.30000000000000004, []float64{0.2, 0.3}); got != "0.3" {
		t.Errorf("tickLabel = %q, want 0.3", got)
	}
	if got := tickLabel(math.Copysign(0, -1), []float64{-1, 0, 1}); got != "0" {
		t.Errorf("tickLabel(-0) = %q, want 0", got)
	}
}

func near(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

// Legend entries of a row never overlap, however long their labels, and
// no row is wider than the plot.
func TestLegendLayoutNoOverlap(t *testing.T) {
	names := []string{"tierfs: producers (log growth) (left)", "tierfs: moves down (left)", "HDD alone: producers (left)", "x", "tierfs: fast tier used (right)"}
	pos, rows := legendLayout(names, 700)
	if rows < 2 {
		t.Fatalf("%d rows for %d long labels in 700 px, want a wrap", rows, len(names))
	}
	width := func(i int) int { return 28 + legendCharW*len(names[i]) + 18 }
	for i := range names {
		if pos[i][0] > 0 && pos[i][0]+width(i) > 700 {
			t.Errorf("entry %d (%q) ends at %d, past 700", i, names[i], pos[i][0]+width(i))
		}
		if i > 0 && pos[i][1] == pos[i-1][1] && pos[i][0] < pos[i-1][0]+width(i-1) {
			t.Errorf("entry %d starts at %d, inside entry %d (ends %d)", i, pos[i][0], i-1, pos[i-1][0]+width(i-1))
		}
	}
}
