package bench

import (
	"fmt"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tierfs/tierfs/integration"
	"github.com/tierfs/tierfs/integration/benchkit"
)

// busyRate is the bytes moved between a and b over the time a move was in
// flight then (sample pairs with a move in flight at the first, or bytes
// moved between them), MiB/s; NaN under a second of moving.
func busyRate(ss []sample, a, b float64) float64 {
	var busy float64
	var bytes int64
	for k := 1; k < len(ss); k++ {
		if ss[k-1].T < a || ss[k].T > b {
			continue
		}
		if ss[k-1].InFlight > 0 || ss[k].Moved > ss[k-1].Moved {
			busy += ss[k].T - ss[k-1].T
			bytes += ss[k].Moved - ss[k-1].Moved
		}
	}
	if busy < 1 {
		return math.NaN()
	}
	return float64(bytes) / float64(mib) / busy
}

// TestMigration: issue #6, item 6. How fast the policy moves segments
// down to the HDD, against the HDD's own write bandwidth, and what the
// moves cost a producer. tierfs with a tmpfs fast tier of capacity C
// (default 2 GiB) and the throttled HDD as the slow tier. Each of
// TIERFS_BENCH_RUNS (3) iterations, into a topic of its own:
//
//  1. moves off (migrate_threshold = -1): ProducerPerformance writes
//     N = 0.4·C at full speed: the producer without moves;
//  2. `tierfs reload` with migrate_threshold = 0.05 (every sealed segment
//     must go), no producer, until N/2 has moved: the moves alone;
//  3. the producer writes N more while the rest moves: the producer
//     during moves, and the moves during a producer; then the moves go
//     on until nothing movable is left.
//
// The HDD's write bandwidth is measured first as the moves use it: 1 MiB
// writes, then fsync. Writes docs/bench/migration.md and
// docs/bench/migration.svg.
func TestMigration(t *testing.T) {
	k := benchSetup(t, map[string]string{"mkfs.xfs": "xfsprogs"})
	root := integration.RepoRoot(t)
	const (
		partitions = 4
		moveOn     = 0.05
	)
	capacity := scaled(t, 2*gib)
	segment := min(64*mib, max(8*mib, capacity/32/mib*mib))
	n := int64(0.4*float64(capacity)) / recordSize
	nRuns := runs(t, 3)
	// TIERFS_BENCH_MIGRATE_THREADS: [policy] migrate_threads (default 1,
	// the policy's default: a move writes behind its copy, which keeps
	// the disk busy without a second stream).
	threads := microEnvInt(t, "TIERFS_BENCH_MIGRATE_THREADS", 1)
	pol := func(threshold float64) string {
		return policyTable(threshold, fmt.Sprintf("migrate_threads = %d", threads))
	}
	dir := integration.WorkDir(t)
	hdd := setupHDD(t, dir, max(16*gib, 8*capacity)) // sparse
	bw := hddWriteBandwidth(t, hdd.Dir, min(512*mib, max(128*mib, capacity/4)))
	t.Logf("HDD write bandwidth (1 MiB writes + fsync): %.1f MiB/s", bw)

	fs := integration.MountTierfs(t, filepath.Join(dir, "tierfs"), integration.TierfsOptions{
		FastSize: fmt.Sprintf("%d", capacity+64*mib), FastCapacity: fmt.Sprintf("%dB", capacity),
		SlowDir: filepath.Join(hdd.Dir, "tierfs-slow"), Extra: pol(-1)})
	status := newStatusClient(fs.Mnt)
	tdir := filepath.Join(dir, "tierfs")
	b := integration.NewBroker(t, k, tdir, filepath.Join(fs.Mnt, "kafka-logs"),
		integration.BrokerOptions{SegmentBytes: segment, Heap: "1g", Extra: brokerProps(nil)})
	b.Start(t)
	smp := startSampler(t, 250*time.Millisecond, status,
		filepath.Join(fs.FastData, "kafka-logs"), filepath.Join(fs.SlowData, "kafka-logs"))

	type iteration struct {
		P0, P1 float64 // producer MiB/s without, during moves
		M1, M0 float64 // moves MiB/s during the producer, alone
		A0, B0 float64 // moves on (alone), the producer starts
		B1, C1 float64 // the producer ends, the last move ends
		Moved  int64   // bytes moved in phases 2 and 3
	}
	var its []iteration
	settle := func(timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		quiet := 0
		for time.Now().Before(deadline) {
			st := status.mustStatus(t)
			if st.Policy != nil && len(st.Policy.InFlight) == 0 && len(st.Policy.Queued) == 0 {
				quiet++
			} else {
				quiet = 0
			}
			// Idle for longer than min_age (5 s) plus two plans: the last
			// segments have been sealed and moved.
			if quiet >= 16 {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Fatalf("the moves did not end within %v", timeout)
	}
	started := time.Now()
	for i := 0; i < nRuns; i++ {
		topic := fmt.Sprintf("mig-%d", i)
		var it iteration
		fs.Reconfigure(t, pol(-1))
		b.CreateTopic(t, tdir, topic, partitions)
		p := startProducer(t, b, tdir, topic, n, -1)
		it.P0 = p.wait(t, 10*time.Minute).MiBPerSec

		// Moves on, no producer, until half of what it wrote has moved:
		// the moves alone.
		fs.Reconfigure(t, pol(moveOn))
		a0 := smp.Now()
		m0 := smp.Last().Moved
		for deadline := time.Now().Add(10 * time.Minute); smp.Last().Moved-m0 < n*recordSize/2; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the moves did not move %s within 10 minutes", mibStr(n*recordSize/2))
			}
		}
		// Then the producer, while the other half and what it writes move.
		p = startProducer(t, b, tdir, topic, n, -1)
		f := p.wait(t, 10*time.Minute)
		it.P1 = f.MiBPerSec
		it.B0, it.B1 = smp.At(p.Start), smp.At(p.End)
		settle(10 * time.Minute)
		ss := smp.Samples()
		it.M0 = busyRate(ss, a0, it.B0)
		it.M1 = busyRate(ss, it.B0, it.B1)
		last := it.B1
		for k := 1; k < len(ss); k++ {
			if ss[k].T > it.B1 && ss[k].Moved > ss[k-1].Moved {
				last = ss[k].T
			}
		}
		it.C1 = last
		it.A0 = a0
		it.Moved, _, _ = between(ss, a0, last, movedBytes)
		t.Logf("iteration %d: producer %.1f MiB/s without moves, %.1f MiB/s during moves; moves %.1f MiB/s during the producer, %.1f MiB/s alone (%s moved)",
			i, it.P0, it.P1, it.M1, it.M0, mibStr(it.Moved))
		its = append(its, it)
	}
	took := time.Since(started)
	smp.Stop()
	ss := smp.Samples()
	st := status.mustStatus(t)
	b.Stop(t)
	moves, spills, tfProblems := logFacts(fs.Log)
	var problems []string
	bad, slow := brokerProblems(b)
	for _, l := range bad {
		problems = append(problems, "broker: "+l)
	}
	if slow != "" {
		problems = append(problems, "broker: "+slow)
	}
	for _, l := range tfProblems {
		problems = append(problems, "tierfs log: "+l)
	}
	if st.Policy != nil {
		for _, e := range st.Policy.PlanErrors {
			problems = append(problems, "policy: "+e)
		}
	}
	for _, e := range st.Moves.LastErrors {
		problems = append(problems, "move: "+e)
	}

	var p0, p1, m0, m1, perMove []float64
	for _, it := range its {
		p0 = append(p0, it.P0)
		p1 = append(p1, it.P1)
		if !math.IsNaN(it.M0) {
			m0 = append(m0, it.M0)
		}
		if !math.IsNaN(it.M1) {
			m1 = append(m1, it.M1)
		}
	}
	var moveBytes int64
	var moveSecs float64
	for _, m := range moves {
		if m.DurMs > 0 && m.Bytes >= mib {
			perMove = append(perMove, float64(m.Bytes)/float64(mib)/(m.DurMs/1000))
			moveBytes += m.Bytes
			moveSecs += m.DurMs / 1000
		}
	}
	sort.Float64s(perMove)
	W := bw
	med := benchkit.Median
	var md strings.Builder
	fmt.Fprintf(&md, "## Migration speed\n\n")
	fmt.Fprintf(&md, "Issue #6, item 6. `TestMigration` (`integration/bench/migration_test.go`). One Kafka %s broker "+
		"(1 GiB heap, log.segment.bytes %s, %d partitions) on tierfs: fast tier a tmpfs of capacity C = %s, slow tier "+
		"the HDD (%s/s, at most %s dirty; see the burst section); policy interval 1 s, min_age 5 s, %d migrate thread(s), no rate cap. "+
		"Each iteration: with moves off (`migrate_threshold = -1`) `ProducerPerformance` writes %s at full speed; then "+
		"`tierfs reload` with `migrate_threshold = %.2f` (every sealed segment must go down), no producer, until half of "+
		"that has moved (the moves alone); then the producer writes %s more while the rest moves, and the moves go on "+
		"until nothing movable is left on the fast tier. Rates of the moves are bytes moved over the time a move was in "+
		"flight (sampled every 250 ms). %d iterations, medians (min–max).\n\n",
		k.Version, mibStr(segment), partitions, mibStr(capacity), mibStr(hdd.BPS),
		mibStr(envBytes(t, "TIERFS_BENCH_HDD_DIRTY", 64*mib, true)), threads, mibStr(n*recordSize), moveOn, mibStr(n*recordSize), nRuns)
	md.WriteString(benchkit.Table([]string{"", "MiB/s"}, [][]string{
		{"HDD write bandwidth (1 MiB writes, then fsync; median of 3)", benchkit.Num(W)},
		{"moves alone (no producer)", benchkit.Cell(m0)},
		{"moves while the producer runs (the backlog, then at the producer's pace)", benchkit.Cell(m1)},
		{"one move's copy rate (`moved` log lines: bytes ÷ dur; median, min–max)", benchkit.Cell(perMove)},
		{"all moves: Σ bytes ÷ Σ dur", benchkit.Num(float64(moveBytes) / float64(mib) / moveSecs)},
		{"producer, moves off", benchkit.Cell(p0)},
		{"producer while moves run", benchkit.Cell(p1)},
	}))
	md.WriteString("\n")
	md.WriteString(benchkit.Table([]string{"target (issue #6)", "measured", "verdict"}, [][]string{
		{"moves ≥ 0.9× the HDD's write bandwidth (moves alone)", fmt.Sprintf("%.2f×", med(m0)/W), verdict(med(m0)/W, 0.9)},
		{"moves ≥ 0.9× the HDD's write bandwidth (while producing)", fmt.Sprintf("%.2f×", med(m1)/W), verdict(med(m1)/W, 0.9)},
		{"producer loses ≤ 10% during moves", fmt.Sprintf("%.2f× (%+.0f%%)", med(p1)/med(p0), 100*(med(p1)/med(p0)-1)), verdict(med(p1)/med(p0), 0.9)},
	}))

	// The plot.
	px, py := rateSeries(ss, 1, logBytes)
	mx, my := rateSeries(ss, 1, movedBytes)
	var ux, uy []float64
	for _, s := range ss {
		if s.FastUsed >= 0 {
			ux = append(ux, s.T)
			uy = append(uy, float64(s.FastUsed)/float64(mib))
		}
	}
	var bands []benchkit.Band
	for i, it := range its {
		bands = append(bands, benchkit.Band{X0: it.A0, X1: it.B0, Label: fmt.Sprintf("%d: moves", i+1)})
		bands = append(bands, benchkit.Band{X0: it.B0, X1: it.B1, Label: "producer + moves"})
	}
	plot := &benchkit.Plot{
		Title:   fmt.Sprintf("Moves to the HDD (%s/s) and the producer, C = %s", mibStr(hdd.BPS), mibStr(capacity)),
		XLabel:  "time (s)",
		YLabel:  "MiB/s (1 s windows)",
		Y2Label: "fast tier used (MiB)",
		Series: []benchkit.Series{
			{Name: "producer (log growth)", X: px, Y: py},
			{Name: "moves down", X: mx, Y: my, Color: "#2ca02c"},
			{Name: "fast tier used", X: ux, Y: uy, Right: true, Color: "#d62728"},
		},
		Bands:  bands,
		HLines: []benchkit.HLine{{Y: W, Label: "HDD write bandwidth", Color: "#2ca02c"}},
	}
	if err := plot.WriteFile(filepath.Join(root, benchkit.BenchDir, "migration.svg")); err != nil {
		t.Fatalf("%v", err)
	}
	md.WriteString("\n![Moves and the producer over time](bench/migration.svg)\n\n")
	fmt.Fprintf(&md, "tierfs: %d policy moves, %s; %d spills. The iterations took %v.\n",
		len(moves), mibStr(sumMoved(moves)), spills, took.Round(time.Second))
	fmt.Fprintf(&md, "\nProblems in the broker's and tierfs's logs:\n\n%s", codeBlock(problems))
	fmt.Fprintf(&md, "\nRerun: `TIERFS_BENCH=1 go test -run '^TestMigration$' -v -timeout 60m ./integration/bench/`; "+
		"`TIERFS_BENCH_SCALE` scales C (default 2 GiB) and N, `TIERFS_BENCH_RUNS` the iterations.\n")
	if err := benchkit.Fragment(root, "migration", md.String()); err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("docs/bench/migration.md:\n%s", md.String())
	if len(bad) > 0 {
		t.Errorf("problems in the broker log:\n%s", strings.Join(problems, "\n"))
	}
}
