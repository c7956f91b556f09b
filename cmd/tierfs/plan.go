package main

// tierfs plan: the capacity planner (internal/plan's formulas) fed from
// flags, a configuration file, timed writes on the tiers, or a running
// daemon.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tierfs/tierfs/internal/config"
	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/plan"
	"github.com/tierfs/tierfs/internal/units"
	"golang.org/x/sys/unix"
)

const planArgs = "[--config FILE | --live MOUNTPOINT] [--capacity SIZE] [--threshold T] [--peak RATE] " +
	"[--slow-bw RATE | --measure] [--burst DURATION] [--json]"

const planShort = "size the fast tier for bursts: how long one is absorbed, the ingest the tiers sustain, the threshold to use"

// planFlags are the command's flags; strings so that a unit is required
// and an unset flag is told from a zero.
type planFlags struct {
	config, live                        string
	capacity, used, measureSize         string
	threshold                           string
	peak, base, slowBW, fastBW, maxRate string
	burst, interval, sample             string
	fastDir, slowDir                    string
	measure, asJSON                     bool
	set                                 map[string]bool
}

func setupPlan(fs *flag.FlagSet) func([]string) int {
	f := &planFlags{}
	fs.StringVar(&f.config, "config", "", "read the fast tier's capacity and threshold, max_rate, the policy's interval and the tiers' directories from `FILE`")
	fs.StringVar(&f.live, "live", "", "read them, and the rates, from the daemon serving `MOUNTPOINT` (two status samples --sample apart)")
	fs.StringVar(&f.sample, "sample", "5s", "with --live: the `DURATION` between the two samples")
	fs.StringVar(&f.capacity, "capacity", "", "the fast tier's capacity, a `SIZE` such as 1TiB")
	fs.StringVar(&f.threshold, "threshold", "", "the fast tier's migrate_threshold `T`, in (0, 1]")
	fs.StringVar(&f.used, "used", "", "the fast tier's usage when the burst begins, a `SIZE` (default: the threshold's mark, where steady operation leaves it; with --live: its usage now)")
	fs.StringVar(&f.peak, "peak", "", "the producers' peak `RATE` during a burst, such as 500MiB/s (with --live: default the rate written during the sample)")
	fs.StringVar(&f.base, "base", "0", "the producers' `RATE` between bursts (the drain competes with it)")
	fs.StringVar(&f.slowBW, "slow-bw", "", "the slow tier's write bandwidth, a `RATE`")
	fs.StringVar(&f.fastBW, "fast-bw", "", "the fast tier's write bandwidth, a `RATE` (a burst goes no faster)")
	fs.StringVar(&f.maxRate, "max-rate", "", "[policy] max_rate, a `RATE`; 0 for none (default: the configuration's or the daemon's)")
	fs.StringVar(&f.interval, "interval", "", "[policy] interval, a `DURATION`: the recommendation keeps room for one interval at the peak rate before the moves start (default: the configuration's or the daemon's, else 5s)")
	fs.StringVar(&f.burst, "burst", "", "recommend the threshold that absorbs a burst of this `DURATION` at the peak rate, such as 10m")
	fs.BoolVar(&f.measure, "measure", false, "time a write on each tier's directory (--fast-dir and --slow-dir, or the configuration's or the daemon's first two tiers): --measure-size in 1 MiB writes, O_DIRECT where the file system takes it, then fdatasync, to a file with no name")
	fs.StringVar(&f.measureSize, "measure-size", "256MiB", "with --measure: how much to write on each tier, a `SIZE`")
	fs.StringVar(&f.fastDir, "fast-dir", "", "with --measure: the fast tier's `DIR`")
	fs.StringVar(&f.slowDir, "slow-dir", "", "with --measure: the slow tier's `DIR`")
	fs.BoolVar(&f.asJSON, "json", false, "print JSON instead of text")
	return func(args []string) int {
		if len(args) > 0 {
			return usageError(fs, "unexpected arguments: %s", strings.Join(args, " "))
		}
		f.set = map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
		out, err := f.run()
		var ue usageErr
		if errors.As(err, &ue) {
			for _, line := range strings.Split(ue.msg, "\n") {
				fmt.Fprintf(stderr, "%s: %s\n", fs.Name(), line)
			}
			fs.Usage()
			return 2
		}
		if err != nil {
			return fail("plan", err)
		}
		if f.asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if err := enc.Encode(out); err != nil {
				return fail("plan", err)
			}
			return 0
		}
		out.print()
		return 0
	}
}

