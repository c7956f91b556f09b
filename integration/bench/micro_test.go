package bench

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/integration"
	"github.com/tierfs/tierfs/integration/benchkit"
)

// TestMicro measures the file system itself, without Kafka: six
// workloads (a Go harness making the system calls directly, so it needs
// nothing installed) on three targets over the SAME private tmpfs, and
// the other modes of tierfs over tmpfses of their own:
//
//	raw             a directory on the tmpfs (the limit);
//	tierfs          a tierfs mount whose fast tier is that tmpfs (the slow
//	                tier a plain directory; the daemon built without
//	                -race) with the defaults an operator gets: `tierfs
//	                mount` with the [mount] table of examples/tierfs.toml
//	                as it ships, so supervised ([mount] supervisor) and
//	                served through /dev/fuse (supervisor_io_uring off);
//	                the configuration every target is judged on;
//	mergerfs        mergerfs over a directory on that tmpfs (first branch)
//	                and a plain directory, benchkit.MergerfsOptions;
//	tierfs-unsup    opt-in: the defaults without a supervisor, through
//	                /dev/fuse (supervisor = false, io_uring = false; the
//	                defaults before supervision);
//	tierfs-uring    opt-in: the defaults without a supervisor, over FUSE
//	                over io_uring, the daemon turning the kernel's switch
//	                on itself (supervisor = false, enable_uring_switch =
//	                true; the switch is off before, as on a stock kernel);
//	tierfs-direct   opt-in: the defaults with files opened for direct I/O
//	                (--direct-io);
//	tierfs-wbcache  opt-in: the defaults with the kernel's write-back cache
//	                ([mount] writeback_cache = true);
//	tierfs-pt       opt-in: the defaults with kernel passthrough for
//	                pinned files ([mount] passthrough = true, [policy] pin
//	                = the benchmark's directory): its read-only opens are
//	                read by the kernel from the tier.
//
// After each workload writes a file on tierfs, another mode or mergerfs,
// the file is checked to be on the target's fast tmpfs and nowhere else
// (benchkit.Placement): a target writing elsewhere fails the test.
//
// Every workload runs TIERFS_BENCH_RUNS times (default 5) on each target,
// interleaved (ABCDEFG, GFEDCBA, ABCDEFG, ...), after one warm-up write per
// target; the fragment docs/bench/micro.md has medians, spreads and ratios.
// TIERFS_BENCH_SCALE (default 1) scales the sizes: 512 MiB for the
// sequential write at 1. It measures and judges the targets of issue 19;
// it fails only when a target's files are not where they must be.
//
//	TIERFS_BENCH=1 go test -count=1 -v -run TestMicro ./integration/bench/
func TestMicro(t *testing.T) {
	fsBenchSetup(t, map[string]string{"mergerfs": "mergerfs"})
	runs := microEnvInt(t, "TIERFS_BENCH_RUNS", 5)
	scale := microEnvFloat(t, "TIERFS_BENCH_SCALE", 1)
	mib := func(n float64) int64 { return max(1, int64(math.Round(n*scale))) << 20 }
	p := microParams{
		seq:    mib(512),
		append: mib(128),
		read:   mib(256),
		conc:   mib(512),
		small:  max(200, int(math.Round(5000*scale))),
	}
	p.conc = max(p.conc/8, 1<<20) * 8 // 8 writers, whole MiB each
	// The tmpfs holds the largest file once, plus room for tierfs's own
	// state; files are removed after every measurement.
	tmpfsSize := fmt.Sprintf("%dm", (p.seq+p.seq/2)>>20+256)

	dir := integration.WorkDir(t)
	// On an operator's own tiers (make bench BENCH_FAST_DIR=...
	// BENCH_SLOW_DIR=...), every target's files go in a directory of its
	// own under them instead of on the suite's tmpfses.
	user := userTiers(t)
	opts := func(name string, o integration.TierfsOptions) integration.TierfsOptions {
		t.Helper()
		if user != nil {
			o.FastDir, o.SlowDir = userDirs(t, user, name)
		}
		return o
	}
	// tierfs over a tmpfs, the policy off and quiet (no moves, no
	// snapshots during the runs: interval 1h), since raw and mergerfs
	// write into the same tmpfs, beside the tier's files.
	policy := "\n[policy]\nmigrate_threshold = -1\ninterval = \"1h\"\n"
	// tierfs-pt pins every file of the workloads (bench-tierfs/, below).
	const ptPin = "pin = [\"bench-tierfs/**\"]\n"
	uringTransport := uringSwitchOff(t)
	fs := mountTierfsDefaults(t, "tierfs", filepath.Join(dir, "tierfs"), opts("tierfs", integration.TierfsOptions{
		FastSize: tmpfsSize, Extra: policy}), "", transportDevFuse, true)
	mkdir := func(p string) string { return mkdirAll(t, p) }
	if dp := cliStatus(t, fs).Requests.DataPath; dp != "page cache" {
		t.Fatalf("the tierfs target (the defaults): data path %q, want \"page cache\"", dp)
	}
	// The other modes, each the defaults with one change, each over a
	// tmpfs of its own of the same size.
	fsF := mountTierfsDefaults(t, "tierfs-unsup", filepath.Join(dir, "tierfs-unsup"), opts("tierfs-unsup", integration.TierfsOptions{
		FastSize: tmpfsSize, Extra: policy}), mountUnsupervised, transportDevFuse, false)
	fsU := mountTierfsDefaults(t, "tierfs-uring", filepath.Join(dir, "tierfs-uring"), opts("tierfs-uring", integration.TierfsOptions{
		FastSize: tmpfsSize, Extra: policy}), mountURingSwitch, uringTransport, false)
	if uringTransport == transportURing && !switchTurnedOn(fsU) {
		t.Fatalf("the tierfs-uring target is served over io_uring, but its log does not say that it turned the kernel's switch on (%s)", fsU.Log)
	}
	stURing := cliStatus(t, fsU)
	fsD := mountTierfsDefaults(t, "tierfs-direct", filepath.Join(dir, "tierfs-direct"), opts("tierfs-direct", integration.TierfsOptions{
		FastSize: tmpfsSize, Extra: policy, DirectIO: true}), "", transportDevFuse, true)
	fsW := mountTierfsDefaults(t, "tierfs-wbcache", filepath.Join(dir, "tierfs-wbcache"), opts("tierfs-wbcache", integration.TierfsOptions{
		FastSize: tmpfsSize, Extra: policy}), "writeback_cache = true\n", transportDevFuse, true)
	if st := cliStatus(t, fsW); st.Requests.DataPath != "write-back cache" {
		t.Fatalf("the tierfs-wbcache target: data path %q, want \"write-back cache\"", st.Requests.DataPath)
	}
	fsP := mountTierfsDefaults(t, "tierfs-pt", filepath.Join(dir, "tierfs-pt"), opts("tierfs-pt", integration.TierfsOptions{
		FastSize: tmpfsSize, Extra: policy + ptPin}), "passthrough = true\n", transportDevFuse, true)
	ptOn := cliStatus(t, fsP).Requests.Passthrough
	switch {
	case !ptOn && user == nil:
		t.Fatalf("the tierfs-pt target does not give passthrough handles (see its log, %s)", fsP.Log)
	case !ptOn:
		// An operator's tier on a stacked filesystem, or an older kernel.
		t.Logf("tierfs-pt: the kernel takes no passthrough backing on your tiers (see %s); its figures are the daemon's", fsP.Log)
	}
	tierfsTarget := func(name string, m *integration.Tierfs) microTarget {
		return microTarget{name: name, dir: mkdir(filepath.Join(m.Mnt, "bench-tierfs")), mnt: m.Mnt,
			place: &benchkit.Placement{Target: name, Fast: m.FastData, Others: []string{m.SlowData}}}
	}
	var mfsBranch, mfsSlow, rawDir string
	if user != nil {
		mfsBranch, mfsSlow = userDirs(t, user, "mergerfs")
		rawDir, _ = userDirs(t, user, "raw")
	} else {
		mfsBranch = mkdir(filepath.Join(fs.Fast, "bench-mergerfs"))
		mfsSlow = mkdir(filepath.Join(dir, "mergerfs-slow"))
		rawDir = mkdir(filepath.Join(fs.Fast, "bench-raw"))
	}
	mfsMnt := filepath.Join(dir, "mergerfs-mnt")
	// Registered after MountTierfs: unmounted before the tmpfs under it.
	mountMergerfs(t, mfsMnt, mfsBranch, mfsSlow)

	targets := []microTarget{
		{name: "raw", dir: rawDir},
		tierfsTarget("tierfs", fs),
		{name: "mergerfs", dir: mkdir(filepath.Join(mfsMnt, "bench-mergerfs")), mnt: mfsMnt,
			place: &benchkit.Placement{Target: "mergerfs", Fast: mfsBranch, Others: []string{mfsSlow}}},
		tierfsTarget("tierfs-unsup", fsF),
		tierfsTarget("tierfs-uring", fsU),
		tierfsTarget("tierfs-direct", fsD),
		tierfsTarget("tierfs-wbcache", fsW),
		tierfsTarget("tierfs-pt", fsP),
	}
	// The other modes, as the report names them.
	optIns := []struct{ name, label, flag string }{
		{"tierfs-unsup", "unsupervised, /dev/fuse", "[mount] supervisor = false, io_uring = false"},
		{"tierfs-uring", "unsupervised, io_uring, the daemon turns the switch on", "[mount] supervisor = false, enable_uring_switch = true"},
		{"tierfs-direct", "direct I/O", "--direct-io"},
		{"tierfs-wbcache", "write-back cache", "[mount] writeback_cache = true"},
		{"tierfs-pt", "kernel passthrough for pinned files", "[mount] passthrough = true; [policy] pin"},
	}
	workloads := microWorkloads(p)
	servedBefore := stURing.served()
	start := time.Now()
	for _, tg := range targets {
		// Warm-up: the daemons' first writes (thread and buffer pools).
		if _, err := microSeqWrite(tg.dir, p.seq/8, 1<<20, tg.placed); err != nil {
			t.Fatalf("warm-up on %s: %v", tg.name, err)
		}
	}
	res := map[string]map[string][]float64{}
	for _, w := range workloads {
		res[w.name] = map[string][]float64{}
		for r := 0; r < runs; r++ {
			for i := range targets {
				tg := targets[inTurn(r, i, len(targets))]
				unix.Sync()
				v, err := w.run(tg)
				if err != nil {
					t.Fatalf("%s on %s (run %d): %v", w.name, tg.name, r+1, err)
				}
				res[w.name][tg.name] = append(res[w.name][tg.name], v)
				t.Logf("run %d %-32s %-15s %10.1f %s", r+1, w.name, tg.name, v, w.unit)
			}
		}
	}
	elapsed := time.Since(start)
	// The defaults stayed supervised on /dev/fuse, one daemon
	// throughout; the io_uring opt-in answered the runs' requests over
	// io_uring.
	stDef := requireSupervision(t, "tierfs", requireTransport(t, "tierfs", fs, transportDevFuse), true)
	requireNoTakeover(t, "tierfs", stDef)
	stU := requireSupervision(t, "tierfs-uring", requireTransport(t, "tierfs-uring", fsU, uringTransport), false)
	servedURing := stU.served() - servedBefore
	ptGiven := cliStatus(t, fsP).Requests.PassthroughGiven
	if ptOn && ptGiven == 0 {
		t.Errorf("tierfs-pt: no passthrough handle was given during the runs")
	}
	if uringTransport == transportURing && servedURing == 0 {
		t.Errorf("tierfs-uring: no request was answered over io_uring during the runs (%s)", describeRequests(stU.Requests))
	}
	for _, m := range []struct {
		name string
		fs   *integration.Tierfs
	}{{"tierfs", fs}, {"tierfs-unsup", fsF}, {"tierfs-uring", fsU}, {"tierfs-direct", fsD}, {"tierfs-wbcache", fsW}, {"tierfs-pt", fsP}} {
		if lines := m.fs.ErrorLines(); len(lines) > 0 {
			t.Errorf("%s logged errors:\n%s", m.name, strings.Join(lines, "\n"))
		}
	}

	// The report. Ratios are medians of the rounds' ratios: a round ran
	// every target once, in turns, so its figures are paired.
	ratioCell := func(w, a, b string) string { return benchkit.RatioCell(benchkit.Paired(res[w][a], res[w][b])) }
	var rows [][]string
	for _, w := range workloads {
		m := res[w.name]
		rows = append(rows, []string{w.name + ", " + w.unit, benchkit.Cell(m["raw"]), benchkit.Cell(m["tierfs"]),
			benchkit.Cell(m["mergerfs"]), ratioCell(w.name, "tierfs", "raw"), ratioCell(w.name, "tierfs", "mergerfs")})
	}
	rawName := "raw tmpfs"
	if user != nil {
		rawName = "raw fast dir"
	}
	table := benchkit.Table([]string{"workload", rawName, "tierfs (defaults)", "mergerfs", "tierfs / raw", "tierfs / mergerfs"}, rows)
	// Each other mode: its figure and its ratio to the defaults, a row
	// per mode and workload.
	var orows [][]string
	for _, o := range optIns {
		for _, w := range workloads {
			orows = append(orows, []string{o.label + " (`" + o.flag + "`)", w.name + ", " + w.unit, benchkit.Cell(res[w.name][o.name]),
				ratioCell(w.name, o.name, "tierfs"), ratioCell(w.name, o.name, "raw"), ratioCell(w.name, o.name, "mergerfs")})
		}
	}
	otable := benchkit.Table([]string{"mode", "workload", "figure", "/ tierfs (defaults)", "/ raw", "/ mergerfs"}, orows)

	// The targets of issue 19, judged on the defaults alone; each other
	// mode's figure on a row of its own, not judged.
	seqName, appName, coldName, smallName := workloads[0].name, workloads[1].name, workloads[3].name, workloads[4].name
	goals := []struct {
		what, w, against string
		goal             float64
	}{
		{"1 MiB writes ≥ 1.5× mergerfs", seqName, "mergerfs", 1.5},
		{"1 MiB writes ≥ 0.6× raw tmpfs", seqName, "raw", 0.6},
		{"16 KiB appends, fsync every MiB ≥ 2× mergerfs", appName, "mergerfs", 2},
		{"small files (create, write 4 KiB, close, unlink) ≥ 1.5× mergerfs", smallName, "mergerfs", 1.5},
		{"cold reads ≥ 0.8× raw tmpfs", coldName, "raw", 0.8},
	}
	var trows [][]string
	var verdicts []string
	for _, g := range goals {
		v := benchkit.Verdict{Section: "micro", Target: g.what, Config: "the defaults (supervised, /dev/fuse)",
			Ratios: benchkit.Paired(res[g.w]["tierfs"], res[g.w][g.against]), Goal: g.goal}
		recordVerdict(t, v)
		verdicts = append(verdicts, v.Line())
		trows = append(trows, []string{g.what, "**defaults** (examples/tierfs.toml: supervised, /dev/fuse)", ratioCell(g.w, "tierfs", g.against), mdOutcome(v)})
		for _, o := range optIns {
			trows = append(trows, []string{"", o.label + " (`" + o.flag + "`)", ratioCell(g.w, o.name, g.against), "not judged"})
		}
	}
	targetsTable := benchkit.Table([]string{"target (issue 19)", "configuration", "ratio: median of the rounds (min–max)", "verdict"}, trows)

	root := integration.RepoRoot(t)
	if user != nil {
		md := userMicroReport(user, runs, scale, elapsed, table, targetsTable, otable)
		if err := benchkit.Fragment(benchkit.ReportRoot(root), "micro", md); err != nil {
			t.Fatal(err)
		}
		t.Logf("micro-benchmarks on your tiers, medians of %d runs (min–max):\n%s\n%s\n%s\n%s", runs, table, targetsTable, otable, strings.Join(verdicts, "\n"))
		return
	}
	goFuse := "go-fuse (version unknown)"
	if b, err := os.ReadFile(filepath.Join(root, "go.mod")); err == nil {
		if m := regexp.MustCompile(`github\.com/hanwen/go-fuse/v2 (\S+)`).FindSubmatch(b); m != nil {
			goFuse = "go-fuse " + string(m[1])
		}
	}
	conf, _ := os.ReadFile(fs.Config)
	W := func(s string) string { return strings.ReplaceAll(s, dir, "$W") }
	// The other mounts' configurations: the same but for their paths.
	var optConf string
	for _, o := range []struct {
		name string
		fs   *integration.Tierfs
	}{{"tierfs-unsup", fsF}, {"tierfs-uring", fsU}, {"tierfs-direct", fsD}, {"tierfs-wbcache", fsW}, {"tierfs-pt", fsP}} {
		c, _ := os.ReadFile(o.fs.Config)
		if W(strings.ReplaceAll(string(c), filepath.Join(dir, o.name), filepath.Join(dir, "tierfs"))) == W(string(conf)) {
			optConf += fmt.Sprintf("`$W/%s/tierfs.toml` is the same with `$W/%s` for `$W/tierfs` in the paths.\n", o.name, o.name)
		} else {
			optConf += fmt.Sprintf("\n`$W/%s/tierfs.toml`:\n\n%s\n", o.name, microIndent(W(string(c)), "    "))
		}
	}
	var md strings.Builder
	fmt.Fprintf(&md, "## Filesystem micro-benchmarks\n\n")
	fmt.Fprintf(&md, "Six workloads on raw tmpfs, tierfs with the defaults an operator gets (examples/tierfs.toml's `[mount]` table: "+
		"supervised, requests through `/dev/fuse`) and mergerfs over the same private "+
		"tmpfs, and five other modes of tierfs, each the defaults with one change, over tmpfses of their own of the same size; "+
		"medians of %d runs with their spread (min–max); ratios are the median (and spread) of the %d rounds' ratios, each round "+
		"having run every target once, in turns. All from one run of `TestMicro` (%s). MB/s are 10⁶ bytes per second. "+
		"After every file a workload writes on tierfs or mergerfs, the test checked that it was on the target's tmpfs and on "+
		"no other branch or tier (a target writing elsewhere fails the test).\n\n",
		runs, runs, elapsed.Round(time.Second))
	md.WriteString(table)
	if runs < 5 {
		fmt.Fprintf(&md, "\n**Only %d run(s) per figure (TIERFS_BENCH_RUNS=%d), scale %s: a smoke run, not a result.**\n",
			runs, runs, strconv.FormatFloat(scale, 'g', -1, 64))
	}
	md.WriteString("\nThe targets of issue 19, each judged on the defaults alone (`tierfs mount` with examples/tierfs.toml's " +
		"`[mount]` table, which the package installs, and no flags: a supervisor holding the FUSE connection, requests " +
		"through `/dev/fuse`, the page cache kept across opens). The other modes' ratios " +
		"follow on rows of their own; none is judged, and none stands in for the defaults:\n\n")
	md.WriteString(targetsTable)
	md.WriteString("\nThe other modes on every workload (the same run):\n\n")
	md.WriteString(otable)
	fmt.Fprintf(&md, `
Targets:

- **raw tmpfs**: a directory on the tmpfs, no FUSE (the limit).
- **tierfs** (the defaults): tierfs (%s, the daemon built without -race) with the tmpfs as its fast tier and a plain
  directory as its slow tier, the `+"`[mount]`"+` table of examples/tierfs.toml (every other key at its default);
  the policy engine off and quiet (`+"`migrate_threshold = -1`, `interval = \"1h\"`"+`: raw and mergerfs write into
  the same tmpfs), the files in a directory of the mount. Supervised (`+"`[mount] supervisor`"+`, default true:
  a supervisor process holds `+"`/dev/fuse`"+`, so a daemon's kill -9 is a pause) and served through `+"`/dev/fuse`"+`
  (`+"`supervisor_io_uring`"+` is off: a kill -9 over io_uring can fail calls in flight); `+"`tierfs status --json`"+`
  said `+"`\"transport\": \"/dev/fuse\"`"+`, `+"`\"data_path\": \"page cache\"`"+` and had a `+"`supervisor`"+` section, the
  first daemon serving throughout (generation %d, %d takeovers).
- **mergerfs** %s over a directory on the same tmpfs (first branch) and a plain directory, with `+"`%s`"+`:
  `+"`minfreespace=0`"+` (mergerfs's default, 4G, makes its create policies skip a branch with less free space, as this
  tmpfs is: every file went to the disk branch), `+"`category.create=ff`"+` (new files and directories on the first
  branch with room, as tierfs's on its first tier), `+"`cache.files=full`"+` (the page cache kept across opens, tierfs's
  FOPEN_KEEP_CACHE), no write-back cache, tierfs's timeouts (an hour for attributes and entries, 1 s for negative entries), no
  `+"`dropcacheonclose`"+`.
- **tierfs-unsup** (opt-in; the defaults before supervision): the defaults without a supervisor, through
  `+"`/dev/fuse`"+` (`+"`[mount] supervisor = false`, `io_uring = false`"+`).
- **tierfs-uring** (opt-in): the defaults without a supervisor, over FUSE over io_uring (`+"`[mount] supervisor = false`"+`,
  `+"`enable_uring_switch = true`"+`). The test turned the kernel's switch `+"`%s`"+` off before mounting, as a stock
  kernel has it; the daemon turned it on itself (the test checked that its log said so) and served over FUSE over
  io_uring: one queue per CPU, each answered by daemon threads bound to that CPU, here %d queues of %d threads; it
  answered %d requests over io_uring during the runs; `+"`tierfs status --json`"+` said `+"`\"transport\": \"%s\"`"+`.
  The switch was put back as it was after the test.
- **tierfs-direct** (opt-in): the defaults (supervised, `+"`/dev/fuse`"+`) with files opened for direct I/O (`+"`tierfs mount --direct-io`"+`): read(2)
  and write(2) bypass the mount's page cache, so its "cached re-read" comes from the daemon again.
- **tierfs-wbcache** (opt-in): the defaults with the kernel's write-back cache (`+"`[mount] writeback_cache = true`"+`;
  a write not yet fsynced is lost if the daemon dies).
- **tierfs-pt** (opt-in): the defaults (supervised, `+"`/dev/fuse`"+`) with kernel passthrough for pinned files
  (`+"`[mount] passthrough = true`; `[policy] pin = [\"bench-tierfs/**\"]`"+`, every file of the workloads pinned): a read-only open of a file nothing else has open gets a handle the kernel reads from
  the tier itself; writes go through the daemon as on the other modes. It gave %d passthrough handles during the runs.

Workloads (a Go harness making the system calls directly; every file written is checked to be on the target's fast
tmpfs and then removed after its measurement; each measurement is preceded by sync(2); one untimed warm-up write of
%d MiB per target at the start):

- **1 MiB sequential write**: a %d MiB file in 1 MiB write(2)s, fsync, close; open to close timed.
- **16 KiB appends, fsync every 1 MiB** (Kafka-shaped): a %d MiB file in 16 KiB write(2)s, fsync(2) after every
  MiB and at the end.
- **cached re-read**: a %d MiB file written and fsynced, read once (1 MiB reads), then read again: the second read
  is timed.
- **cold read**: a %d MiB file written and fsynced, caches dropped (`+"`echo 3 > /proc/sys/vm/drop_caches`"+`), read
  once. On tmpfs "cold" concerns only the page cache of the FUSE mount above it: tmpfs's own pages are its storage
  and stay, so for raw tmpfs this is a cached read; for tierfs and mergerfs every byte comes through the daemon.
- **small files**: %d times create (O_EXCL), write 4 KiB, close, unlink; operations (all four) per second. One more
  file, untimed, is made the same way and checked before its unlink.
- **8 concurrent writers**: 8 goroutines each writing its own %d MiB file in 1 MiB write(2)s, fsync; aggregate MB/s
  (total bytes over the time until the last one is done).

Commands (`+"`$W`"+` is the run's work directory):

    make bench BENCH_RUN=TestMicro     # or all of make bench
    # which runs:
    TIERFS_BENCH=1 TIERFS_KAFKA_RACE=0 TIERFS_BENCH_RUNS=%d TIERFS_BENCH_SCALE=%s go test -count=1 -timeout 150m -v -run TestMicro ./integration/bench/
    # the targets it sets up:
    echo N > %s    # as a stock kernel has it; put back after
    mount -t tmpfs -o size=%s tierfs-fast $W/tierfs/fast
    tierfs mount --config $W/tierfs/tierfs.toml $W/tierfs/mnt     # supervised, /dev/fuse
    mergerfs -f -o %s $W/tierfs/fast/bench-mergerfs:$W/mergerfs-slow $W/mergerfs-mnt
    mount -t tmpfs -o size=%s tierfs-fast $W/tierfs-unsup/fast
    tierfs mount --config $W/tierfs-unsup/tierfs.toml $W/tierfs-unsup/mnt
    mount -t tmpfs -o size=%s tierfs-fast $W/tierfs-uring/fast
    tierfs mount --config $W/tierfs-uring/tierfs.toml $W/tierfs-uring/mnt     # turns the switch on
    mount -t tmpfs -o size=%s tierfs-fast $W/tierfs-direct/fast
    tierfs mount --direct-io --config $W/tierfs-direct/tierfs.toml $W/tierfs-direct/mnt
    mount -t tmpfs -o size=%s tierfs-fast $W/tierfs-wbcache/fast
    tierfs mount --config $W/tierfs-wbcache/tierfs.toml $W/tierfs-wbcache/mnt
    mount -t tmpfs -o size=%s tierfs-fast $W/tierfs-pt/fast
    tierfs mount --config $W/tierfs-pt/tierfs.toml $W/tierfs-pt/mnt

`+"`$W/tierfs/tierfs.toml`"+`:

%s

%s`, goFuse, stDef.Supervisor.Generation, stDef.Supervisor.Takeovers,
		benchkit.MergerfsVersion(), benchkit.MergerfsOptions,
		benchkit.URingParam, stU.Requests.Queues, stU.Requests.ThreadsPerQueue, servedURing, uringTransport, ptGiven,
		p.seq/8>>20, p.seq>>20, p.append>>20, p.read>>20, p.read>>20,
		p.small, p.conc/8>>20, runs, strconv.FormatFloat(scale, 'g', -1, 64), benchkit.URingParam, tmpfsSize, benchkit.MergerfsOptions,
		tmpfsSize, tmpfsSize, tmpfsSize, tmpfsSize, tmpfsSize, microIndent(W(string(conf)), "    "), optConf)
	if err := benchkit.Fragment(benchkit.ReportRoot(root), "micro", md.String()); err != nil {
		t.Fatal(err)
	}
	t.Logf("micro-benchmarks, medians of %d runs (min–max):\n%s\n%s\n%s\n%s", runs, table, targetsTable, otable, strings.Join(verdicts, "\n"))
	t.Logf("wrote %s", filepath.Join(benchkit.ReportRoot(root), benchkit.BenchDir, "micro.md"))
}

