package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tierfs/tierfs/pmem"
)

func TestMain(m *testing.M) {
	code := m.Run()
	CleanupBuilds()
	os.Exit(code)
}

// verifyValue is the value of record i of the verify topic: 1000 bytes
// that say which record they belong to.
func verifyValue(i int) string {
	h := sha256.Sum256([]byte(strconv.Itoa(i)))
	s := fmt.Sprintf("%08d-", i) + strings.Repeat(hex.EncodeToString(h[:]), 16)
	return s[:1000]
}

// produceVerify writes records 0..n-1 of the verify topic with
// ConsoleProducer (key i, value verifyValue(i), acks=all).
func produceVerify(t *testing.T, b *Broker, dir, topic string, n int) {
	t.Helper()
	produceRange(t, b.K, b.Bootstrap(), dir, topic, 0, n)
}

// consumeVerify reads the verify topic from the beginning with
// ConsoleConsumer and checks that it holds exactly records 0..n-1, each
// once, each with its value.
func consumeVerify(t *testing.T, b *Broker, dir, topic string, n int) {
	t.Helper()
	checkNumbered(t, topic, consumeAll(t, b.K, b.Bootstrap(), dir, topic, int64(n)), 0, n)
}

// checkDumps runs DumpLogSegments on every .log under the log dir and
// checks that every batch is valid and nothing unexpected is printed. For
// each of the topics given it checks that the partitions hold exactly the
// offsets 0..end-1, in order, across their segments, and that the
// records add up to want. It returns the number of .log files per
// partition.
func checkDumps(t *testing.T, k *Kafka, dir, logDir string, want map[string]int64) map[string]int {
	t.Helper()
	files := LogFiles(t, logDir)
	var all []string
	parts := make([]string, 0, len(files))
	for p := range files {
		parts = append(parts, p)
	}
	sort.Strings(parts)
	for _, p := range parts {
		all = append(all, files[p]...)
	}
	start := time.Now()
	dumps := k.DumpSegments(t, dir, all)
	t.Logf("DumpLogSegments --deep-iteration: %d segments in %v", len(dumps), time.Since(start).Round(time.Millisecond))
	byPath := map[string]SegmentDump{}
	batches := 0
	for _, d := range dumps {
		byPath[d.Path] = d
		batches += d.Batches
		for _, l := range d.InvalidBatches {
			errorf(t, "%s: invalid batch: %s", d.Path, l)
		}
		for _, l := range d.Unexpected {
			errorf(t, "%s: DumpLogSegments says: %s", d.Path, l)
		}
	}
	counts := map[string]int{}
	topicRecords := map[string]int64{}
	for _, p := range parts {
		counts[p] = len(files[p])
		topic := p[:strings.LastIndex(p, "-")]
		if _, ok := want[topic]; !ok {
			continue
		}
		next := int64(0)
		for _, f := range files[p] {
			d, ok := byPath[f]
			if !ok {
				fatalf(t, "DumpLogSegments said nothing about %s", f)
			}
			base, err := strconv.ParseInt(strings.TrimSuffix(filepath.Base(f), ".log"), 10, 64)
			if err != nil || base != next {
				errorf(t, "%s: segment base offset %d, want %d (the previous segment's end)", f, base, next)
			}
			if int64(len(d.RecordOffsets)) != d.Records {
				errorf(t, "%s: %d record lines for %d records in the batches", f, len(d.RecordOffsets), d.Records)
			}
			for _, o := range d.RecordOffsets {
				if o != next {
					fatalf(t, "%s: record offset %d, want %d (offsets must be dense and in order)", f, o, next)
				}
				next++
			}
			topicRecords[topic] += d.Records
		}
	}
	for topic, n := range want {
		if topicRecords[topic] != n {
			errorf(t, "DumpLogSegments counted %d records in %s, want %d", topicRecords[topic], topic, n)
		}
	}
	t.Logf("all %d batches in %d segments valid; records per topic: %v", batches, len(dumps), topicRecords)
	return counts
}