// usageErr is a wrong use of the flags, answered with the usage.
type usageErr struct{ msg string }

func (e usageErr) Error() string { return e.msg }

// planValue is one input with where it came from.
type planValue struct {
	Value  float64 `json:"value"`
	Source string  `json:"source"`
}

// planLive is what --live saw.
type planLive struct {
	Mountpoint string  `json:"mountpoint"`
	Seconds    float64 `json:"seconds"`
	// IngestBytesPerSec is what was written into the fast tier: its
	// growth plus what moves took out.
	IngestBytesPerSec float64 `json:"ingest_bytes_per_sec"`
	GrowthBytesPerSec float64 `json:"growth_bytes_per_sec"`
	MovedBytesPerSec  float64 `json:"moved_bytes_per_sec"`
	// MovesBusy: moves were queued or running at both samples.
	MovesBusy bool    `json:"moves_busy"`
	UsedBytes int64   `json:"used_bytes"`
	FullIn    *number `json:"time_until_full_seconds"` // at the current growth; null: not growing
}

// number is a float that JSON shows as null when infinite.
type number float64

func (n *number) MarshalJSON() ([]byte, error) {
	if n == nil || math.IsInf(float64(*n), 0) || math.IsNaN(float64(*n)) {
		return []byte("null"), nil
	}
	return []byte(strconv.FormatFloat(float64(*n), 'f', -1, 64)), nil
}

func num(f float64) *number { n := number(f); return &n }

// planOutput is what tierfs plan prints (--json: as is).
type planOutput struct {
	Inputs   map[string]planValue `json:"inputs"`
	Measured []plan.Measurement   `json:"measured,omitempty"`
	Live     *planLive            `json:"live,omitempty"`

	ReserveBytes         float64             `json:"reserve_bytes"`
	DemotionBytesPerSec  float64             `json:"demotion_bytes_per_sec"`
	BurstBytesPerSec     float64             `json:"burst_bytes_per_sec"`
	FillBytesPerSec      float64             `json:"fill_bytes_per_sec"`
	AbsorbedSeconds      *number             `json:"absorbed_seconds"` // null: the moves keep up, absorbed whole
	DrainSeconds         *number             `json:"drain_seconds"`    // null: the moves do not keep up between bursts
	SustainedBytesPerSec float64             `json:"sustained_bytes_per_sec"`
	FastSlowerThanPeak   bool                `json:"fast_slower_than_peak,omitempty"`
	Recommended          *planRecommendation `json:"recommended,omitempty"`
	inputOrder           []string
	capacity, threshold  float64
	lag                  float64
}

type planRecommendation struct {
	BurstSeconds  float64 `json:"burst_seconds"`
	ReserveBytes  float64 `json:"reserve_bytes"`
	Threshold     *number `json:"threshold"` // null when none holds the reserve (OK false)
	OK            bool    `json:"ok"`
	CapacityBytes *number `json:"capacity_bytes_at_threshold"` // the fast tier the reserve needs at the current threshold
	AbsorbedSecs  *number `json:"absorbed_seconds,omitempty"`
}

// input names, in the order they print.
const (
	inCapacity  = "capacity_bytes"
	inThreshold = "threshold"
	inUsed      = "used_bytes"
	inPeak      = "peak_bytes_per_sec"
	inBase      = "base_bytes_per_sec"
	inSlowBW    = "slow_write_bytes_per_sec"
	inFastBW    = "fast_write_bytes_per_sec"
	inMaxRate   = "max_rate_bytes_per_sec"
	inInterval  = "interval_seconds"
	inBurst     = "burst_seconds"
)

