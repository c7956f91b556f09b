package plan

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

var inf = math.Inf(1)

// near: equal within a millionth, or both the same infinity.
func near(a, b float64) bool {
	if math.IsInf(a, 0) || math.IsInf(b, 0) {
		return a == b
	}
	return math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b))
}

func TestPlanAbsorbAndDrain(t *testing.T) {
	for _, c := range []struct {
		name          string
		room, in, out float64
		absorb        float64
	}{
		{"the issue's (1 − t)·C/R: no moves", 512, 100, 0, 5.12},
		{"the moves take some away", 512, 100, 36, 8},
		{"the moves keep up exactly", 512, 100, 100, inf},
		{"the moves are faster", 512, 50, 100, inf},
		{"no room", 0, 100, 10, 0},
		{"negative room counts as none", -5, 100, 10, 0},
	} {
		if got := Absorb(c.room, c.in, c.out); !near(got, c.absorb) {
			t.Errorf("%s: Absorb(%v, %v, %v) = %v, want %v", c.name, c.room, c.in, c.out, got, c.absorb)
		}
	}
	for _, c := range []struct {
		name           string
		excess, out, l float64
		drain          float64
	}{
		{"(1 − t)·C/W", 512, 16, 0, 32},
		{"(1 − t)·C/(W − L)", 512, 16, 2, 512.0 / 14},
		{"the producers outrun the moves", 512, 2, 2, inf},
		{"nothing to drain", 0, 2, 5, 0},
	} {
		if got := Drain(c.excess, c.out, c.l); !near(got, c.drain) {
			t.Errorf("%s: Drain(%v, %v, %v) = %v, want %v", c.name, c.excess, c.out, c.l, got, c.drain)
		}
	}
}

func TestPlanTimeUntilFull(t *testing.T) {
	for _, c := range []struct {
		name                                 string
		capacity, threshold, used, rate, dem float64
		want                                 float64
	}{
		{"from the threshold", 64, 0.5, 32, 48, 16, 1},
		{"from empty: t·C at the full rate first", 64, 0.5, 0, 48, 16, 32.0/48 + 1},
		{"above the threshold already", 64, 0.5, 48, 48, 16, 0.5},
		{"full already", 64, 0.5, 64, 48, 16, 0},
		{"the moves keep up", 64, 0.5, 0, 16, 16, inf},
		{"threshold 1: the moves start only when full", 64, 1, 0, 32, 16, 2},
		{"no writes", 64, 0.5, 0, 0, 16, inf},
	} {
		if got := TimeUntilFull(c.capacity, c.threshold, c.used, c.rate, c.dem); !near(got, c.want) {
			t.Errorf("%s: TimeUntilFull(C=%v, t=%v, used=%v, R=%v, M=%v) = %v, want %v",
				c.name, c.capacity, c.threshold, c.used, c.rate, c.dem, got, c.want)
		}
	}
}

func TestPlanDemotionAndThreshold(t *testing.T) {
	for _, c := range []struct{ bw, max, want float64 }{
		{150, 0, 150}, {150, 100, 100}, {150, 200, 150},
	} {
		if got := Demotion(c.bw, c.max); got != c.want {
			t.Errorf("Demotion(%v, %v) = %v, want %v", c.bw, c.max, got, c.want)
		}
	}
	for _, c := range []struct {
		name              string
		capacity, reserve float64
		want              float64
		ok                bool
	}{
		{"half", 100, 50, 0.5, true},
		{"rounded down, never up", 100, 33.3, 0.66, true},
		{"exact hundredths stay", 1000, 250, 0.75, true},
		{"no reserve needed", 100, 0, 1, true},
		{"the least threshold", 100, 90, 0.10, true},
		{"under the least", 100, 91, 0.09, false},
		{"more than the tier", 100, 150, -0.5, false},
		{"no tier", 0, 10, 0, false},
	} {
		got, ok := ThresholdFor(c.capacity, c.reserve)
		if !near(got, c.want) || ok != c.ok {
			t.Errorf("%s: ThresholdFor(%v, %v) = %v, %v; want %v, %v", c.name, c.capacity, c.reserve, got, ok, c.want, c.ok)
		}
	}
	if got := ReserveFor(600, 500, 150, 5); got != 350*600+500*5 {
		t.Errorf("ReserveFor(600 s, 500, 150, lag 5 s) = %v", got)
	}
	if got := ReserveFor(600, 100, 150, 5); got != 500 {
		t.Errorf("ReserveFor with the moves faster than the burst = %v, want the lag's 500", got)
	}
}

