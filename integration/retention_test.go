package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// compValue is the value of key k in round r of the compacted topic:
// 1000 bytes that say which key and round they belong to.
func compValue(k, r int) string {
	h := sha256.Sum256([]byte(fmt.Sprintf("%d/%d", k, r)))
	s := fmt.Sprintf("k%05d-r%04d-", k, r) + strings.Repeat(hex.EncodeToString(h[:]), 16)
	return s[:1000]
}

// produceRounds writes rounds from..to-1 of keys 0..keys-1 to the
// compacted topic (acks=all).
func produceRounds(t *testing.T, k *Kafka, bootstrap, dir, topic string, keys, from, to int) {
	t.Helper()
	var in bytes.Buffer
	for r := from; r < to; r++ {
		for key := 0; key < keys; key++ {
			fmt.Fprintf(&in, "%d\t%s\n", key, compValue(key, r))
		}
	}
	consoleProduce(t, k, bootstrap, dir, topic, &in)
}

// partitionFiles lists the names in a partition directory of the mount
// (none if it is gone).
func partitionFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		fatalf(t, "%v", err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// segmentBases returns the base offsets of the .log segments among names.
func segmentBases(names []string) []int64 {
	var out []int64
	for _, n := range names {
		if s, ok := strings.CutSuffix(n, ".log"); ok {
			if o, err := strconv.ParseInt(s, 10, 64); err == nil {
				out = append(out, o)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// TestKafkaRetentionAndDeletion: what Kafka deletes, on a small fast tier
// with the policy moving segments down:
//   - retention (retention.bytes) renames the oldest segments, open and
//     with their indexes mapped, to .deleted and unlinks them a second
//     later; they are segments the policy moved to the slow tier;
//   - topic deletion renames each partition directory, files open and
//     spread over both tiers, to "…-delete" and removes it: no trace is
//     left on either tier's backing directory;
//   - a compacted topic goes through several cleaner passes (.cleaned,
//     .swap, the old segments to .deleted), one of them over a segment on
//     the slow tier, and the latest value of every key is intact.
func TestKafkaRetentionAndDeletion(t *testing.T) {
	k := RequireKafka(t)
	testStart := time.Now()
	dir := WorkDir(t)
	tfs := MountTierfs(t, dir, TierfsOptions{FastSize: "256m", FastCapacity: "24MiB",
		Extra: policyConfig(0.5, "200ms", "1s")})
	logDir := filepath.Join(tfs.Mnt, "kafka-logs")
	b := NewBroker(t, k, dir, logDir, BrokerOptions{Extra: map[string]string{
		"log.initial.task.delay.ms":       "500",
		"log.retention.check.interval.ms": "500",
		"log.segment.delete.delay.ms":     "1000", // file.delete.delay.ms
		"log.cleaner.backoff.ms":          "300",
		"log.cleaner.dedupe.buffer.size":  strconv.Itoa(32 << 20),
	}})
	b.Start(t)

	const (
		ret     = "ret"
		retN    = 10000 // 1 partition of ~10 segments
		doomed  = "doomed"
		doomedN = 6000 // 3 partitions of 2 or 3 segments
		comp    = "comp"
		keys    = 200 // 200 KiB a round: 5 rounds a segment
	)
	b.CreateTopic(t, dir, ret, 1)
	b.CreateTopic(t, dir, doomed, 3)
	b.CreateTopic(t, dir, comp, 1, "cleanup.policy=compact", "segment.bytes=1048576",
		"min.cleanable.dirty.ratio=0.01", "delete.retention.ms=1000")

	produceRange(t, k, b.Bootstrap(), dir, ret, 0, retN)
	produceRange(t, k, b.Bootstrap(), dir, doomed, 0, doomedN)
	produceRounds(t, k, b.Bootstrap(), dir, comp, keys, 0, 10)
	st := waitPolicySettled(t, tfs, 0.5, 60*time.Second)
	checkPolicyHealthy(t, st)
	ls := tfs.Ls(t)
	retSlow := segmentsOn(ls, ret, "slow")
	t.Logf("policy: %d moves; %s segments on the slow tier: %d, on the fast one: %d",
		st.Moves.PolicyMoved(), ret, len(retSlow), len(segmentsOn(ls, ret, "fast")))
	if len(retSlow) == 0 {
		fatalf(t, "the policy moved no segment of %s to the slow tier", ret)
	}

	// 1. Retention: keep about 3 MiB of ret.
	retDir := filepath.Join(logDir, ret+"-0")
	basesBefore := segmentBases(partitionFiles(t, retDir))
	b.K.MustTool(t, dir, 2*time.Minute, nil, "kafka.admin.ConfigCommand",
		"--bootstrap-server", b.Bootstrap(), "--alter", "--entity-type", "topics", "--entity-name", ret,
		"--add-config", "retention.bytes=3145728")
	sawDeleted := map[string]string{} // .deleted name → tier, as seen by tierfs ls
	err := waitFor(60*time.Second, "retention to delete the oldest segments of "+ret, func() (bool, error) {
		names := partitionFiles(t, retDir)
		var deleted []string
		for _, n := range names {
			if strings.HasSuffix(n, ".deleted") {
				deleted = append(deleted, n)
			}
		}
		if len(deleted) > 0 && len(sawDeleted) == 0 {
			// Where the renamed files are: once.
			ls := tfs.Ls(t)
			for _, n := range deleted {
				if e, ok := ls[filepath.Join("kafka-logs", ret+"-0", n)]; ok {
					sawDeleted[n] = e.Tier
				}
			}
		}
		bases := segmentBases(names)
		return len(deleted) == 0 && len(bases) > 0 && bases[0] > 0 && len(bases) <= 5, nil
	})
	if err != nil {
		fatalf(t, "%v: %s-0 holds %v", err, ret, partitionFiles(t, retDir))
	}
	basesAfter := segmentBases(partitionFiles(t, retDir))
	logStart := sumInts(offsets(t, k, dir, b.Bootstrap(), ret, "-2"))
	t.Logf("retention: %s-0 went from %d segments to %d, log start offset %d; .deleted files seen on the way: %v",
		ret, len(basesBefore), len(basesAfter), logStart, sawDeleted)
	if logStart != basesAfter[0] {
		errorf(t, "log start offset %d, first segment %d", logStart, basesAfter[0])
	}
	var deletedSlow []string
	for _, p := range retSlow {
		base, _ := strconv.ParseInt(strings.TrimSuffix(filepath.Base(p), ".log"), 10, 64)
		if base < basesAfter[0] {
			deletedSlow = append(deletedSlow, p)
		}
	}
	if len(deletedSlow) == 0 {
		errorf(t, "retention deleted no segment the policy had moved to the slow tier (slow: %v, first left: %d)", retSlow, basesAfter[0])
	}
	// Kafka renamed each segment to .deleted, then unlinked that name.
	delLines := logLinesMatching(regexp.MustCompile(`INFO Deleted log .*/`+ret+`-0/\d{20}\.log\.deleted\.`), b.Log)
	t.Logf("retention deleted %d segments, %d of them on the slow tier; the broker logged %d 'Deleted log …/%s-0/N.log.deleted' lines",
		len(basesBefore)-len(basesAfter), len(deletedSlow), len(delLines), ret)
	if len(delLines) != len(basesBefore)-len(basesAfter) {
		errorf(t, "%d segments deleted, %d 'Deleted log …log.deleted' lines", len(basesBefore)-len(basesAfter), len(delLines))
	}
	// Nothing older than the log start is left on either tier.
	for _, root := range []string{tfs.FastData, tfs.SlowData} {
		for _, n := range partitionFiles(t, filepath.Join(root, "kafka-logs", ret+"-0")) {
			if base, err := strconv.ParseInt(strings.SplitN(n, ".", 2)[0], 10, 64); err == nil && base < basesAfter[0] {
				errorf(t, "%s is still in %s after retention deleted it", n, root)
			}
		}
	}
	recs := consumeAll(t, k, b.Bootstrap(), dir, ret, int64(retN)-logStart)
	checkNumbered(t, ret, recs, int(logStart), retN)

	// 2. Topic deletion, the partitions spread over both tiers.
	tfs.CLI(t, "migrate", "--to", "slow", "--wait",
		filepath.Join(logDir, doomed+"-0", "00000000000000000000.log"),
		filepath.Join(logDir, doomed+"-1", "00000000000000000000.index"),
		filepath.Join(logDir, doomed+"-2"))
	ls = tfs.Ls(t)
	tiers := map[string]int{}
	for p, e := range ls {
		if strings.HasPrefix(p, "kafka-logs/"+doomed+"-") {
			tiers[e.Tier]++
		}
	}
	t.Logf("%s before deletion: files per tier %v", doomed, tiers)
	if tiers["fast"] == 0 || tiers["slow"] == 0 {
		fatalf(t, "%s is not spread over both tiers: %v", doomed, tiers)
	}
	consumeVerifyAt(t, k, b.Bootstrap(), dir, doomed, doomedN)
	topicCmd(t, k, dir, b.Bootstrap(), "--delete", "--topic", doomed)
	err = waitFor(60*time.Second, "the broker to remove "+doomed, func() (bool, error) {
		ents, err := os.ReadDir(logDir)
		if err != nil {
			return false, err
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), doomed+"-") {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		fatalf(t, "%v", err)
	}
	renamed := logLinesMatching(regexp.MustCompile(`Log for partition `+doomed+`-\d is renamed to .*-delete`), b.Log)
	removed := logLinesMatching(regexp.MustCompile(`Deleted log for partition `+doomed+`-\d`), b.Log)
	t.Logf("topic deletion: %d partition directories renamed to …-delete, %d removed", len(renamed), len(removed))
	if len(removed) != 3 {
		errorf(t, "the broker logged %d 'Deleted log for partition %s-N' lines, want 3: %v", len(removed), doomed, removed)
	}
	if tr := tracesOf(t, doomed, tfs.Fast, tfs.Slow); len(tr) > 0 {
		errorf(t, "topic %s deleted, but its traces are on the tiers:\n%s", doomed, strings.Join(tr, "\n"))
	}

	// 3. Compaction: three cleaner passes, one over a segment moved to
	// the slow tier.
	compDir := filepath.Join(logDir, comp+"-0")
	cleanedRE := regexp.MustCompile(`cleaned log ` + comp + `-0 \(dirty section`)
	passes := waitLogLines(t, b, cleanedRE, 1, 60*time.Second, "a cleaner pass over "+comp)
	t.Logf("cleaner pass 1: %s", passes[0])
	first := filepath.Join(compDir, fmt.Sprintf("%020d.log", segmentBases(partitionFiles(t, compDir))[0]))
	tfs.CLI(t, "migrate", "--to", "slow", "--wait", first)
	t.Logf("moved %s to the slow tier", first)
	produceRounds(t, k, b.Bootstrap(), dir, comp, keys, 10, 20)
	passes = waitLogLines(t, b, cleanedRE, 2, 60*time.Second, "a second cleaner pass over "+comp)
	t.Logf("cleaner pass 2: %s", passes[1])
	produceRounds(t, k, b.Bootstrap(), dir, comp, keys, 20, 30)
	passes = waitLogLines(t, b, cleanedRE, 3, 60*time.Second, "a third cleaner pass over "+comp)
	t.Logf("cleaner pass 3: %s", passes[2])
	if _, ok := movedLines(tfs, "manual")[strings.TrimPrefix(first, tfs.Mnt+"/")]; !ok {
		errorf(t, "no move of %s in the tierfs log", first)
	}
	// What the cleaner left: the latest value of every key.
	end := sumInts(offsets(t, k, dir, b.Bootstrap(), comp, "-1"))
	recs = consumeUntilIdle(t, k, b.Bootstrap(), dir, comp, end)
	checkCompacted(t, comp, recs, keys, 30, end)

	b.Stop(t)
	b.CheckBrokerLog(t)
	checkSegments(t, k, dir, logDir, map[string]topicSpec{
		ret:  {Records: int64(retN) - logStart, Dense: true, Start: map[int]int64{0: logStart}},
		comp: {Records: int64(len(recs))},
	})
	st = tfs.Status(t)
	checkPolicyHealthy(t, st)
	perTier := checkTierfsListing(t, tfs)
	checkBacking(t, tfs)
	t.Logf("segments per tier: %v; policy: %d moves, %d bytes", perTier, st.Moves.PolicyMoved(), st.Moves.PolicyBytes())
	tfs.Stop(t)
	checkTierfsErrors(t, tfs)
	t.Logf("done in %v", time.Since(testStart).Round(time.Millisecond))
}

// consumeVerifyAt is consumeVerify through a bootstrap string.
func consumeVerifyAt(t *testing.T, k *Kafka, bootstrap, dir, topic string, n int) {
	t.Helper()
	checkNumbered(t, topic, consumeAll(t, k, bootstrap, dir, topic, int64(n)), 0, n)
}

// consumeUntilIdle reads partition 0 of topic from the beginning until no
// record came for 2 s or max records were read.
func consumeUntilIdle(t *testing.T, k *Kafka, bootstrap, dir, topic string, max int64) []Record {
	t.Helper()
	// Partition 0 assigned, no group to join: the first poll is quick.
	out, errOut, err := k.Tool(dir, 3*time.Minute, nil, "org.apache.kafka.tools.consumer.ConsoleConsumer",
		"--bootstrap-server", bootstrap, "--topic", topic, "--partition", "0", "--offset", "earliest",
		"--max-messages", strconv.FormatInt(max, 10), "--timeout-ms", "2000",
		"--property", "print.key=true", "--property", "print.partition=true",
		"--property", "print.offset=true", "--property", "key.separator=\t")
	if err != nil {
		fatalf(t, "%v\n%s", err, lastLines(errOut, 20))
	}
	recs, err := parseRecords(out)
	if err != nil {
		fatalf(t, "ConsoleConsumer output: %v", err)
	}
	return recs
}

// checkCompacted checks a compacted partition's records: offsets
// increase; every value is one that was produced for its key, the rounds
// of a key increase, and each key's last value is its last round's; the
// cleaner removed something.
func checkCompacted(t *testing.T, topic string, recs []Record, keys, rounds int, end int64) {
	t.Helper()
	last := make([]int, keys)
	for i := range last {
		last[i] = -1
	}
	prev := int64(-1)
	bad := 0
	for _, r := range recs {
		key, err := strconv.Atoi(r.Key)
		var round int
		ok := err == nil && key >= 0 && key < keys && len(r.Value) == 1000
		if ok {
			_, err := fmt.Sscanf(r.Value[:13], "k%05d-r%04d-", new(int), &round)
			ok = err == nil && round >= 0 && round < rounds && r.Value == compValue(key, round) && round > last[key]
		}
		if !ok || r.Offset <= prev {
			bad++
			if bad <= 5 {
				errorf(t, "%s: bad record at offset %d (previous %d): key %q value %.40q", topic, r.Offset, prev, r.Key, r.Value)
			}
			continue
		}
		prev = r.Offset
		last[key] = round
	}
	for key, r := range last {
		if r != rounds-1 {
			bad++
			if bad <= 10 {
				errorf(t, "%s: key %d: latest value is of round %d, want %d", topic, key, r, rounds-1)
			}
		}
	}
	produced := int64(keys * rounds)
	if bad > 0 {
		fatalf(t, "%s: %d bad records or keys among %d", topic, bad, len(recs))
	}
	if end != produced {
		errorf(t, "%s: end offset %d, want %d", topic, end, produced)
	}
	if int64(len(recs)) >= produced {
		errorf(t, "%s: %d records of %d produced: the cleaner removed nothing", topic, len(recs), produced)
	}
	t.Logf("%s: %d records of %d produced left after compaction; the latest value of each of the %d keys intact",
		topic, len(recs), produced, keys)
}