func (f *planFlags) run() (*planOutput, error) {
	if f.config != "" && f.live != "" {
		return nil, usageErr{"--config and --live both give the tiers: use one"}
	}
	if (f.fastDir != "" || f.slowDir != "") && !f.measure {
		return nil, usageErr{"--fast-dir and --slow-dir are for --measure"}
	}
	out := &planOutput{Inputs: map[string]planValue{}}
	setIn := func(name string, v float64, src string) {
		out.Inputs[name] = planValue{Value: v, Source: src}
	}
	var fastDir, slowDir string

	// 1. The configuration file, or the daemon.
	if f.config != "" {
		cfg, err := config.Load(f.config)
		if err != nil {
			return nil, err
		}
		if len(cfg.Tiers) < 2 {
			return nil, fmt.Errorf("%s: one tier: nothing to plan (tierfs plan sizes a fast tier against the one below it)", f.config)
		}
		src := "config " + f.config
		fast := cfg.Tiers[0]
		capacity := float64(fast.Capacity)
		capSrc := src + " (tier[0].capacity)"
		if capacity == 0 {
			var st unix.Statfs_t
			if err := unix.Statfs(fast.Path, &st); err != nil {
				return nil, fmt.Errorf("%s: tier %s has no capacity set and its directory %s cannot be measured: %w", f.config, fast.Name, fast.Path, err)
			}
			capacity = float64(st.Blocks) * float64(st.Bsize)
			capSrc = src + " (the size of " + fast.Path + ")"
		}
		setIn(inCapacity, capacity, capSrc)
		setIn(inThreshold, cfg.TierThreshold(0), src)
		setIn(inMaxRate, float64(cfg.Policy.MaxRate), src+" ([policy] max_rate)")
		setIn(inInterval, time.Duration(cfg.Policy.Interval).Seconds(), src+" ([policy] interval)")
		fastDir, slowDir = fast.Path, cfg.Tiers[1].Path
	}
	if f.live != "" {
		l, st, err := f.sampleLive()
		if err != nil {
			return nil, err
		}
		if len(st.Tiers) < 2 {
			return nil, fmt.Errorf("%s: one tier: nothing to plan", f.live)
		}
		src := "live " + f.live
		fast := st.Tiers[0]
		setIn(inCapacity, float64(fast.CapacityBytes), src)
		setIn(inUsed, float64(fast.UsedBytes), src+" (used now)")
		if st.Policy != nil {
			if th, ok := st.Policy.Thresholds[fast.Name]; ok {
				setIn(inThreshold, th, src)
			}
			setIn(inMaxRate, float64(st.Policy.MaxRate), src+" ([policy] max_rate)")
			setIn(inInterval, time.Duration(st.Policy.Interval).Seconds(), src+" ([policy] interval)")
		}
		if l.Ingest > 0 {
			setIn(inPeak, l.Ingest, fmt.Sprintf("live: written into %s over %.1f s", fast.Name, l.Seconds))
		}
		if l.Busy && l.Moved > 0 {
			setIn(inSlowBW, l.Moved, fmt.Sprintf("live: the moves' rate over %.1f s (a lower bound where max_rate or migrate_threads hold them)", l.Seconds))
		}
		out.Live = &planLive{Mountpoint: f.live, Seconds: l.Seconds, IngestBytesPerSec: l.Ingest,
			GrowthBytesPerSec: l.Growth, MovedBytesPerSec: l.Moved, MovesBusy: l.Busy, UsedBytes: fast.UsedBytes,
			FullIn: num(plan.Absorb(float64(fast.CapacityBytes-fast.UsedBytes), l.Growth, 0))}
		fastDir, slowDir = fast.Path, st.Tiers[1].Path
	}

	// 2. Timed writes.
	if f.measure {
		if f.fastDir != "" {
			fastDir = f.fastDir
		}
		if f.slowDir != "" {
			slowDir = f.slowDir
		}
		if slowDir == "" {
			return nil, usageErr{"--measure needs the tiers' directories: --slow-dir (and --fast-dir), --config or --live"}
		}
		size, err := units.ParseByteSize(f.measureSize)
		if err != nil {
			return nil, usageErr{"--measure-size: " + err.Error()}
		}
		for _, d := range []struct{ dir, name, what string }{{fastDir, inFastBW, "fast"}, {slowDir, inSlowBW, "slow"}} {
			if d.dir == "" {
				continue
			}
			m, err := plan.MeasureWrite(d.dir, int64(size))
			if err != nil {
				return nil, err
			}
			out.Measured = append(out.Measured, m)
			how := "page cache"
			if m.Direct {
				how = "O_DIRECT"
			}
			setIn(d.name, m.BW, fmt.Sprintf("measured in %s: %s in %.2f s, 1 MiB writes (%s) then fdatasync",
				d.dir, units.Human(m.Bytes), m.Seconds, how))
		}
	}

	// 3. Flags: they override everything.
	var errs []string
	flagSize := func(flagName, in string, v string) {
		if !f.set[flagName] {
			return
		}
		b, err := units.ParseByteSize(v)
		if err != nil {
			errs = append(errs, "--"+flagName+": "+err.Error())
			return
		}
		setIn(in, float64(b), "--"+flagName)
	}
	flagRate := func(flagName, in string, v string) {
		if !f.set[flagName] && !(flagName == "base") {
			return
		}
		r, err := units.ParseRate(v)
		if err != nil {
			errs = append(errs, "--"+flagName+": "+err.Error())
			return
		}
		src := "--" + flagName
		if !f.set[flagName] {
			src = "default"
		}
		setIn(in, float64(r), src)
	}
	flagDur := func(flagName, in string, v string) {
		if !f.set[flagName] {
			return
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Sprintf("--%s: want a duration such as \"10m\" or \"90s\", got %q", flagName, v))
			return
		}
		setIn(in, d.Seconds(), "--"+flagName)
	}
	flagSize("capacity", inCapacity, f.capacity)
	if f.set["threshold"] {
		th, err := strconv.ParseFloat(f.threshold, 64)
		if err != nil || !((th > 0 && th <= 1) || th == -1) {
			errs = append(errs, fmt.Sprintf("--threshold: want a number in (0, 1], or -1 (no moves), got %q", f.threshold))
		} else {
			setIn(inThreshold, th, "--threshold")
		}
	}
	flagSize("used", inUsed, f.used)
	flagRate("peak", inPeak, f.peak)
	flagRate("base", inBase, f.base)
	flagRate("slow-bw", inSlowBW, f.slowBW)
	flagRate("fast-bw", inFastBW, f.fastBW)
	flagRate("max-rate", inMaxRate, f.maxRate)
	flagDur("interval", inInterval, f.interval)
	flagDur("burst", inBurst, f.burst)
	if _, ok := out.Inputs[inInterval]; !ok {
		setIn(inInterval, 5, "default ([policy] interval's)")
	}
	if _, ok := out.Inputs[inMaxRate]; !ok {
		setIn(inMaxRate, 0, "default (none)")
	}

	// What is still missing, all at once.
	for _, m := range []struct{ in, how string }{
		{inCapacity, "the fast tier's capacity: --capacity, --config or --live"},
		{inThreshold, "its threshold: --threshold, --config or --live"},
		{inPeak, "the producers' peak rate: --peak (or --live while they write)"},
		{inSlowBW, "the slow tier's write bandwidth: --slow-bw or --measure (or --live while moves run)"},
	} {
		if _, ok := out.Inputs[m.in]; !ok {
			errs = append(errs, "missing "+m.how)
		}
	}
	if v, ok := out.Inputs[inCapacity]; ok && v.Value <= 0 {
		errs = append(errs, fmt.Sprintf("the fast tier's capacity is %v bytes (%s)", v.Value, v.Source))
	}
	if v, ok := out.Inputs[inPeak]; ok && v.Value <= 0 {
		errs = append(errs, fmt.Sprintf("the peak rate is 0 (%s)", v.Source))
	}
	if len(errs) > 0 {
		return nil, usageErr{strings.Join(errs, "\n")}
	}

	get := func(name string) float64 { return out.Inputs[name].Value }
	in := plan.Input{
		Capacity: get(inCapacity), Threshold: get(inThreshold), Used: -1, Peak: get(inPeak),
		SlowBW: get(inSlowBW), FastBW: get(inFastBW), MaxRate: get(inMaxRate), Base: get(inBase),
		Burst: get(inBurst), Lag: get(inInterval),
	}
	if v, ok := out.Inputs[inUsed]; ok {
		in.Used = v.Value
	}
	if in.Threshold < 0 {
		// The policy is off: nothing moves down, the tier only fills.
		in.Threshold, in.SlowBW = 1, 0
	}
	r := plan.Compute(in)
	out.capacity, out.threshold, out.lag = in.Capacity, in.Threshold, in.Lag
	out.ReserveBytes, out.DemotionBytesPerSec, out.BurstBytesPerSec = r.Reserve, r.Demotion, r.Rate
	out.FillBytesPerSec, out.SustainedBytesPerSec = r.FillRate, r.Sustained
	out.AbsorbedSeconds, out.DrainSeconds = num(r.Absorbed), num(r.Drain)
	out.FastSlowerThanPeak = r.Rate < in.Peak
	if rec := r.Recommended; rec != nil {
		out.Recommended = &planRecommendation{BurstSeconds: rec.Burst, ReserveBytes: rec.Reserve,
			OK: rec.OK, CapacityBytes: num(rec.Capacity)}
		if rec.OK {
			out.Recommended.Threshold = num(rec.Threshold)
			out.Recommended.AbsorbedSecs = num(rec.Absorbed)
		}
	}
	return out, nil
}