// microTarget is one target of TestMicro: the directory the workloads
// run in, and where the files written there must end up (nil: anywhere,
// for raw tmpfs).
type microTarget struct {
	name, dir string
	// mnt is the root of the target's mount, place where its files must
	// be: a file at mnt/REL must be at place.Fast/REL.
	mnt   string
	place *benchkit.Placement
}

// placed fails unless the file at path, just written with size bytes, is
// on the target's fast medium (benchkit.Placement.CheckFile).
func (tg microTarget) placed(path string, size int64) error {
	if tg.place == nil {
		return nil
	}
	rel, err := filepath.Rel(tg.mnt, path)
	if err != nil {
		return err
	}
	return tg.place.CheckFile(rel, size)
}

type microParams struct {
	seq, append, read, conc int64 // bytes
	small                   int   // files
}

type microWorkload struct {
	name, unit string
	run        func(tg microTarget) (float64, error)
}

func microWorkloads(p microParams) []microWorkload {
	mbps := func(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }
	return []microWorkload{
		{"1 MiB sequential write", "MB/s", func(tg microTarget) (float64, error) {
			d, err := microSeqWrite(tg.dir, p.seq, 1<<20, tg.placed)
			return mbps(p.seq, d), err
		}},
		{"16 KiB appends, fsync every 1 MiB", "MB/s", func(tg microTarget) (float64, error) {
			path := filepath.Join(tg.dir, "append")
			d, err := microWrite(path, p.append, 16<<10, 1<<20)
			if err == nil {
				err = tg.placed(path, p.append)
			}
			return mbps(p.append, d), errors.Join(err, os.Remove(path))
		}},
		{"cached re-read", "MB/s", func(tg microTarget) (float64, error) {
			path := filepath.Join(tg.dir, "reread")
			if _, err := microWrite(path, p.read, 1<<20, 0); err != nil {
				return 0, err
			}
			if err := tg.placed(path, p.read); err != nil {
				return 0, errors.Join(err, os.Remove(path))
			}
			if _, err := microRead(path, p.read); err != nil {
				return 0, err
			}
			d, err := microRead(path, p.read)
			return mbps(p.read, d), errors.Join(err, os.Remove(path))
		}},
		{"cold read", "MB/s", func(tg microTarget) (float64, error) {
			path := filepath.Join(tg.dir, "cold")
			if _, err := microWrite(path, p.read, 1<<20, 0); err != nil {
				return 0, err
			}
			if err := tg.placed(path, p.read); err != nil {
				return 0, errors.Join(err, os.Remove(path))
			}
			if err := benchkit.DropCaches(); err != nil {
				return 0, err
			}
			d, err := microRead(path, p.read)
			return mbps(p.read, d), errors.Join(err, os.Remove(path))
		}},
		{"small files: create, write 4 KiB, close, unlink", "ops/s", func(tg microTarget) (float64, error) {
			d, err := microSmallFiles(filepath.Join(tg.dir, "small"), p.small, tg.placed)
			return float64(p.small) / d.Seconds(), err
		}},
		{"8 concurrent writers, 1 MiB writes", "MB/s", func(tg microTarget) (float64, error) {
			d, err := microConcurrent(tg.dir, 8, p.conc/8, tg.placed)
			return mbps(p.conc, d), err
		}},
	}
}

