package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/integration"
	"github.com/tierfs/tierfs/integration/benchkit"
	"github.com/tierfs/tierfs/tiering"
)

// TestPMem measures the pmem backend (issue #5) through the mount: the
// same tmpfs-backed fast tier once as type "pmem" (segments take
// preallocated pool slots and are written through a mapping) and once as
// type "nvme" (plain files, pwrite), two tierfs mounts side by side, runs
// interleaved. Kafka-shaped workloads on segment files
// (t-0/<offset>.log, what the pool takes):
//
//   - 16 KiB appends with fsync every 1 MiB, a whole segment;
//   - 1 MiB writes, a whole segment, one fsync;
//   - segment create: open(O_CREAT) and close, each timed;
//   - segment roll: create the next segment, append 16 KiB, fsync
//     (what a broker does at a roll and the first batch after it), each
//     roll timed; the median and 99th percentile of a run.
//
// Before each run the pool is full (free slots = target). Medians of
// TIERFS_BENCH_RUNS (default 3) runs; TIERFS_BENCH_SCALE scales the
// segment size (64 MiB at 1). It measures; it asserts nothing about speed.
//
//	TIERFS_BENCH=1 go test -count=1 -v -run TestPMem ./integration/bench/
func TestPMem(t *testing.T) {
	fsBenchSetup(t, nil)
	runs := microEnvInt(t, "TIERFS_BENCH_RUNS", 3)
	scale := microEnvFloat(t, "TIERFS_BENCH_SCALE", 1)
	seg := max(int64(float64(64<<20)*scale)>>20, 4) << 20
	const rolls = 24
	// Room for the pool (0.8 of the tier) to hold every segment a run
	// takes (the rolls), and the tier's own state.
	tmpfs := int64(rolls+8) * seg * 5 / 4
	dir := integration.WorkDir(t)
	quiet := "\n[policy]\nmigrate_threshold = -1\ninterval = \"1h\"\n"
	type target struct {
		name string
		fs   *integration.Tierfs
	}
	mountOne := func(name, typ string) target {
		extra := quiet + fmt.Sprintf("\n[pmem]\npool_ratio = 0.8\nsegment_size = \"%dMiB\"\n", seg>>20)
		fs := integration.MountTierfs(t, filepath.Join(dir, name), integration.TierfsOptions{
			FastSize: fmt.Sprintf("%dm", tmpfs>>20), FastType: typ, Extra: extra})
		if err := os.MkdirAll(filepath.Join(fs.Mnt, "t-0"), 0o755); err != nil {
			t.Fatal(err)
		}
		return target{name, fs}
	}
	targets := []target{mountOne("pmem", "pmem"), mountOne("nvme", "nvme")}
	poolFull := func(tg target) {
		t.Helper()
		if tg.name != "pmem" {
			return
		}
		deadline := time.Now().Add(5 * time.Minute)
		for {
			p := pmemPool(t, tg.fs)
			if p == nil {
				t.Fatalf("%s: no pool in tierfs status", tg.name)
			}
			if p.FreeSlots >= int64(p.TargetSlots) && p.TargetSlots > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("pool not full after 5 minutes: %+v", *p)
			}
			time.Sleep(100 * time.Millisecond) // the pool fills in the background
		}
	}
	segPath := func(tg target, n int) string {
		return filepath.Join(tg.fs.Mnt, "t-0", fmt.Sprintf("%020d.log", n))
	}
	clean := func(tg target) {
		t.Helper()
		ents, _ := os.ReadDir(filepath.Join(tg.fs.Mnt, "t-0"))
		for _, e := range ents {
			if err := os.Remove(filepath.Join(tg.fs.Mnt, "t-0", e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	type workload struct {
		name, unit string
		run        func(tg target) float64
	}
	mbps := func(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }
	var rollP99 = map[string][]float64{}
	workloads := []workload{
		{"16 KiB appends, fsync every 1 MiB, one segment", "MB/s", func(tg target) float64 {
			d, err := microWrite(segPath(tg, 0), seg, 16<<10, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			return mbps(seg, d)
		}},
		{"1 MiB writes, one segment, fsync at the end", "MB/s", func(tg target) float64 {
			d, err := microWrite(segPath(tg, 0), seg, 1<<20, 0)
			if err != nil {
				t.Fatal(err)
			}
			return mbps(seg, d)
		}},
		{fmt.Sprintf("segment create (open O_CREAT, close), median of %d", rolls), "µs", func(tg target) float64 {
			var ds []float64
			for i := 0; i < rolls; i++ {
				start := time.Now()
				fd, err := unix.Open(segPath(tg, (i+1)*1000), unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
				if err == nil {
					err = unix.Close(fd)
				}
				if err != nil {
					t.Fatalf("create %d on %s: %v", i, tg.name, err)
				}
				ds = append(ds, float64(time.Since(start).Microseconds()))
			}
			return benchkit.Median(ds)
		}},
		{fmt.Sprintf("segment roll (create, 16 KiB append, fsync), median of %d", rolls), "µs", func(tg target) float64 {
			var ds []float64
			for i := 0; i < rolls; i++ {
				start := time.Now()
				fd, err := unix.Open(segPath(tg, (i+1)*1000), unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o644)
				if err == nil {
					_, err = unix.Write(fd, microPattern[:16<<10])
				}
				if err == nil {
					err = unix.Fsync(fd)
				}
				if err == nil {
					err = unix.Close(fd)
				}
				if err != nil {
					t.Fatalf("roll %d on %s: %v", i, tg.name, err)
				}
				ds = append(ds, float64(time.Since(start).Microseconds()))
			}
			sort.Float64s(ds)
			rollP99[tg.name] = append(rollP99[tg.name], ds[len(ds)*99/100])
			return benchkit.Median(ds)
		}},
	}
	start := time.Now()
	res := map[string]map[string][]float64{}
	for _, w := range workloads {
		res[w.name] = map[string][]float64{}
		for r := 0; r < runs; r++ {
			for i := range targets {
				tg := targets[inTurn(r, i, len(targets))]
				poolFull(tg)
				unix.Sync()
				v := w.run(tg)
				clean(tg)
				res[w.name][tg.name] = append(res[w.name][tg.name], v)
				t.Logf("run %d %-60s %-5s %10.1f %s", r+1, w.name, tg.name, v, w.unit)
			}
		}
	}
	elapsed := time.Since(start)
	for _, tg := range targets {
		if lines := tg.fs.ErrorLines(); len(lines) > 0 {
			t.Errorf("tierfs (%s) logged errors:\n%s", tg.name, strings.Join(lines, "\n"))
		}
	}
	var rows [][]string
	for _, w := range workloads {
		m := res[w.name]
		rows = append(rows, []string{w.name + ", " + w.unit, benchkit.Cell(m["pmem"]), benchkit.Cell(m["nvme"]),
			benchkit.Ratio(m["pmem"], m["nvme"])})
	}
	rows = append(rows, []string{fmt.Sprintf("segment roll, 99th percentile of %d, µs", rolls),
		benchkit.Cell(rollP99["pmem"]), benchkit.Cell(rollP99["nvme"]), benchkit.Ratio(rollP99["pmem"], rollP99["nvme"])})
	table := benchkit.Table([]string{"workload", "pmem tier (pool, mmap)", "nvme tier (pwrite)", "pmem/nvme"}, rows)
	root := integration.RepoRoot(t)
	conf, _ := os.ReadFile(targets[0].fs.Config)
	W := func(s string) string { return strings.ReplaceAll(s, dir, "$W") }
	var md strings.Builder
	fmt.Fprintf(&md, "## PMem backend: pool and mmap writes against plain files\n\n")
	fmt.Fprintf(&md, "Two tierfs mounts side by side, each with a %d MiB tmpfs fast tier (emulated PMem): one of type "+
		"`pmem` (segments take preallocated, zeroed %d MiB pool slots by rename and are written through a shared "+
		"mapping; fsync = msync of the dirty range, the logical size xattr, fsync), one of type `nvme` (plain files, "+
		"pwrite, allocated as written). Files are Kafka segment names (`t-0/<offset>.log`). Medians of %d runs with "+
		"their spread, runs interleaved, the pool full before each run (%s in all). For throughput higher is better; "+
		"for latency lower is.\n\n", tmpfs>>20, seg>>20, runs, elapsed.Round(time.Second))
	md.WriteString(table)
	if runs < 3 {
		fmt.Fprintf(&md, "\n**Only %d run(s) per figure: a smoke run, not a result.**\n", runs)
	}
	fmt.Fprintf(&md, `
Commands:

    make bench BENCH_RUN=TestPMem
    # which runs:
    TIERFS_BENCH=1 TIERFS_KAFKA_RACE=0 go test -count=1 -v -run TestPMem ./integration/bench/

`+"`$W/pmem/tierfs.toml`"+` (the nvme mount differs only in the tier's type):

%s
`, microIndent(W(string(conf)), "    "))
	if err := benchkit.Fragment(root, "pmem", md.String()); err != nil {
		t.Fatal(err)
	}
	t.Logf("pmem backend, medians of %d runs (min–max):\n%s", runs, table)
}

// pmemPool is the fast tier's pool in `tierfs status --json`.
func pmemPool(t *testing.T, fs *integration.Tierfs) *tiering.PoolStatus {
	t.Helper()
	out, err := exec.Command(fs.Bin, "status", "--json", fs.Mnt).Output()
	if err != nil {
		t.Fatalf("tierfs status: %v", err)
	}
	var st struct {
		Tiers []tiering.TierStatus `json:"tiers"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("tierfs status --json: %v", err)
	}
	return st.Tiers[0].Pool
}
