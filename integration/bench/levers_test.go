package bench

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/integration"
	"github.com/tierfs/tierfs/integration/benchkit"
)

// TestLevers measures one lever of issue 19 (item 4) before and after: two
// tierfs mounts, A and B, each over a tmpfs of its own of the same size,
// that differ in their binary and/or their [mount] table, and the raw
// tmpfs under A for reference, on the workloads a lever is meant to move.
// Rounds are interleaved (raw A B, B A raw, ...) and ratios paired per
// round, as in TestMicro. The defaults of both are TestMicro's (the policy
// quiet, /dev/fuse).
//
//	TIERFS_LEVER_A_BIN, TIERFS_LEVER_B_BIN     the binaries (default: the suite's)
//	TIERFS_LEVER_A_MOUNT, TIERFS_LEVER_B_MOUNT lines of their [mount] tables
//	TIERFS_LEVER_A_POLICY, TIERFS_LEVER_B_POLICY lines added to their [policy]
//	                        tables (pin = ["bench/**"] for passthrough)
//	TIERFS_LEVER_WORKLOADS  a comma list of seq1m, seq4m, cold, small, stat,
//	                        smallsub, statsub (default: all)
//	TIERFS_BENCH_RUNS       rounds (default 5)
//
//	TIERFS_BENCH=1 TIERFS_LEVER_A_BIN=/tmp/tierfs-before \
//	    go test -count=1 -v -run TestLevers ./integration/bench/
func TestLevers(t *testing.T) {
	fsBenchSetup(t, nil)
	runs := microEnvInt(t, "TIERFS_BENCH_RUNS", 5)
	const seq, read, small, stats = 512 << 20, 256 << 20, 5000, 2000
	tmpfsSize := fmt.Sprintf("%dm", (seq+seq/2)>>20+256)
	policy := "\n[policy]\nmigrate_threshold = -1\ninterval = \"1h\"\n"
	dir := integration.WorkDir(t)
	mount := func(name string) (*integration.Tierfs, string) {
		t.Helper()
		up := strings.ToUpper(name)
		table := os.Getenv("TIERFS_LEVER_" + up + "_MOUNT")
		extra := policy
		pol := os.Getenv("TIERFS_LEVER_" + up + "_POLICY")
		if pol != "" {
			extra += strings.ReplaceAll(pol, ";", "\n") + "\n"
		}
		if table != "" {
			extra += "\n[mount]\n" + strings.ReplaceAll(table, ";", "\n") + "\n"
		}
		if bin := os.Getenv("TIERFS_LEVER_" + up + "_BIN"); bin != "" {
			t.Setenv("TIERFS_BIN", bin)
		}
		fs := integration.MountTierfs(t, filepath.Join(dir, name), integration.TierfsOptions{FastSize: tmpfsSize, Extra: extra})
		requireTransport(t, name, fs, transportDevFuse)
		desc := fmt.Sprintf("%s, [mount] %q", fs.Bin, table)
		if pol != "" {
			desc += fmt.Sprintf(", [policy] %q", pol)
		}
		t.Logf("%s: %s", name, desc)
		return fs, desc
	}
	fsA, descA := mount("a")
	fsB, descB := mount("b")
	mkdir := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	target := func(name string, m *integration.Tierfs) microTarget {
		return microTarget{name: name, dir: mkdir(filepath.Join(m.Mnt, "bench")), mnt: m.Mnt,
			place: &benchkit.Placement{Target: name, Fast: m.FastData, Others: []string{m.SlowData}}}
	}
	targets := []microTarget{{name: "raw", dir: mkdir(filepath.Join(fsA.Fast, "bench-raw"))}, target("A", fsA), target("B", fsB)}

	mbps := func(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }
	all := map[string]microWorkload{
		"seq1m": {"1 MiB sequential write", "MB/s", func(tg microTarget) (float64, error) {
			d, err := microSeqWrite(tg.dir, seq, 1<<20, tg.placed)
			return mbps(seq, d), err
		}},
		"seq4m": {"4 MiB sequential write", "MB/s", func(tg microTarget) (float64, error) {
			d, err := microSeqWrite4(tg.dir, seq, tg.placed)
			return mbps(seq, d), err
		}},
		"cold": {"cold read", "MB/s", func(tg microTarget) (float64, error) {
			path := filepath.Join(tg.dir, "cold")
			if _, err := microWrite(path, read, 1<<20, 0); err != nil {
				return 0, err
			}
			if err := tg.placed(path, read); err != nil {
				return 0, errors.Join(err, os.Remove(path))
			}
			if err := benchkit.DropCaches(); err != nil {
				return 0, err
			}
			d, err := microRead(path, read)
			return mbps(read, d), errors.Join(err, os.Remove(path))
		}},
		"small": {"small files: create, write 4 KiB, close, unlink", "ops/s", func(tg microTarget) (float64, error) {
			d, err := microSmallFiles(filepath.Join(tg.dir, "small"), small, tg.placed)
			return float64(small) / d.Seconds(), err
		}},
		"stat": {fmt.Sprintf("stat %d files, 1.5 s after the last look", stats), "stats/s", func(tg microTarget) (float64, error) {
			d, err := leverStat(filepath.Join(tg.dir, "stat"), stats)
			return float64(stats) / d.Seconds(), err
		}},
		// Kafka's files sit a directory or more below the root: each of
		// their creates, lookups and unlinks resolves it on the tiers.
		"smallsub": {"small files in a/b/: create, write 4 KiB, close, unlink", "ops/s", func(tg microTarget) (float64, error) {
			d, err := leverSub(tg.dir, func(sub string) (time.Duration, error) {
				return microSmallFiles(filepath.Join(sub, "small"), small, tg.placed)
			})
			return float64(small) / d.Seconds(), err
		}},
		"statsub": {fmt.Sprintf("stat %d files in a/b/, 1.5 s after the last look", stats), "stats/s", func(tg microTarget) (float64, error) {
			d, err := leverSub(tg.dir, func(sub string) (time.Duration, error) {
				return leverStat(filepath.Join(sub, "stat"), stats)
			})
			return float64(stats) / d.Seconds(), err
		}},
	}
	order := []string{"seq1m", "seq4m", "cold", "small", "stat", "smallsub", "statsub"}
	if s := os.Getenv("TIERFS_LEVER_WORKLOADS"); s != "" {
		order = strings.Split(s, ",")
	}
	var workloads []microWorkload
	for _, k := range order {
		w, ok := all[strings.TrimSpace(k)]
		if !ok {
			t.Fatalf("TIERFS_LEVER_WORKLOADS: unknown workload %q", k)
		}
		workloads = append(workloads, w)
	}
	for _, tg := range targets {
		if _, err := microSeqWrite(tg.dir, seq/8, 1<<20, tg.placed); err != nil {
			t.Fatalf("warm-up on %s: %v", tg.name, err)
		}
	}
	res := map[string]map[string][]float64{}
	start := time.Now()
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
				t.Logf("run %d %-40s %-4s %10.1f %s", r+1, w.name, tg.name, v, w.unit)
			}
		}
	}
	for _, m := range []*integration.Tierfs{fsA, fsB} {
		if lines := m.ErrorLines(); len(lines) > 0 {
			t.Errorf("%s logged errors:\n%s", m.Mnt, strings.Join(lines, "\n"))
		}
		// What a passthrough lever did: files opened without the daemon.
		if r := m.Status(t).Requests; r.Passthrough {
			t.Logf("%s: %d passthrough handles given", m.Mnt, r.PassthroughGiven)
		}
	}
	var rows [][]string
	for _, w := range workloads {
		m := res[w.name]
		rows = append(rows, []string{w.name + ", " + w.unit, benchkit.Cell(m["raw"]), benchkit.Cell(m["A"]), benchkit.Cell(m["B"]),
			benchkit.RatioCell(benchkit.Paired(m["B"], m["A"])), benchkit.RatioCell(benchkit.Paired(m["A"], m["raw"])),
			benchkit.RatioCell(benchkit.Paired(m["B"], m["raw"]))})
	}
	t.Logf("A: %s\nB: %s\n%d rounds in %v, medians (min–max); ratios paired per round:\n%s", descA, descB, runs,
		time.Since(start).Round(time.Second),
		benchkit.Table([]string{"workload", "raw tmpfs", "A", "B", "B / A", "A / raw", "B / raw"}, rows))
}