// microPattern is the data written: not zeros, not compressible in any way
// that matters.
var microPattern = func() []byte {
	b := make([]byte, 1<<20)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}()

// microWrite creates path and writes size bytes in bs-byte write(2)s,
// with fsync(2) after every syncEvery bytes (0: none but the last) and at
// the end; it returns the time from open to close.
func microWrite(path string, size, bs, syncEvery int64) (time.Duration, error) {
	start := time.Now()
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	var done, sinceSync int64
	for done < size {
		n := min(bs, size-done)
		w, err := unix.Write(fd, microPattern[:n])
		if err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("write %s: %w", path, err)
		}
		if int64(w) != n {
			unix.Close(fd)
			return 0, fmt.Errorf("write %s: %d of %d bytes", path, w, n)
		}
		done += n
		sinceSync += n
		if syncEvery > 0 && sinceSync >= syncEvery && done < size {
			if err := unix.Fsync(fd); err != nil {
				unix.Close(fd)
				return 0, fmt.Errorf("fsync %s: %w", path, err)
			}
			sinceSync = 0
		}
	}
	if err := unix.Fsync(fd); err != nil {
		unix.Close(fd)
		return 0, fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := unix.Close(fd); err != nil {
		return 0, fmt.Errorf("close %s: %w", path, err)
	}
	return time.Since(start), nil
}

