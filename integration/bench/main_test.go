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
	"testing"

	"github.com/tierfs/tierfs/integration"
	"github.com/tierfs/tierfs/integration/benchkit"
)

func TestMain(m *testing.M) {
	var release func() error
	if os.Getenv("TIERFS_BENCH") == "1" && os.Geteuid() == 0 {
		var err error
		release, err = holdMemory()
		if err != nil {
			fmt.Fprintf(os.Stderr, "holding the guest's memory for the runs: %v\n", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	if release != nil {
		if err := release(); err != nil {
			fmt.Fprintf(os.Stderr, "%v\n", err)
			code = 1
		}
	}
	integration.CleanupBuilds()
	if os.Getenv("TIERFS_BENCH") == "1" {
		root, err := benchkit.RepoRoot()
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

// holdMemory keeps the guest's memory for the whole suite
// (benchkit.HoldGuestMemory): it pauses the machine's free page
// reporting and touches as much memory as the largest section uses
// (the Kafka throughput test: five brokers, their tiers and the mounts'
// page caches), at most half of what is available.
func holdMemory() (func() error, error) {
	touch := min(int64(12)<<30, benchkit.MemAvailable()/2)
	if touch <= 0 {
		return func() error { return nil }, nil
	}
	release, note, err := benchkit.HoldGuestMemory(os.TempDir(), touch)
	if err == nil && note != "" {
		fmt.Println("bench: " + note)
	}
	return release, err
}