// checkTierfsListing compares `tierfs status --json` and `tierfs ls --json
// -r` with what a walk of the mount finds: every file listed, with its
// size, on a known tier. It returns the number of .log segments per tier.
func checkTierfsListing(t *testing.T, fs *Tierfs) map[string]int {
	t.Helper()
	var st StatusJSON
	if err := json.Unmarshal(fs.CLI(t, "status", "--json", fs.Mnt), &st); err != nil {
		fatalf(t, "tierfs status --json: %v", err)
	}
	tiers := map[string]bool{}
	var files int64
	for _, tr := range st.Tiers {
		tiers[tr.Name] = true
		files += tr.Files
		t.Logf("tier %s (%s): %d files, %d of %d bytes used", tr.Name, tr.Type, tr.Files, tr.UsedBytes, tr.CapacityBytes)
	}
	if !tiers["fast"] || !tiers["slow"] || len(st.Tiers) != 2 {
		errorf(t, "tierfs status lists tiers %v, want fast and slow", tiers)
	}
	if st.Moves.Failed > 0 || len(st.Moves.LastErrors) > 0 {
		errorf(t, "tierfs status: %d failed moves, last errors %q", st.Moves.Failed, st.Moves.LastErrors)
	}

	var ls []LsEntry
	if err := json.Unmarshal(fs.CLI(t, "ls", "--json", "-r", fs.Mnt), &ls); err != nil {
		fatalf(t, "tierfs ls --json -r: %v", err)
	}
	listed := map[string]LsEntry{}
	perTier := map[string]int{}
	for _, e := range ls {
		listed[e.Path] = e
		perTier[e.Tier]++
		if !tiers[e.Tier] {
			errorf(t, "tierfs ls: %s on unknown tier %q", e.Path, e.Tier)
		}
	}
	walked, segs := 0, 0
	segsPerTier := map[string]int{}
	err := filepath.WalkDir(fs.Mnt, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		walked++
		rel, _ := filepath.Rel(fs.Mnt, path)
		e, ok := listed[filepath.ToSlash(rel)]
		if !ok {
			errorf(t, "tierfs ls -r does not list %s", rel)
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Size() != e.Size {
			errorf(t, "tierfs ls: %s has size %d, stat says %d", rel, e.Size, fi.Size())
		}
		if strings.HasSuffix(rel, ".log") {
			segs++
			segsPerTier[e.Tier]++
		}
		return nil
	})
	if err != nil {
		fatalf(t, "walking the mount: %v", err)
	}
	if len(ls) != walked {
		errorf(t, "tierfs ls -r lists %d files, the mount has %d", len(ls), walked)
	}
	if files != int64(walked) {
		errorf(t, "tierfs status counts %d files, the mount has %d", files, walked)
	}
	t.Logf("tierfs ls -r: %d files per tier %v; %d segments per tier %v", len(ls), perTier, segs, segsPerTier)
	return segsPerTier
}

// checkCleanRecovery checks that the broker run that logged to logPath
// found the clean-shutdown marker and recovered no data segment.
func checkCleanRecovery(t *testing.T, logPath, logDir string) {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		fatalf(t, "%v", err)
	}
	const skip = "since clean shutdown file was found"
	found := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "Skipping recovery of") && strings.Contains(l, logDir) && strings.Contains(l, skip) {
			found = true
			t.Logf("restart: %s", l[strings.Index(l, "INFO")+5:])
		}
		// The KRaft metadata log is always replayed from its start;
		// a data partition is recovered only after an unclean stop.
		if strings.Contains(l, "Recovering unflushed segment") && !strings.Contains(l, "__cluster_metadata-0") {
			errorf(t, "log recovery after a clean shutdown: %s", l)
		}
		if strings.Contains(l, "unclean shutdown") || strings.Contains(l, "Found invalid") {
			errorf(t, "restart: %s", l)
		}
	}
	if !found {
		errorf(t, "%s: no %q for %s", logPath, "Skipping recovery of N logs ... "+skip, logDir)
	}
}

// TestKafkaProduceConsume runs a broker on tierfs, produces with
// acks=all until many segments rolled, consumes everything back and
// checks every record, checks every batch on disk with DumpLogSegments,
// restarts the broker cleanly and checks again. Twice: with room for
// everything on the fast tier, and with the fast tier capped at 24 MiB
// (and log.preallocate=true) so that segments and their mmapped indexes
// land on, spill to, or are moved by the policy engine to the slow tier
// while the broker has them open.
func TestKafkaProduceConsume(t *testing.T) {
	k := RequireKafka(t)
	t.Run("fast-tier-roomy", func(t *testing.T) {
		testProduceConsume(t, k, TierfsOptions{FastSize: "256m"}, BrokerOptions{}, false)
	})
	t.Run("fast-tier-full-spills", func(t *testing.T) {
		testProduceConsume(t, k, TierfsOptions{FastSize: "256m", FastCapacity: "24MiB"},
			BrokerOptions{Extra: map[string]string{"log.preallocate": "true"}}, true)
	})
	// The fast tier a pmem tier with a pool of 1 MiB slots (the
	// segment size): segments take slots and are written through a
	// mapping; with 24 MiB they also spill and move down, giving slots
	// back.
	t.Run("pmem-pool", func(t *testing.T) {
		testProduceConsume(t, k, TierfsOptions{FastSize: "256m", FastCapacity: "24MiB", FastType: "pmem",
			Extra: "\n[pmem]\npool_ratio = 0.5\nsegment_size = \"1MiB\"\n"}, BrokerOptions{}, true)
	})
}