// microCheck checks where a file just written is (microTarget.placed);
// nil checks nothing.
type microCheck func(path string, size int64) error

// microSeqWrite writes a file of size bytes in bs-byte writes, checks its
// size and where it is, removes it.
func microSeqWrite(dir string, size, bs int64, check microCheck) (time.Duration, error) {
	path := filepath.Join(dir, "seq")
	d, err := microWrite(path, size, bs, 0)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(path)
	if err == nil && fi.Size() != size {
		err = fmt.Errorf("%s: %d bytes after writing %d", path, fi.Size(), size)
	}
	if err == nil && check != nil {
		err = check(path, size)
	}
	return d, errors.Join(err, os.Remove(path))
}

// microRead reads path to its end in 1 MiB read(2)s and checks that it
// got want bytes; it returns the time from open to close.
func microRead(path string, want int64) (time.Duration, error) {
	buf := make([]byte, 1<<20)
	start := time.Now()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	var got int64
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			unix.Close(fd)
			return 0, fmt.Errorf("read %s: %w", path, err)
		}
		if n == 0 {
			break
		}
		got += int64(n)
	}
	if err := unix.Close(fd); err != nil {
		return 0, err
	}
	d := time.Since(start)
	if got != want {
		return 0, fmt.Errorf("read %s: %d bytes, want %d", path, got, want)
	}
	return d, nil
}

