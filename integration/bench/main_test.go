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
	code := m.Run()
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
