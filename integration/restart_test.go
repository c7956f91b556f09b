package integration

import (
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// After a kill -9 with log.preallocate=true, the active segment ends in
// the zeros of its preallocated tail (or in a batch the kill tore: the
// kernel stops copying a write(2) at a page when a fatal signal is
// pending, on any filesystem): Kafka's recovery reads up to the first
// batch that is not one and truncates there, and says so in one of these
// lines ("Corruption found in segment N, truncating to offset M" whenever
// it truncated anything). Normal, on any disk: the test checks
// independently that every acknowledged record is there.
var preallocTailRE = regexp.MustCompile(`WARN .*(Found invalid messages in log segment .*\.log at byte offset \d+|Truncated \d+ invalid bytes at the end of segment .*\.log during recovery|Corruption found in segment \d+, truncating to offset \d+)`)

// TestKafkaBrokerRestarts: a broker on tierfs (small fast tier, the
// policy moving sealed segments down, log.preallocate=true) restarted
// cleanly (recovery skipped, nothing changed), then killed with SIGKILL
// while a producer (acks=all) writes: log recovery runs, is clean, and
// every acknowledged record is there.
func TestKafkaBrokerRestarts(t *testing.T) {
	k := RequireKafka(t)
	testStart := time.Now()
	dir := WorkDir(t)
	fs := MountTierfs(t, dir, TierfsOptions{FastSize: "256m", FastCapacity: "24MiB",
		Extra: policyConfig(0.5, "200ms", "1s")})
	logDir := filepath.Join(fs.Mnt, "kafka-logs")
	b := NewBroker(t, k, dir, logDir, BrokerOptions{Extra: map[string]string{"log.preallocate": "true"}})
	b.Start(t)

	const (
		verify  = "verify"
		acked   = "acked"
		verifyN = 15000 // of 1 KiB over 3 partitions: ~5 segments each
	)
	b.CreateTopic(t, dir, verify, 3)
	b.CreateTopic(t, dir, acked, 3)
	produceRange(t, k, b.Bootstrap(), dir, verify, 0, verifyN)
	ends := offsets(t, k, dir, b.Bootstrap(), verify, "-1")
	if got := sumInts(ends); got != verifyN {
		fatalf(t, "%s end offsets add up to %d, want %d", verify, got, verifyN)
	}

	// 1. Clean restart: the broker finds its clean-shutdown marker and
	// recovers nothing; the offsets are unchanged.
	b.Stop(t)
	b.Start(t)
	checkCleanRecovery(t, b.Log, logDir)
	if again := offsets(t, k, dir, b.Bootstrap(), verify, "-1"); !equalOffsets(ends, again) {
		fatalf(t, "after a clean restart the end offsets of %s are %v, were %v", verify, again, ends)
	}

	// 2. kill -9 while a producer writes with acks=all.
	p := startAckedProducer(t, k, dir, b.Bootstrap(), acked, 4000)
	p.waitAcked(t, 6000, 2*time.Minute)
	b.Kill(t)
	killedAt := p.Acked()
	t.Logf("broker killed with SIGKILL after %d acknowledged records", killedAt)
	b.Start(t)
	// The producer carries on against the restarted broker.
	p.waitAcked(t, killedAt+2000, 2*time.Minute)
	acks := p.results()

	recovered := logLinesMatching(regexp.MustCompile(`Recovering unflushed segment|recover(ed|ing) .* after unclean shutdown|unclean shutdown`), b.Log)
	if len(recovered) == 0 {
		errorf(t, "no log recovery after the kill -9 in %s", b.Log)
	}
	for i, l := range recovered {
		if i < 6 {
			t.Logf("recovery: %s", l)
		}
	}
	if tails := logLinesMatching(preallocTailRE, b.Log); len(tails) > 0 {
		t.Logf("%d lines about preallocated tails truncated, e.g. %s", len(tails), tails[0])
	}

	recs := consumeAll(t, k, b.Bootstrap(), dir, verify, verifyN)
	checkNumbered(t, verify, recs, 0, verifyN)
	ackedEnds := offsets(t, k, dir, b.Bootstrap(), acked, "-1")
	n := sumInts(ackedEnds)
	if n < int64(len(acks)) {
		fatalf(t, "%s holds %d records; %d were acknowledged", acked, n, len(acks))
	}
	checkAcked(t, acked, consumeAll(t, k, b.Bootstrap(), dir, acked, n), p)

	b.Stop(t)
	checkNoProblems(t, []*regexp.Regexp{preallocTailRE}, b.BrokerLogs...)
	checkSegments(t, k, dir, logDir, map[string]topicSpec{
		verify: {Records: verifyN, Dense: true},
		acked:  {Records: n, Dense: true},
	})
	st := fs.Status(t)
	checkPolicyHealthy(t, st)
	if st.Policy == nil || st.Moves.PolicyMoved() == 0 {
		errorf(t, "the policy moved nothing: %+v", st.Policy)
	}
	perTier := checkTierfsListing(t, fs)
	checkBacking(t, fs)
	t.Logf("segments per tier: %v; policy: %d moves, %d bytes", perTier, st.Moves.PolicyMoved(), st.Moves.PolicyBytes())
	fs.Stop(t)
	checkTierfsErrors(t, fs)
	t.Logf("done in %v", time.Since(testStart).Round(time.Millisecond))
}

func equalOffsets(a, b map[int]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
