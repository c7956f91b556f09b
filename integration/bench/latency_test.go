package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/integration"
	"github.com/tierfs/tierfs/integration/benchkit"
)

// The latency section (issue 17, item 5): how long namespace operations
// on unrelated files, and Kafka's produce requests, wait while tierfs
// demotes large files to a throttled HDD, against the same mount idle.
//
// Environment, besides TIERFS_BENCH_HDD_BPS (the HDD, 100 MiB/s):
//
//	TIERFS_BENCH_LAT_FILES=N          small files the probes cycle through (3000)
//	TIERFS_BENCH_LAT_SEGMENTS=N       large files demoted (8)
//	TIERFS_BENCH_LAT_SEGMENT_BYTES=B  their size (256 MiB)
//	TIERFS_BENCH_LAT_IDLE=S           seconds of probing idle (20)
//	TIERFS_BENCH_LAT_PACE=D           pause between two operations of a probe stream ("2ms")
//	TIERFS_BENCH_LAT_RATE=N           Kafka records/s of ProducerPerformance (20000)
//	TIERFS_BENCH_LAT_SECONDS=S        seconds each Kafka producer run lasts (20)

// Targets of issue 17, item 5.
const (
	latP99Factor   = 2.0                   // demoting p99 of a namespace op ≤ 2× idle
	latMaxCeiling  = 50 * time.Millisecond // no namespace op over this while demoting
	latKafkaFactor = 1.2                   // produce p99 while demoting ≤ 1.2× policy off
)

// latOps are the probes' namespace operations, one stream each.
var latOps = []string{"stat", "open+close", "create+close+unlink"}

// latencies are one phase's latencies, by operation, in milliseconds.
type latencies map[string][]float64

// latRevisit is the least time between two operations on one file: more
// than the kernel's 1 s entry and attribute caches (tierfs's timeouts), so
// that every lookup and getattr reaches the daemon.
const latRevisit = 1500 * time.Millisecond

// probeNamespace runs one stream per operation in latOps on files (which
// exist; create+close+unlink makes new names in dir) until stop is closed,
// each stream pausing pace between two operations, and returns every
// operation's latency. stat and open+close cycle through halves of their
// own, and wait when they come back to a file sooner than latRevisit. The
// first error ends the probing.
func probeNamespace(files []string, dir string, pace time.Duration, stop <-chan struct{}) (latencies, error) {
	var (
		mu   sync.Mutex
		out  = latencies{}
		errs []error
		wg   sync.WaitGroup
	)
	halves := [][]string{files[:len(files)/2], files[len(files)/2:]}
	for k, op := range latOps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := halves[k%2]
			visited := make([]time.Time, len(mine))
			var ds []float64
			defer func() {
				mu.Lock()
				out[op] = ds
				mu.Unlock()
			}()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				j := i % len(mine)
				f := mine[j]
				if op != "create+close+unlink" {
					if wait := latRevisit - time.Since(visited[j]); wait > 0 {
						select {
						case <-stop:
							return
						case <-time.After(wait):
						}
					}
				}
				start := time.Now()
				var err error
				switch op {
				case "stat":
					var st unix.Stat_t
					err = unix.Stat(f, &st)
				case "open+close":
					var fd int
					if fd, err = unix.Open(f, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
						err = unix.Close(fd)
					}
				case "create+close+unlink":
					p := filepath.Join(dir, "c-"+strconv.Itoa(i))
					var fd int
					if fd, err = unix.Open(p, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644); err == nil {
						err = unix.Close(fd)
						if uerr := unix.Unlink(p); err == nil {
							err = uerr
						}
					}
				}
				d := time.Since(start)
				visited[j] = start
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s %s: %w", op, f, err))
					mu.Unlock()
					return
				}
				ds = append(ds, float64(d)/float64(time.Millisecond))
				time.Sleep(pace)
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return out, errs[0]
	}
	return out, nil
}

// latCells are p50, p99, p99.9 and max of xs, in ms.
func latCells(xs []float64) []string {
	f := func(q float64) string { return benchkit.Num(benchkit.Percentile(xs, q)) }
	return []string{f(50), f(99), f(99.9), f(100)}
}

// latDuration reads a Go duration from the environment.
func latDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		t.Fatalf("%s=%q: want a duration", name, s)
	}
	return d
}