// Pafka's figures as a whole plan: a 1.5 TiB fast tier at t = 0.5 and an
// HDD at 78 MB/s against a 500 MiB/s burst.
func TestPlanCompute(t *testing.T) {
	for _, c := range []struct {
		name string
		in   Input
		want Result
	}{
		{
			name: "a burst over the moves, from the threshold",
			in:   Input{Capacity: 1024 * gib, Threshold: 0.5, Used: -1, Peak: 500 * mib, SlowBW: 100 * mib, Base: 20 * mib},
			want: Result{Reserve: 512 * gib, Demotion: 100 * mib, Rate: 500 * mib, FillRate: 400 * mib,
				Absorbed: 512 * 1024 / 400.0, Drain: 512 * 1024 / 80.0, Sustained: 100 * mib},
		},
		{
			name: "max_rate caps the moves, and the fast tier the burst",
			in: Input{Capacity: 64 * gib, Threshold: 0.75, Used: 0, Peak: 2000 * mib, FastBW: 1000 * mib,
				SlowBW: 200 * mib, MaxRate: 50 * mib},
			want: Result{Reserve: 16 * gib, Demotion: 50 * mib, Rate: 1000 * mib, FillRate: 950 * mib,
				Absorbed: 48*1024/1000.0 + 16*1024/950.0, Drain: 16 * 1024 / 50.0, Sustained: 50 * mib},
		},
		{
			name: "the moves keep up: absorbed for ever",
			in:   Input{Capacity: 10 * gib, Threshold: 0.5, Used: -1, Peak: 100 * mib, SlowBW: 200 * mib, Base: 200 * mib},
			want: Result{Reserve: 5 * gib, Demotion: 200 * mib, Rate: 100 * mib, FillRate: -100 * mib,
				Absorbed: inf, Drain: inf, Sustained: 200 * mib},
		},
	} {
		got := Compute(c.in)
		for _, f := range []struct {
			name      string
			got, want float64
		}{
			{"Reserve", got.Reserve, c.want.Reserve}, {"Demotion", got.Demotion, c.want.Demotion},
			{"Rate", got.Rate, c.want.Rate}, {"FillRate", got.FillRate, c.want.FillRate},
			{"Absorbed", got.Absorbed, c.want.Absorbed}, {"Drain", got.Drain, c.want.Drain},
			{"Sustained", got.Sustained, c.want.Sustained},
		} {
			if !near(f.got, f.want) {
				t.Errorf("%s: %s = %v, want %v", c.name, f.name, f.got, f.want)
			}
		}
		if got.Recommended != nil {
			t.Errorf("%s: a recommendation without a burst length: %+v", c.name, got.Recommended)
		}
	}
}