// sampleLive reads the daemon's status twice, --sample apart.
func (f *planFlags) sampleLive() (plan.Rates, control.StatusResponse, error) {
	var zero control.StatusResponse
	gap, err := time.ParseDuration(f.sample)
	if err != nil || gap <= 0 {
		return plan.Rates{}, zero, usageErr{fmt.Sprintf("--sample: want a duration such as \"5s\", got %q", f.sample)}
	}
	root, _, err := locate(f.live)
	if err != nil {
		if root, err = canonicalPath(f.live); err != nil {
			return plan.Rates{}, zero, err
		}
	}
	c, err := control.NewClient(root)
	if err != nil {
		return plan.Rates{}, zero, err
	}
	sample := func() (plan.Sample, control.StatusResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), control.RequestTimeout)
		defer cancel()
		st, err := c.Status(ctx)
		if err != nil {
			return plan.Sample{}, st, err
		}
		s := plan.Sample{At: time.Now(), Moved: st.Moves.BytesMoved}
		for i, t := range st.Tiers {
			if i == 0 {
				s.FastUsed = t.UsedBytes
			}
			s.AllUsed += t.UsedBytes
		}
		if p := st.Policy; p != nil {
			s.Moving = len(p.Queued)+len(p.InFlight) > 0
		}
		return s, st, nil
	}
	a, _, err := sample()
	if err != nil {
		return plan.Rates{}, zero, err
	}
	time.Sleep(gap)
	b, st, err := sample()
	if err != nil {
		return plan.Rates{}, zero, err
	}
	r, _ := plan.RatesBetween(a, b)
	return r, st, nil
}

