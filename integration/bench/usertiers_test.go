package bench

// make bench on an operator's own devices: BENCH_FAST_DIR and
// BENCH_SLOW_DIR (TIERFS_BENCH_FAST_DIR, TIERFS_BENCH_SLOW_DIR) point
// TestMicro and TestBurst at two empty root-owned directories instead of
// the suite's tmpfses and throttled loop device; the report goes to
// TIERFS_BENCH_OUT (default, set by the Makefile: bench-local/ in the
// repository) so that the repository's own figures stay as measured.

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/integration"
	"github.com/tierfs/tierfs/integration/benchkit"
	"github.com/tierfs/tierfs/internal/plan"
)

// userTiers returns the operator's tiers, or nil when the suite runs on
// its own. It fails the test when they are refused, and empties them
// when the test ends (registered first, so after every unmount).
func userTiers(t *testing.T) *benchkit.UserTiers {
	t.Helper()
	u, err := benchkit.UserTiersFromEnv()
	if err != nil {
		t.Fatalf("%v", err)
	}
	if u == nil {
		return nil
	}
	if os.Getenv(benchkit.EnvOut) == "" {
		t.Fatalf("%s and %s are set but not %s: the report of a run on your own tiers does not replace the repository's "+
			"docs/BENCHMARKS.md (make bench sets it to bench-local/)", benchkit.EnvFastDir, benchkit.EnvSlowDir, benchkit.EnvOut)
	}
	t.Cleanup(func() {
		if err := u.Clean(); err != nil {
			t.Errorf("emptying your tiers again: %v", err)
		}
	})
	return u
}

// userDirs makes name under each of the operator's tiers.
func userDirs(t *testing.T, u *benchkit.UserTiers, name string) (fast, slow string) {
	t.Helper()
	fast, slow, err := u.Dirs(name)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return fast, slow
}

// fsDescription names a directory's file system and device.
func fsDescription(dir string) string {
	var st unix.Statfs_t
	kind := "?"
	if unix.Statfs(dir, &st) == nil {
		kind = fmt.Sprintf("fs type %#x", st.Type)
		switch st.Type {
		case unix.XFS_SUPER_MAGIC:
			kind = "xfs"
		case unix.EXT4_SUPER_MAGIC:
			kind = "ext4"
		case unix.TMPFS_MAGIC:
			kind = "tmpfs"
		case unix.BTRFS_SUPER_MAGIC:
			kind = "btrfs"
		}
	}
	if m, err := findMount(dir); err == nil {
		return fmt.Sprintf("%s on %s (mounted at %s)", kind, m.src, m.at)
	}
	return kind
}

type mountOf struct{ src, at string }

// findMount is the mount holding dir: the longest mountpoint above it.
func findMount(dir string) (mountOf, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return mountOf{}, err
	}
	var best mountOf
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		at := f[4]
		if (dir == at || strings.HasPrefix(dir, strings.TrimSuffix(at, "/")+"/")) && len(at) >= len(best.at) {
			sep := 6
			for sep < len(f) && f[sep] != "-" {
				sep++
			}
			src := "?"
			if sep+2 < len(f) {
				src = f[sep+2]
			}
			best = mountOf{src: src, at: at}
		}
	}
	if best.at == "" {
		return best, fmt.Errorf("no mount holds %s", dir)
	}
	return best, nil
}