// microSmallFiles creates, writes 4 KiB to, closes and unlinks n files in dir
// (created first, removed after, untimed); it returns the time of the n.
// After them, untimed, one more such file is checked before its unlink:
// the n were created the same way, in the same directory.
func microSmallFiles(dir string, n int, check microCheck) (time.Duration, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return 0, err
	}
	data := microPattern[:4096]
	start := time.Now()
	for i := 0; i < n; i++ {
		path := dir + "/f" + strconv.Itoa(i)
		fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return 0, fmt.Errorf("create %s: %w", path, err)
		}
		w, err := unix.Write(fd, data)
		if err == nil && w != len(data) {
			err = fmt.Errorf("%d of %d bytes", w, len(data))
		}
		if cerr := unix.Close(fd); err == nil {
			err = cerr
		}
		if err == nil {
			err = unix.Unlink(path)
		}
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
	}
	d := time.Since(start)
	if check != nil {
		probe := dir + "/probe"
		if err := os.WriteFile(probe, data, 0o644); err != nil {
			return 0, err
		}
		if err := errors.Join(check(probe, int64(len(data))), os.Remove(probe)); err != nil {
			return 0, err
		}
	}
	return d, os.Remove(dir)
}

// microConcurrent runs k writers, each writing its own file of each
// bytes in 1 MiB writes with a final fsync; it returns the time until
// the last is done, and removes the files.
func microConcurrent(dir string, k int, each int64, check microCheck) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make([]error, k)
	start := time.Now()
	for i := 0; i < k; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = microWrite(filepath.Join(dir, fmt.Sprintf("conc-%d", i)), each, 1<<20, 0)
		}(i)
	}
	wg.Wait()
	d := time.Since(start)
	for i := 0; i < k; i++ {
		path := filepath.Join(dir, fmt.Sprintf("conc-%d", i))
		if errs[i] == nil && check != nil {
			errs[i] = check(path, each)
		}
		if err := os.Remove(path); err != nil && errs[i] == nil {
			errs[i] = err
		}
	}
	return d, errors.Join(errs...)
}

// mkdirAll makes directory p and its parents, and returns p.
func mkdirAll(t *testing.T, p string) string {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// mountMergerfs mounts mergerfs on mnt over branch (where new files go)
// and slow (benchkit.MergerfsOptions), unmounted when t ends (registered
// after the mounts under it, so before them).
func mountMergerfs(t *testing.T, mnt, branch, slow string) {
	t.Helper()
	umount, err := benchkit.MountMergerfs(mnt, branch, slow)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := umount(); err != nil {
			t.Errorf("unmounting mergerfs: %v", err)
		}
	})
}

// inTurn is the target that round r runs i-th of n: forwards in even
// rounds, backwards in odd ones (ABC CBA), so that no target always goes
// first and each round's figures are taken within minutes of each other.
func inTurn(r, i, n int) int {
	if r%2 == 1 {
		return n - 1 - i
	}
	return i
}

func microIndent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n")
}

func microEnvInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

func microEnvFloat(t *testing.T, name string, def float64) float64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil || !(x > 0) || math.IsInf(x, 0) {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return x
}
