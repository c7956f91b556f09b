package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"
)

// TestProducerThroughputReport measures Kafka's ProducerPerformance (1 KiB
// records, acks=all, idempotent) against two brokers in one run: one with
// log.dirs on tierfs (the policy on, a roomy fast tier on tmpfs, so
// nothing moves), one with log.dirs on a raw tmpfs directory of the same
// size (the limit). After a warm-up run on each, the runs alternate
// between the two (ABBA), 3 each (TIERFS_KAFKA_BENCH_RUNS), each into a
// fresh topic, and the test prints the medians and the ratio tierfs/raw. It
// measures, it asserts nothing; it runs only with TIERFS_KAFKA_BENCH=1
// (not in CI):
//
//	TIERFS_KAFKA_BENCH=1 go test -run TestProducerThroughputReport -v -timeout 30m ./integration/
//
// The tierfs daemon is built without -race (TIERFS_KAFKA_RACE=0) unless
// TIERFS_KAFKA_RACE or TIERFS_BIN say otherwise. TIERFS_KAFKA_BENCH_RECORDS
// changes the records per run (default 300000).
func TestProducerThroughputReport(t *testing.T) {
	if os.Getenv("TIERFS_KAFKA_BENCH") != "1" {
		t.Skip("a benchmark: set TIERFS_KAFKA_BENCH=1 to run it")
	}
	t.Setenv(EnvEnable, "1")
	if os.Getenv("TIERFS_KAFKA_RACE") == "" {
		t.Setenv("TIERFS_KAFKA_RACE", "0")
	}
	k := RequireKafka(t)
	// The producer must not be what limits: full JIT for the tools.
	k.ToolJVM = []string{"-Xmx1g", "-Djava.awt.headless=true"}
	records := envInt(t, "TIERFS_KAFKA_BENCH_RECORDS", 300000)
	runs := envInt(t, "TIERFS_KAFKA_BENCH_RUNS", 3)
	const (
		recordSize = 1024
		segment    = int64(64 << 20) // log.segment.bytes
		partitions = 3
	)
	// Each tmpfs holds 2.5 times what the runs write (about 1.1 KiB a
	// record on disk), at least 3 GiB: with threshold 0.5 nothing moves.
	need := int64(records) * 1100 * int64(runs+1)
	size := fmt.Sprintf("%dm", max(3<<10, need*5/2>>20))
	dir := WorkDir(t)

	// tierfs: the fast tier a tmpfs, the slow one a directory; the
	// default policy (threshold 0.5).
	fs := MountTierfs(t, filepath.Join(dir, "tierfs"), TierfsOptions{FastSize: size,
		Extra: "\n[policy]\nmigrate_threshold = 0.5\n"})
	// raw: the same kind of tmpfs, no FUSE.
	raw := filepath.Join(dir, "raw", "fast")
	if err := os.MkdirAll(raw, 0o755); err != nil {
		t.Fatalf("%v", err)
	}
	MountTmpfs(t, raw, size)

	bo := BrokerOptions{SegmentBytes: segment}
	targets := []struct {
		name string
		b    *Broker
	}{
		{"tierfs", NewBroker(t, k, filepath.Join(dir, "tierfs"), filepath.Join(fs.Mnt, "kafka-logs"), bo)},
		{"raw", NewBroker(t, k, filepath.Join(dir, "raw"), filepath.Join(raw, "kafka-logs"), bo)},
	}
	for _, tg := range targets {
		tg.b.Start(t)
	}
	perf := func(name string, b *Broker, topic string, n int) PerfResult {
		tdir := filepath.Dir(b.Dir)
		b.CreateTopic(t, tdir, topic, partitions)
		r := b.ProducerPerf(t, tdir, topic, n, recordSize)
		t.Logf("%-6s %-8s %s", name, topic, r.Line)
		return r
	}
	for _, tg := range targets {
		perf(tg.name, tg.b, "warmup", records/2)
	}
	res := map[string][]PerfResult{}
	for i := 0; i < runs; i++ {
		// ABBA: neither goes first every time.
		order := []int{0, 1}
		if i%2 == 1 {
			order = []int{1, 0}
		}
		for _, j := range order {
			tg := targets[j]
			res[tg.name] = append(res[tg.name], perf(tg.name, tg.b, fmt.Sprintf("run-%d", i), records))
		}
	}
	for _, tg := range targets {
		tg.b.Stop(t)
	}
	st := fs.Status(t)
	used, capacity := tierUsage(st, "fast")
	moves := int64(0)
	if st.Policy != nil {
		moves = st.Policy.Done
	}
	fs.Stop(t)

	median := func(rs []PerfResult, f func(PerfResult) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	recs := func(r PerfResult) float64 { return r.RecordsPerSec }
	mbs := func(r PerfResult) float64 { return r.MBPerSec }
	tr, rr := median(res["tierfs"], recs), median(res["raw"], recs)
	tm, rm := median(res["tierfs"], mbs), median(res["raw"], mbs)
	t.Logf("ProducerPerformance, %d records of %d B, acks=all, %d partitions, log.segment.bytes %d, medians of %d runs (%s):",
		records, recordSize, partitions, segment, runs, time.Now().Format(time.RFC3339))
	t.Logf("  %-28s %12s %10s", "log.dirs on", "records/s", "MB/s")
	t.Logf("  %-28s %12.1f %10.2f", "tierfs (fast tier: tmpfs)", tr, tm)
	t.Logf("  %-28s %12.1f %10.2f", "raw tmpfs directory", rr, rm)
	t.Logf("  %-28s %12.3f %10.3f", "ratio tierfs/raw", tr/rr, tm/rm)
	t.Logf("tierfs: fast tier %d of %d bytes used at the end, %d policy moves", used, capacity, moves)
	if moves > 0 {
		t.Logf("NOTE: the policy moved files during the runs: the fast tier was not roomy enough")
	}
}

func envInt(t *testing.T, name string, def int) int {
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