// userMicroReport is micro.md for a run on the operator's tiers: the
// same tables, and what they were measured on.
func userMicroReport(u *benchkit.UserTiers, runs int, scale float64, elapsed time.Duration, table, targets, optIns string) string {
	var md strings.Builder
	fmt.Fprintf(&md, "## Filesystem micro-benchmarks on your tiers\n\n")
	fmt.Fprintf(&md, "`make bench BENCH_FAST_DIR=%s BENCH_SLOW_DIR=%s`: the fast tier %s, the slow tier %s. "+
		"Targets: **raw**, a directory on the fast tier, no FUSE (the limit); **tierfs** with the defaults an operator gets "+
		"(`tierfs mount` with examples/tierfs.toml's `[mount]` table as it ships: supervised, requests through `/dev/fuse`), its fast tier a directory on the fast tier and its slow tier one on the slow tier; "+
		"**mergerfs** (%s, `%s`) over a directory on each, the fast one first; and tierfs's other modes (unsupervised through `/dev/fuse`; "+
		"unsupervised over FUSE over io_uring, the daemon turning the kernel's switch on; direct I/O; write-back cache), each the defaults with one change, over directories of their own. Six workloads, medians of %d runs with their spread (min–max); "+
		"ratios are the median (and spread) of the rounds' ratios. After every file a workload writes on tierfs or mergerfs, "+
		"the test checked that it was on the fast tier's directory and nowhere else. All from one run of `TestMicro` (%s). "+
		"MB/s are 10⁶ bytes per second. Everything it wrote under the two directories was removed after.\n\n",
		u.Fast, u.Slow, fsDescription(u.Fast), fsDescription(u.Slow), benchkit.MergerfsVersion(), benchkit.MergerfsOptions,
		runs, elapsed.Round(time.Second))
	md.WriteString(table)
	if runs < 5 {
		fmt.Fprintf(&md, "\n**Only %d run(s) per figure (TIERFS_BENCH_RUNS=%d), scale %s: a smoke run, not a result.**\n",
			runs, runs, strconv.FormatFloat(scale, 'g', -1, 64))
	}
	md.WriteString("\nThe targets of issue 19 on the defaults (the suite's own run judges them on tmpfs; here, on your devices):\n\n")
	md.WriteString(targets)
	md.WriteString("\nThe other modes on every workload (the same run):\n\n")
	md.WriteString(optIns)
	return md.String()
}

// burstOnUserTiers is TestBurst on the operator's tiers: one
// configuration, the slow tier at its own speed (no throttle), a fast
// tier of C = 1 GiB (TIERFS_BENCH_SCALE scales it) at t = 0.5, bursts of
// 1.5·(1 − t)·C that overflow the reserve, and the same broker with
// log.dirs on the slow tier alone.
func burstOnUserTiers(t *testing.T, k *integration.Kafka, u *benchkit.UserTiers, root, dir string) {
	t.Helper()
	_, probe := userDirs(t, u, "burst-probe")
	m, err := plan.MeasureWrite(probe, 256*mib)
	if err != nil {
		t.Fatalf("measuring your slow tier: %v", err)
	}
	bw := m.BW / float64(mib)
	t.Logf("your slow tier: %.1f MiB/s (%s in %.2f s, direct I/O %v, then fdatasync)", bw, mibStr(m.Bytes), m.Seconds, m.Direct)
	cfg := burstConfig{Name: "u", Title: "your tiers", BPS: int64(math.Round(bw * float64(mib))), BW: bw, Capacity: scaled(t, gib)}
	cfg.Burst = cfg.Capacity / 2 * 3 / 2
	o := burstScenarioOn(t, k, filepath.Join(dir, "u"), cfg, u)

	var md strings.Builder
	fmt.Fprintf(&md, "## Bursts on your tiers (Pafka's scenario 1)\n\n")
	fmt.Fprintf(&md, "`TestBurst` with `make bench BENCH_FAST_DIR=%s BENCH_SLOW_DIR=%s`: the fast tier %s, the slow tier %s "+
		"(its write bandwidth measured with `tierfs plan`'s timed write: %.1f MiB/s, 1 MiB writes%s, then fdatasync). "+
		"One Kafka %s broker (1 GiB heap, %d partitions) with `log.dirs` on tierfs: C = %s on the fast tier, t = %.1f, "+
		"a low producer at %d MiB/s throughout, bursts of %s at full speed (the first not measured); then the same "+
		"broker with `log.dirs` on the slow tier alone. The slow tier's page cache is not bounded as the suite's throttled "+
		"HDD is: a machine with much memory takes a burst into it before the disk is the limit.\n\n",
		u.Fast, u.Slow, fsDescription(u.Fast), fsDescription(u.Slow), bw, map[bool]string{true: " with O_DIRECT", false: ""}[m.Direct],
		k.Version, o.Partitions, mibStr(cfg.Capacity), o.Threshold, lowMiB, mibStr(cfg.Burst))
	md.WriteString(o.report(t, benchkit.ReportRoot(root)))
	fmt.Fprintf(&md, "\nProblems in the brokers' and tierfs's logs:\n\n%s", codeBlock(o.Problems))
	if err := benchkit.Fragment(benchkit.ReportRoot(root), "burst", md.String()); err != nil {
		t.Fatalf("%v", err)
	}
	t.Logf("burst.md:\n%s", md.String())
	if o.BrokerBad > 0 {
		t.Errorf("problems in the broker logs:\n%s", strings.Join(o.Problems, "\n"))
	}
}