// Text output.

func rateStr(r float64) string {
	if r <= 0 {
		return "0 B/s"
	}
	return units.Human(int64(math.Round(r))) + "/s"
}

func secondsStr(n *number) string {
	if n == nil || math.IsInf(float64(*n), 0) {
		return "never"
	}
	s := float64(*n)
	d := time.Duration(s * float64(time.Second))
	switch {
	case s < 1:
		return fmt.Sprintf("%.0f ms", s*1000)
	case s < 60:
		return fmt.Sprintf("%.1f s", s)
	}
	return fmt.Sprintf("%s (%.0f s)", d.Round(time.Second), s)
}

func (o *planOutput) inputText(name string, v float64) string {
	switch name {
	case inCapacity, inUsed:
		return units.Human(int64(v))
	case inThreshold:
		if v < 0 {
			return "-1 (no moves)"
		}
		return strconv.FormatFloat(v, 'f', 2, 64)
	case inMaxRate:
		if v == 0 {
			return "none"
		}
		return rateStr(v)
	case inInterval, inBurst:
		return secondsStr(num(v))
	}
	return rateStr(v)
}

var inputOrder = []string{inCapacity, inThreshold, inUsed, inPeak, inBase, inFastBW, inSlowBW, inMaxRate, inInterval, inBurst}

var inputLabels = map[string]string{
	inCapacity: "fast tier capacity C", inThreshold: "migrate_threshold t", inUsed: "fast tier used when the burst begins",
	inPeak: "producers' peak rate R", inBase: "producers' rate between bursts L", inSlowBW: "slow tier write bandwidth W",
	inFastBW: "fast tier write bandwidth", inMaxRate: "[policy] max_rate", inInterval: "[policy] interval",
	inBurst: "burst to absorb D",
}