// startMigrate runs `tierfs migrate --to TIER --wait PATH...` in the
// background; the returned func waits for it and fails the test if it
// failed.
func startMigrate(t *testing.T, fs *integration.Tierfs, tier string, paths []string) (wait func() time.Time) {
	t.Helper()
	cmd := exec.Command(fs.Bin, append([]string{"migrate", "--to", tier, "--wait"}, paths...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("tierfs migrate: %v", err)
	}
	done := make(chan struct{})
	var end time.Time
	var err error
	go func() {
		err = cmd.Wait()
		end = time.Now()
		close(done)
	}()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return func() time.Time {
		t.Helper()
		select {
		case <-done:
		case <-time.After(30 * time.Minute):
			t.Fatalf("tierfs migrate --to %s did not end within 30 minutes:\n%s", tier, lastLines(out.Bytes(), 20))
		}
		if err != nil {
			t.Fatalf("tierfs migrate --to %s: %v\n%s", tier, err, lastLines(out.Bytes(), 20))
		}
		return end
	}
}

// checkOnTier fails the test unless every path (inside fs.Mnt) is a
// file on the backing directory tierData (fs.FastData, fs.SlowData) and
// not on the other one.
func checkOnTier(t *testing.T, fs *integration.Tierfs, tierData string, paths []string) {
	t.Helper()
	other := fs.FastData
	if tierData == fs.FastData {
		other = fs.SlowData
	}
	for _, p := range paths {
		rel, err := filepath.Rel(fs.Mnt, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(filepath.Join(tierData, rel)); err != nil {
			t.Errorf("%s is not on %s after the migration: %v", rel, tierData, err)
		}
		if _, err := os.Lstat(filepath.Join(other, rel)); err == nil {
			t.Errorf("%s is still on %s after the migration", rel, other)
		}
	}
}

// TestLatency: namespace operations (stat, open+close,
// create+close+unlink) on small files unrelated to the files being moved,
// their p50, p99, p99.9 and max, first with the mount idle, then while
// TIERFS_BENCH_LAT_SEGMENTS files of TIERFS_BENCH_LAT_SEGMENT_BYTES
// (8 × 256 MiB) are demoted from the tmpfs fast tier to the throttled
// HDD (`tierfs migrate --to slow --wait`, which queues them on the
// policy's mover as the CLI does, one at a time). Targets: while demoting,
// each operation's p99 within 2× idle and none over 50 ms. Writes
// docs/bench/latency.md.
func TestLatency(t *testing.T) {
	fsBenchSetup(t, map[string]string{"mkfs.xfs": "xfsprogs"})
	root := integration.RepoRoot(t)
	nFiles := max(2, int(envBytes(t, "TIERFS_BENCH_LAT_FILES", 3000, false)))
	nSegs := int(envBytes(t, "TIERFS_BENCH_LAT_SEGMENTS", 8, false))
	segBytes := envBytes(t, "TIERFS_BENCH_LAT_SEGMENT_BYTES", 256*mib, false)
	idle := time.Duration(envFloat(t, "TIERFS_BENCH_LAT_IDLE", 20) * float64(time.Second))
	pace := latDuration(t, "TIERFS_BENCH_LAT_PACE", 2*time.Millisecond)

	dir := integration.WorkDir(t)
	hdd := setupHDD(t, dir, max(8*gib, 4*int64(nSegs)*segBytes))
	// The policy plans no moves of its own (threshold -1) but runs as by
	// default (a plan every 5 s): its snapshots are part of "idle".
	fs := integration.MountTierfs(t, filepath.Join(dir, "tierfs"), integration.TierfsOptions{
		FastSize: fmt.Sprintf("%d", int64(nSegs)*segBytes+512*mib),
		SlowDir:  filepath.Join(hdd.Dir, "tierfs-slow"),
		Extra:    "\n[policy]\nmigrate_threshold = -1\n"})
	requireTransport(t, "tierfs", fs, transportDevFuse)

	// The probes' files, and the large files, in unrelated directories.
	probeDir := filepath.Join(fs.Mnt, "probe")
	createDir := filepath.Join(fs.Mnt, "probe-create")
	segDir := filepath.Join(fs.Mnt, "segments-0")
	for _, d := range []string{probeDir, createDir, segDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := make([]string, nFiles)
	for i := range files {
		files[i] = filepath.Join(probeDir, fmt.Sprintf("f-%05d", i))
		if err := os.WriteFile(files[i], microPattern[:4096], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var segs []string
	for i := 0; i < nSegs; i++ {
		p := filepath.Join(segDir, fmt.Sprintf("%020d.log", int64(i)*segBytes))
		if _, err := microWrite(p, segBytes, 1<<20, 0); err != nil {
			t.Fatal(err)
		}
		segs = append(segs, p)
	}
	checkOnTier(t, fs, fs.FastData, segs)
	unix.Sync()

	// Idle.
	stop := make(chan struct{})
	timer := time.AfterFunc(idle, func() { close(stop) })
	idleLat, err := probeNamespace(files, createDir, pace, stop)
	timer.Stop()
	if err != nil {
		t.Fatalf("idle: %v", err)
	}
	// Demoting.
	stop = make(chan struct{})
	start := time.Now()
	wait := startMigrate(t, fs, "slow", segs)
	var demLat latencies
	probed := make(chan error, 1)
	go func() {
		var err error
		demLat, err = probeNamespace(files, createDir, pace, stop)
		probed <- err
	}()
	end := wait()
	close(stop)
	if err := <-probed; err != nil {
		t.Fatalf("while demoting: %v", err)
	}
	took := end.Sub(start)
	checkOnTier(t, fs, fs.SlowData, segs)
	if lines := fs.ErrorLines(); len(lines) > 0 {
		t.Errorf("tierfs logged errors:\n%s", strings.Join(lines, "\n"))
	}

	var rows [][]string
	var verdicts []string
	for _, op := range latOps {
		a, b := idleLat[op], demLat[op]
		pa, pb := benchkit.Percentile(a, 99), benchkit.Percentile(b, 99)
		mx := benchkit.Percentile(b, 100)
		v := "met"
		var why []string
		if pb > latP99Factor*pa {
			why = append(why, fmt.Sprintf("p99 %s× idle (target ≤ %s×)", benchkit.Num(pb/pa), benchkit.Num(latP99Factor)))
		}
		if mx > float64(latMaxCeiling)/float64(time.Millisecond) {
			why = append(why, fmt.Sprintf("max %s ms (target ≤ %d ms)", benchkit.Num(mx), latMaxCeiling/time.Millisecond))
		}
		if len(why) > 0 {
			v = "**missed**: " + strings.Join(why, "; ")
		}
		verdicts = append(verdicts, op+": "+v)
		row := append([]string{op, strconv.Itoa(len(a))}, latCells(a)...)
		row = append(row, strconv.Itoa(len(b)))
		row = append(row, latCells(b)...)
		row = append(row, benchkit.Num(pb/pa)+"×", v)
		rows = append(rows, row)
	}
	table := benchkit.Table([]string{"operation", "idle: n", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
		"demoting: n", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "p99 demoting / idle", "verdict"}, rows)

	var md strings.Builder
	fmt.Fprintf(&md, "## Latency of namespace operations while files are demoted\n\n")
	fmt.Fprintf(&md, "Issue 17, item 5. `TestLatency` (`integration/bench/latency_test.go`): tierfs with the defaults of "+
		"`tierfs mount` (requests through `/dev/fuse`), its fast tier a tmpfs, its slow tier xfs on a loop device "+
		"throttled to %s/s (read and write; at most %s of dirty page cache in front of it). Three probe streams, one "+
		"per operation, each pausing %v between two operations: `stat` and `open`+`close` (read-only) on %d files of 4 KiB "+
		"in a directory of their own (half each), cycled through and none touched again within %v, so that no lookup "+
		"or attribute is still in the kernel's 1 s caches and each operation reaches the daemon; `create`+`close`+`unlink` "+
		"of a new name in another directory. First %v with the mount idle "+
		"(the policy on, planning a move every 5 s, with nothing to move: its snapshots are part of idle), then while "+
		"%d files of %s in a third directory are demoted to the HDD (`tierfs migrate --to slow --wait`: one move at a "+
		"time, through the policy's mover), which took %v. Latencies are each operation's wall time in the probe, "+
		"in ms; percentiles by nearest rank.\n\n",
		mibStr(hdd.BPS), mibStr(envBytes(t, "TIERFS_BENCH_HDD_DIRTY", 64*mib, true)), pace, nFiles, latRevisit, idle,
		nSegs, mibStr(segBytes), took.Round(100*time.Millisecond))
	md.WriteString(table)
	fmt.Fprintf(&md, "\nTargets (issue 17): while demoting, each operation's p99 within %s× idle, and none over %d ms "+
		"(the max).\n", benchkit.Num(latP99Factor), latMaxCeiling/time.Millisecond)
	fmt.Fprintf(&md, "\nRerun: `TIERFS_BENCH=1 go test -run '^TestLatency$' -v -timeout 30m ./integration/bench/`; "+
		"`TIERFS_BENCH_LAT_SEGMENTS`, `TIERFS_BENCH_LAT_SEGMENT_BYTES`, `TIERFS_BENCH_LAT_FILES`, `TIERFS_BENCH_LAT_IDLE` "+
		"(seconds) and `TIERFS_BENCH_LAT_PACE` size it, `TIERFS_BENCH_HDD_BPS` throttles the HDD.\n")
	if err := benchkit.Fragment(root, "latency", md.String()); err != nil {
		t.Fatal(err)
	}
	t.Logf("docs/bench/latency.md:\n%s\nverdicts:\n%s", md.String(), strings.Join(verdicts, "\n"))
}

// perfPercentilesRE matches the percentiles at the end of
// ProducerPerformance's summary.
var perfPercentilesRE = regexp.MustCompile(`([\d.]+) ms 50th, ([\d.]+) ms 95th, ([\d.]+) ms 99th, ([\d.]+) ms 99\.9th`)

// producePercentiles are p50, p95, p99, p99.9 of a producer's summary.
func producePercentiles(t *testing.T, r perfReport) [4]float64 {
	t.Helper()
	m := perfPercentilesRE.FindStringSubmatch(r.Line)
	if m == nil {
		t.Fatalf("no percentiles in ProducerPerformance's summary: %s", r.Line)
	}
	var p [4]float64
	for i := range p {
		p[i], _ = strconv.ParseFloat(m[i+1], 64)
	}
	return p
}

// sealedSegments lists the .log files of the partitions of topic under
// logDir that have a newer segment after them (Kafka no longer appends
// to them), oldest first within a partition.
func sealedSegments(t *testing.T, logDir, topic string) []string {
	t.Helper()
	parts, err := filepath.Glob(filepath.Join(logDir, topic+"-*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range parts {
		logs, err := filepath.Glob(filepath.Join(p, "*.log"))
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(logs) // 20-digit base offsets: names sort as numbers
		if len(logs) > 1 {
			out = append(out, logs[:len(logs)-1]...)
		}
	}
	return out
}

// TestLatencyKafka: Kafka's produce latency (ProducerPerformance at a
// fixed rate, TIERFS_BENCH_LAT_RATE records/s of 1 KiB for
// TIERFS_BENCH_LAT_SECONDS, acks=all) on a broker whose log.dirs are on
// tierfs (tmpfs fast tier, throttled HDD slow tier, 64 MiB segments), in
// TIERFS_BENCH_RUNS rounds (5) on one broker: each round one run with the
// policy moving nothing (migrate_threshold = -1) and one while the sealed
// segments of another topic, written before, are demoted to the HDD (as
// many as the HDD takes in a producer run and a fifth more, so that the
// demotions last the whole run); between rounds, unmeasured, the segments
// are promoted back. Which run of a round comes first alternates. The
// broker's own p99 moves from run to run on two cores more than a
// demotion does (docs/perf.md, 17), so one pair says little: the target,
// p99 while demoting within 1.2× of the run without, is judged on the
// median of the rounds' ratios, with their spread. Writes
// docs/bench/latency-kafka.md.
func TestLatencyKafka(t *testing.T) {
	k := benchSetup(t, map[string]string{"mkfs.xfs": "xfsprogs"})
	root := integration.RepoRoot(t)
	rate := int(envBytes(t, "TIERFS_BENCH_LAT_RATE", 20000, false))
	secs := envFloat(t, "TIERFS_BENCH_LAT_SECONDS", 20)
	rounds := microEnvInt(t, "TIERFS_BENCH_RUNS", 5)
	const segment = 64 << 20
	records := int64(float64(rate) * secs)
	dir := integration.WorkDir(t)
	hdd := setupHDD(t, dir, 24*gib)
	// Enough sealed segments that their demotion outlasts a producer run.
	prefill := max(2*segment*4, int64(float64(hdd.BPS)*secs*1.2))
	prefillRecords := prefill / recordSize
	// Each round's two topics are deleted before the next round.
	fast := prefill + 4*records*1100 + gib

	fs := integration.MountTierfs(t, filepath.Join(dir, "tierfs"), integration.TierfsOptions{
		FastSize: fmt.Sprintf("%d", fast), SlowDir: filepath.Join(hdd.Dir, "tierfs-slow"), Extra: policyTable(-1)})
	requireTransport(t, "tierfs", fs, transportDevFuse)
	logDir := filepath.Join(fs.Mnt, "kafka-logs")
	bdir := filepath.Join(dir, "broker")
	b := integration.NewBroker(t, k, bdir, logDir, integration.BrokerOptions{
		SegmentBytes: segment, Heap: "1g", Extra: brokerProps(nil)})
	b.Start(t)

	produce := func(topic string, n int64, rate int) perfReport {
		b.CreateTopic(t, bdir, topic, 4)
		return startProducer(t, b, bdir, topic, n, rate).wait(t, 30*time.Minute)
	}
	// The sealed segments to demote, then a warm-up run (the JIT).
	produce("old", prefillRecords, -1)
	segs := sealedSegments(t, logDir, "old")
	if len(segs) == 0 {
		t.Fatalf("no sealed segment of topic old under %s", logDir)
	}
	produce("warmup", min(records, int64(rate)*5), rate)
	deleteTopic(t, b, bdir, "warmup")

	type round struct {
		off, dem      perfReport
		po, pd        [4]float64
		overlap, run  time.Duration
		demotingFirst bool
	}
	var rs []round
	for r := 0; r < rounds; r++ {
		var rd round
		rd.demotingFirst = r%2 == 1
		runOff := func() {
			rd.off = produce(fmt.Sprintf("lat-off-%d", r), records, rate)
		}
		runDemoting := func() {
			topic := fmt.Sprintf("lat-demoting-%d", r)
			b.CreateTopic(t, bdir, topic, 4)
			start := time.Now()
			wait := startMigrate(t, fs, "slow", segs)
			rd.dem = startProducer(t, b, bdir, topic, records, rate).wait(t, 30*time.Minute)
			prodEnd := time.Now()
			migEnd := wait()
			checkOnTier(t, fs, fs.SlowData, segs)
			rd.run, rd.overlap = prodEnd.Sub(start), prodEnd.Sub(start)
			if migEnd.Before(prodEnd) {
				rd.overlap = migEnd.Sub(start)
			}
			// Back to fast, unmeasured, so that the next round demotes the
			// same segments and the next run with nothing moving has
			// nothing moving.
			startMigrate(t, fs, "fast", segs)()
			checkOnTier(t, fs, fs.FastData, segs)
		}
		if rd.demotingFirst {
			runDemoting()
			runOff()
		} else {
			runOff()
			runDemoting()
		}
		deleteTopic(t, b, bdir, fmt.Sprintf("lat-off-%d", r))
		deleteTopic(t, b, bdir, fmt.Sprintf("lat-demoting-%d", r))
		rd.po, rd.pd = producePercentiles(t, rd.off), producePercentiles(t, rd.dem)
		t.Logf("round %d: p99 %v ms with nothing moving, %v ms while demoting (overlap %v of %v)",
			r+1, rd.po[2], rd.pd[2], rd.overlap.Round(100*time.Millisecond), rd.run.Round(100*time.Millisecond))
		rs = append(rs, rd)
	}
	b.Stop(t)
	problems, _ := brokerProblems(b)
	_, _, tfProblems := logFacts(fs.Log)

	var ratios, p95ratios []float64
	var rows [][]string
	for i, rd := range rs {
		ratio := rd.pd[2] / rd.po[2]
		ratios = append(ratios, ratio)
		p95ratios = append(p95ratios, rd.pd[1]/rd.po[1])
		order := "off, then demoting"
		if rd.demotingFirst {
			order = "demoting, then off"
		}
		rows = append(rows, []string{strconv.Itoa(i + 1), order,
			benchkit.Num(rd.off.RecPerSec), benchkit.Num(rd.po[1]), benchkit.Num(rd.po[2]), benchkit.Num(rd.off.MaxLatMs),
			benchkit.Num(rd.dem.RecPerSec), benchkit.Num(rd.pd[1]), benchkit.Num(rd.pd[2]), benchkit.Num(rd.dem.MaxLatMs),
			benchkit.Num(ratio) + "×", rd.overlap.Round(100*time.Millisecond).String() + " of " + rd.run.Round(100*time.Millisecond).String()})
	}
	med := benchkit.Median(ratios)
	lo, hi := benchkit.Spread(ratios)
	v := "met"
	if !(med <= latKafkaFactor) {
		v = fmt.Sprintf("**missed** by %.0f%%", 100*(med-latKafkaFactor)/latKafkaFactor)
	}
	met := 0
	for _, r := range ratios {
		if r <= latKafkaFactor {
			met++
		}
	}
	verdict := fmt.Sprintf("VERDICT latency: Kafka produce p99 while demoting ≤ %s× policy off on the defaults (supervised, /dev/fuse): %s; %s× (%s–%s), median of %d rounds (%d of %d rounds within)",
		benchkit.Num(latKafkaFactor), strings.ReplaceAll(v, "**", ""), benchkit.Num(med), benchkit.Num(lo), benchkit.Num(hi), len(ratios), met, len(ratios))
	fmt.Println(verdict)
	table := benchkit.Table([]string{"round", "order", "off: records/s", "p95 ms", "p99 ms", "max ms",
		"demoting: records/s", "p95 ms", "p99 ms", "max ms", "p99 demoting / off", "demotion overlapped"}, rows)

	var md strings.Builder
	fmt.Fprintf(&md, "## Kafka produce latency while segments are demoted\n\n")
	fmt.Fprintf(&md, "Issue 17, item 5. `TestLatencyKafka` (`integration/bench/latency_test.go`): one Kafka %s broker "+
		"(1 GiB heap, log.segment.bytes 64 MiB, 4 partitions) with `log.dirs` on tierfs with the defaults of `tierfs "+
		"mount` (supervised, requests through `/dev/fuse`; `migrate_threshold = -1`: the policy plans no move of its own), its fast "+
		"tier a tmpfs, its slow tier xfs on a loop device throttled to %s/s. `ProducerPerformance` at a fixed %d records/s "+
		"of 1 KiB (acks=all, idempotent, linger.ms=5) for %d records, into a new topic each run, in %d rounds on the same broker: "+
		"each round one run with nothing moving and one while the %d sealed segments (%s) of a topic written before are demoted "+
		"to the HDD (`tierfs migrate --to slow --wait`, one move at a time through the policy's mover); after it, unmeasured, the "+
		"segments are promoted back (`tierfs migrate --to fast --wait`) and the round's topics deleted. The order within a round "+
		"alternates. The percentiles are ProducerPerformance's own (whole milliseconds).\n\n",
		k.Version, mibStr(hdd.BPS), rate, records, rounds, len(segs), mibStr(int64(len(segs))*segment))
	md.WriteString(table)
	p95med := benchkit.Median(p95ratios)
	p95lo, p95hi := benchkit.Spread(p95ratios)
	fmt.Fprintf(&md, "\nTarget (issue 17): produce p99 while demoting within %s× of the run with nothing moving, judged on the "+
		"median of the rounds' ratios: %s, %s× (%s–%s), %d of %d rounds within. The p95 ratio: %s× (%s–%s).\n\n    %s\n",
		benchkit.Num(latKafkaFactor), v, benchkit.Num(med), benchkit.Num(lo), benchkit.Num(hi), met, len(ratios),
		benchkit.Num(p95med), benchkit.Num(p95lo), benchkit.Num(p95hi), verdict)
	var all []string
	for _, p := range problems {
		all = append(all, "broker: "+p)
	}
	for _, p := range tfProblems {
		all = append(all, "tierfs: "+p)
	}
	fmt.Fprintf(&md, "\nProblems in the broker's and tierfs's logs:\n\n%s", codeBlock(all))
	fmt.Fprintf(&md, "\nRerun: `TIERFS_BENCH=1 go test -run '^TestLatencyKafka$' -v -timeout 60m ./integration/bench/`; "+
		"`TIERFS_BENCH_RUNS` (rounds), `TIERFS_BENCH_LAT_RATE` (records/s), `TIERFS_BENCH_LAT_SECONDS` and `TIERFS_BENCH_HDD_BPS` size it.\n")
	if err := benchkit.Fragment(root, "latency-kafka", md.String()); err != nil {
		t.Fatal(err)
	}
	t.Logf("docs/bench/latency-kafka.md:\n%s", md.String())
	if len(problems) > 0 {
		t.Errorf("problems in the broker's log:\n%s", strings.Join(problems, "\n"))
	}
}