func TestPlanRecommendation(t *testing.T) {
	base := Input{Capacity: 1024 * gib, Threshold: 0.5, Used: -1, Peak: 500 * mib, SlowBW: 100 * mib, Lag: 5}
	for _, c := range []struct {
		name      string
		burst     float64
		threshold float64
		ok        bool
		capacity  float64
	}{
		// 400 MiB/s for 10 min plus 5 s at 500: 242,500 MiB of 1 TiB.
		{"ten minutes", 600, 0.76, true, 2 * (400*600 + 500*5) * mib},
		// 400 MiB/s for an hour: 1.4 TB, more than the tier.
		{"an hour", 3600, -0.38, false, 2 * (400*3600 + 500*5) * mib},
	} {
		in := base
		in.Burst = c.burst
		r := Compute(in).Recommended
		if r == nil {
			t.Fatalf("%s: no recommendation", c.name)
		}
		if !near(r.Threshold, c.threshold) || r.OK != c.ok || !near(r.Capacity, c.capacity) {
			t.Errorf("%s: %+v, want threshold %v ok %v capacity %v", c.name, r, c.threshold, c.ok, c.capacity)
		}
		if r.OK {
			// The recommendation absorbs the burst, its lag included.
			if r.Absorbed < c.burst {
				t.Errorf("%s: threshold %v absorbs %v s, less than the burst's %v s", c.name, r.Threshold, r.Absorbed, c.burst)
			}
			// And a hundredth higher would not hold the reserve.
			if room := (1 - r.Threshold - 0.01) * in.Capacity; room >= r.Reserve {
				t.Errorf("%s: threshold %v + 0.01 still leaves %v bytes for a reserve of %v", c.name, r.Threshold, room, r.Reserve)
			}
		}
	}
}

func TestPlanRatesBetween(t *testing.T) {
	t0 := time.Unix(1000, 0)
	a := Sample{At: t0, FastUsed: 100 * mib, Moved: 50 * mib, Moving: true}
	b := Sample{At: t0.Add(4 * time.Second), FastUsed: 140 * mib, Moved: 90 * mib, Moving: true}
	r, ok := RatesBetween(a, b)
	if !ok || r.Seconds != 4 || r.Growth != 10*mib || r.Moved != 10*mib || r.Ingest != 20*mib || !r.Busy {
		t.Errorf("RatesBetween: %+v, %v", r, ok)
	}
	b.Moving = false
	if r, _ := RatesBetween(a, b); r.Busy {
		t.Errorf("moves that stopped between the samples count as busy: %+v", r)
	}
	// Draining: the tier shrinks faster than anything is written.
	b = Sample{At: t0.Add(2 * time.Second), FastUsed: 80 * mib, Moved: 90 * mib}
	if r, _ := RatesBetween(a, b); r.Growth != -10*mib || r.Ingest != 10*mib {
		t.Errorf("draining: %+v", r)
	}
	if _, ok := RatesBetween(b, a); ok {
		t.Errorf("samples out of order accepted")
	}
}

// MeasureWrite writes what it says, leaves nothing behind, and refuses a
// symlink and more than half the free space.
func TestPlanMeasureWrite(t *testing.T) {
	dir := t.TempDir()
	m, err := MeasureWrite(dir, 8*mib+123)
	if err != nil {
		t.Fatal(err)
	}
	if m.Bytes != 8*mib || !(m.Seconds > 0) || !near(m.BW, float64(m.Bytes)/m.Seconds) {
		t.Errorf("measurement: %+v", m)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("left in %s: %v (%v)", dir, ents, err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if _, err := MeasureWrite(link, mib); err == nil {
		t.Errorf("measured through a symlink")
	}
	if _, err := MeasureWrite(dir, 1<<62); err == nil {
		t.Errorf("measured more than the free space")
	}
	if _, err := MeasureWrite(dir, 100); err == nil {
		t.Errorf("measured less than a chunk")
	}
}

// On a tmpfs, which has nameless files and (since Linux 6.6) O_DIRECT.
func TestPlanMeasureWriteTmpfs(t *testing.T) {
	testenv.Root(t, "mounts a tmpfs")
	dir := t.TempDir()
	if err := mountTmpfs(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmount(t, dir) })
	m, err := MeasureWrite(dir, 4*mib)
	if err != nil {
		t.Fatal(err)
	}
	if m.Named {
		t.Errorf("a named scratch file on tmpfs, which has O_TMPFILE: %+v", m)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left on the tmpfs: %v", ents)
	}
}

func mountTmpfs(dir string) error {
	return unix.Mount("tierfs-plan-test", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=16m,mode=0755")
}

func unmount(t *testing.T, dir string) {
	if err := unix.Unmount(dir, 0); err != nil {
		t.Errorf("umount %s: %v", dir, err)
	}
}