func (o *planOutput) print() {
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "Inputs\t\t")
	for _, name := range inputOrder {
		v, ok := o.Inputs[name]
		switch {
		case ok:
			fmt.Fprintf(w, "  %s\t%s\t%s\n", inputLabels[name], o.inputText(name, v.Value), v.Source)
		case name == inUsed:
			fmt.Fprintf(w, "  %s\t%s\t%s\n", inputLabels[inUsed], units.Human(int64(o.threshold*o.capacity)), "t·C, where steady operation leaves it")
		}
	}
	if l := o.Live; l != nil {
		fmt.Fprintf(w, "Now (%s, over %.1f s)\t\t\n", l.Mountpoint, l.Seconds)
		fmt.Fprintf(w, "  written into the fast tier\t%s\t\n", rateStr(l.IngestBytesPerSec))
		fmt.Fprintf(w, "  moved\t%s\t%s\n", rateStr(l.MovedBytesPerSec), map[bool]string{true: "moves ran throughout", false: "moves did not run throughout"}[l.MovesBusy])
		fmt.Fprintf(w, "  fast tier growth\t%s/s\t\n", signedHuman(l.GrowthBytesPerSec))
		full := "never at this rate"
		if l.FullIn != nil && !math.IsInf(float64(*l.FullIn), 0) {
			full = secondsStr(l.FullIn)
		}
		fmt.Fprintf(w, "  full in\t%s\t%s used now\n", full, units.Human(l.UsedBytes))
	}
	fmt.Fprintln(w, "Plan\t\t")
	fmt.Fprintf(w, "  reserve (1 − t)·C\t%s\t\n", units.Human(int64(o.ReserveBytes)))
	fmt.Fprintf(w, "  moves down at M\t%s\tthe slow tier's write bandwidth, capped by max_rate\n", rateStr(o.DemotionBytesPerSec))
	if o.FastSlowerThanPeak {
		fmt.Fprintf(w, "  burst on the fast tier\t%s\tthe fast tier's bandwidth: slower than the peak rate\n", rateStr(o.BurstBytesPerSec))
	}
	if o.FillBytesPerSec > 0 {
		fmt.Fprintf(w, "  the reserve fills at R − M\t%s\t\n", rateStr(o.FillBytesPerSec))
		fmt.Fprintf(w, "  a burst is absorbed for\t%s\tthen the fast tier is full and writes go at the slow tier's speed\n", secondsStr(o.AbsorbedSeconds))
	} else {
		fmt.Fprintf(w, "  a burst is absorbed for\tever\tthe moves keep up with the peak rate\n")
	}
	if o.DrainSeconds == nil || math.IsInf(float64(*o.DrainSeconds), 0) {
		fmt.Fprintf(w, "  a full reserve drains in\tnever\tthe moves do not keep up with the rate between bursts\n")
	} else {
		fmt.Fprintf(w, "  a full reserve drains in\t%s\tat M − L, after the burst: the shortest gap before the next\n", secondsStr(o.DrainSeconds))
	}
	fmt.Fprintf(w, "  sustained ingest the tiers hold\t%s\tM: in the long run everything written moves down\n", rateStr(o.SustainedBytesPerSec))
	if r := o.Recommended; r != nil {
		fmt.Fprintf(w, "Recommendation for a %s burst\t\t\n", secondsStr(num(r.BurstSeconds)))
		fmt.Fprintf(w, "  reserve needed\t%s\t(R − M)·D, and R for one interval (%s) before the moves start\n",
			units.Human(int64(r.ReserveBytes)), secondsStr(num(o.lag)))
		if r.OK {
			fmt.Fprintf(w, "  migrate_threshold\t%.2f\tthe highest that holds it: absorbs %s\n", float64(*r.Threshold), secondsStr(r.AbsorbedSecs))
		} else {
			need := "more than any threshold can give"
			if r.CapacityBytes != nil && !math.IsInf(float64(*r.CapacityBytes), 0) {
				need = fmt.Sprintf("a fast tier of %s at t = %.2f", units.Human(int64(*r.CapacityBytes)), o.threshold)
			}
			fmt.Fprintf(w, "  migrate_threshold\tnone\tno threshold of at least %.2f holds it in %s: it needs %s\n",
				plan.MinThreshold, units.Human(int64(o.capacity)), need)
		}
	}
	w.Flush()
}

func signedHuman(v float64) string {
	if v < 0 {
		return "-" + units.Human(int64(-v))
	}
	return units.Human(int64(v))
}