// microSeqWrite4 is microSeqWrite in 4 MiB write(2)s.
func microSeqWrite4(dir string, size int64, check microCheck) (time.Duration, error) {
	path := filepath.Join(dir, "seq4")
	buf := make([]byte, 4<<20)
	for i := 0; i < len(buf); i += len(microPattern) {
		copy(buf[i:], microPattern)
	}
	start := time.Now()
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return 0, err
	}
	for done := int64(0); done < size; {
		n, err := unix.Write(fd, buf[:min(int64(len(buf)), size-done)])
		if err != nil {
			unix.Close(fd)
			return 0, err
		}
		done += int64(n)
	}
	err = errors.Join(unix.Fsync(fd), unix.Close(fd))
	d := time.Since(start)
	if err == nil && check != nil {
		err = check(path, size)
	}
	return d, errors.Join(err, os.Remove(path))
}

// leverStat makes n files in dir, lets 1.5 s pass (past a 1 s entry and
// attribute timeout: a program that looks at its files now and then, a
// broker checking its segments), then times one lstat(2) of each; the
// files are removed after.
func leverStat(dir string, n int) (time.Duration, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		if err := os.WriteFile(dir+"/f"+strconv.Itoa(i), microPattern[:4096], 0o644); err != nil {
			return 0, err
		}
	}
	var st unix.Stat_t
	for i := 0; i < n; i++ {
		if err := unix.Lstat(dir+"/f"+strconv.Itoa(i), &st); err != nil {
			return 0, err
		}
	}
	time.Sleep(1500 * time.Millisecond) // the workload's pause, not a synchronisation
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := unix.Lstat(dir+"/f"+strconv.Itoa(i), &st); err != nil {
			return 0, err
		}
		if st.Size != 4096 {
			return 0, fmt.Errorf("%s/f%d: size %d, want 4096", dir, i, st.Size)
		}
	}
	d := time.Since(start)
	return d, os.RemoveAll(dir)
}

// leverSub runs a workload in dir/a/b (made before, removed after, both
// untimed): run makes and removes its own directory in there.
func leverSub(dir string, run func(sub string) (time.Duration, error)) (time.Duration, error) {
	a := filepath.Join(dir, "a")
	sub := filepath.Join(a, "b")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return 0, err
	}
	d, err := run(sub)
	return d, errors.Join(err, os.Remove(sub), os.Remove(a))
}
