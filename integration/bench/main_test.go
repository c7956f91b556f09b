// Package bench is `make bench`: the benchmark suite of tierfs, run as
// root on the machine it reports on. Each test measures one section and
// writes it as a fragment, docs/bench/<name>.md (benchkit.Fragment);
// TestMain then rebuilds docs/BENCHMARKS.md from every fragment there
// (benchkit.Assemble), so one section can be rerun alone:
//
//	make bench                       # everything
//	make bench BENCH_RUN=TestMicro   # one section; the report keeps the others
//
// The tests run only with TIERFS_BENCH=1 (make bench sets it) and skip
// otherwise; the Kafka ones also need what integration.RequireKafka
// checks.
package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tierfs/tierfs/integration"
	"github.com/tierfs/tierfs/integration/benchkit"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if len(verdicts.list) > 0 {
		// make bench's last word: every target of the issue judged on the
		// defaults in this run, one line each.
		fmt.Printf("\nverdicts on the defaults, this run (%d):\n", len(verdicts.list))
		for _, v := range verdicts.list {
			fmt.Println(v.Line())
		}
	}
	if memory.release != nil {
		if err := memory.release(); err != nil {
			fmt.Fprintf(os.Stderr, "%v\n", err)
			code = 1
		}
	}
	integration.CleanupBuilds()
	if os.Getenv("TIERFS_BENCH") == "1" {
		root, err := benchkit.RepoRoot()
		root = benchkit.ReportRoot(root)
		if err == nil {
			err = benchkit.Assemble(root)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "assembling %s: %v\n", benchkit.BenchReport, err)
			if code == 0 {
				code = 1
			}
		} else {
			fmt.Printf("wrote %s\n", filepath.Join(root, benchkit.BenchReport))
		}
	}
	os.Exit(code)
}

// memory is the hold on the guest's memory, taken by the first
// benchmark that runs and given back by TestMain after the last.
var memory struct {
	once    sync.Once
	release func() error
	err     error
}

// holdMemory keeps the guest's memory from the first benchmark to the
// end of the suite (benchkit.HoldGuestMemory): it pauses the machine's
// free page reporting and touches as much memory as the largest section
// uses (the Kafka throughput test: five brokers, their tiers and the
// mounts' page caches), at most half of what is available. A run that
// only reassembles the report (no test selected) touches nothing, nor
// does a smoke run with TIERFS_BENCH_HOLD_MEMORY=0 (small sizes on a
// shared machine, figures not meant to be read).
func holdMemory(t *testing.T) {
	t.Helper()
	memory.once.Do(func() {
		if os.Getenv("TIERFS_BENCH_HOLD_MEMORY") == "0" {
			return
		}
		touch := min(int64(12)<<30, benchkit.MemAvailable()/2)
		if touch <= 0 {
			return
		}
		var note string
		memory.release, note, memory.err = benchkit.HoldGuestMemory(os.TempDir(), touch)
		if memory.err == nil && note != "" {
			fmt.Println("bench: " + note)
		}
	})
	if memory.err != nil {
		t.Fatalf("holding the guest's memory for the runs: %v", memory.err)
	}
}

// verdicts are the targets judged in this run, for TestMain's summary.
var verdicts struct {
	mu   sync.Mutex
	list []benchkit.Verdict
}

// recordVerdict logs v's line and keeps it for the summary.
func recordVerdict(t *testing.T, v benchkit.Verdict) {
	t.Helper()
	t.Log(v.Line())
	verdicts.mu.Lock()
	defer verdicts.mu.Unlock()
	verdicts.list = append(verdicts.list, v)
}

// mdOutcome is v's outcome for a report's table, a miss in bold.
func mdOutcome(v benchkit.Verdict) string {
	if o := v.Outcome(); strings.HasPrefix(o, "missed") {
		return "**missed**" + strings.TrimPrefix(o, "missed")
	}
	return v.Outcome()
}