func testProduceConsume(t *testing.T, k *Kafka, fo TierfsOptions, bo BrokerOptions, wantSlow bool) {
	testStart := time.Now()
	dir := WorkDir(t)
	fs := MountTierfs(t, dir, fo)
	logDir := filepath.Join(fs.Mnt, "kafka-logs")
	bo.SegmentBytes = 1 << 20
	b := NewBroker(t, k, dir, logDir, bo)
	b.Start(t)

	const (
		perfTopic   = "perf"
		verifyTopic = "verify"
		partitions  = 3
		perfRecords = 50000 // of 1 KiB: ~50 MiB, ~16 segments per partition
		recordSize  = 1024
		verifyN     = 10000 // keyed, ~1 KiB, content checked one by one
	)
	b.CreateTopic(t, dir, perfTopic, partitions)
	b.CreateTopic(t, dir, verifyTopic, partitions)

	start := time.Now()
	perf := b.ProducerPerf(t, dir, perfTopic, perfRecords, recordSize)
	t.Logf("ProducerPerformance on tierfs (%v): %s", time.Since(start).Round(time.Millisecond), perf.Line)

	start = time.Now()
	produceVerify(t, b, dir, verifyTopic, verifyN)
	t.Logf("ConsoleProducer: %d keyed records in %v", verifyN, time.Since(start).Round(time.Millisecond))

	// Every acknowledged record is in the log: the end offsets add up
	// (the producers are idempotent: no duplicates), and a consumer
	// gets them all back.
	if got := Sum(b.EndOffsets(t, dir, perfTopic)); got != perfRecords {
		fatalf(t, "%s end offsets add up to %d, want %d", perfTopic, got, perfRecords)
	}
	if got := Sum(b.EndOffsets(t, dir, verifyTopic)); got != verifyN {
		fatalf(t, "%s end offsets add up to %d, want %d", verifyTopic, got, verifyN)
	}
	start = time.Now()
	if got := b.ConsumerPerf(t, dir, perfTopic, perfRecords); got != perfRecords {
		fatalf(t, "ConsumerPerformance consumed %d records of %s, want %d", got, perfTopic, perfRecords)
	}
	t.Logf("ConsumerPerformance: %d records in %v", perfRecords, time.Since(start).Round(time.Millisecond))
	consumeVerify(t, b, dir, verifyTopic, verifyN)

	// Stop cleanly; then look at what is on the mount.
	b.Stop(t)
	b.CheckBrokerLog(t)
	if _, err := os.Stat(filepath.Join(logDir, ".kafka_cleanshutdown")); err != nil {
		errorf(t, "no clean-shutdown marker after the broker stopped: %v", err)
	}
	segs := checkDumps(t, k, dir, logDir, map[string]int64{perfTopic: perfRecords, verifyTopic: verifyN})
	for p := 0; p < partitions; p++ {
		// 50 MiB over 3 partitions in 1 MiB segments: ~16 each.
		name := fmt.Sprintf("%s-%d", perfTopic, p)
		if segs[name] < 8 {
			errorf(t, "%s has %d segments; want at least 8 (did segments roll?)", name, segs[name])
		}
	}
	t.Logf("segments per partition: %v", segs)
	perTier := checkTierfsListing(t, fs)
	if fo.FastType == "pmem" {
		if n := poolSegments(t, fs.Fast); n == 0 {
			errorf(t, "no segment on the pmem tier is a pool file (user.tierfs.size)")
		} else {
			t.Logf("%d segments on the pmem tier are pool files", n)
		}
	}
	if wantSlow && perTier["slow"] == 0 {
		errorf(t, "no segment on the slow tier, though the fast one holds only %s", fo.FastCapacity)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Restart: recovery must be clean and nothing lost.
	b.Start(t)
	checkCleanRecovery(t, b.Log, logDir)
	if got := Sum(b.EndOffsets(t, dir, perfTopic)); got != perfRecords {
		errorf(t, "after the restart %s end offsets add up to %d, want %d", perfTopic, got, perfRecords)
	}
	if got := b.ConsumerPerf(t, dir, perfTopic, perfRecords); got != perfRecords {
		errorf(t, "after the restart ConsumerPerformance consumed %d records of %s, want %d", got, perfTopic, perfRecords)
	}
	consumeVerify(t, b, dir, verifyTopic, verifyN)
	b.Stop(t)
	b.CheckBrokerLog(t)
	checkTierfsListing(t, fs)

	fs.Stop(t)
	if lines := fs.ErrorLines(); len(lines) > 0 {
		errorf(t, "tierfs logged errors:\n%s", strings.Join(lines, "\n"))
	}
	t.Logf("done in %v", time.Since(testStart).Round(time.Millisecond))
}

// poolSegments counts the .log files under root that are pmem pool files
// (they carry a logical size).
func poolSegments(t *testing.T, root string) int {
	t.Helper()
	n := 0
	filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(p, ".log") {
			return nil
		}
		if _, ok, err := pmem.SizeAt(p); err == nil && ok {
			n++
		}
		return nil
	})
	return n
}
