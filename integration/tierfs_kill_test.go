package integration

import (
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// What a broker logs when its log dir fails under it: the I/O error
// reported to the LogDirFailureChannel, the dir taken offline, and with no
// dir left (or the metadata log's dir gone) the end of the process:
// "Shutdown broker because ...", or in combined mode, where the KRaft
// metadata log shares the dir, a fatal fault of the raft IO thread.
var (
	logDirFailedRE = regexp.MustCompile(`ERROR Error while .* in dir .* \(org\.apache\.kafka\.storage\.internals\.log\.LogDirFailureChannel\)|Stopping serving (replicas|logs) in dir .* because the log directory has failed|Shutdown broker because (all log dirs in .* have failed|the metadata log dir .* has failed)`)
	brokerEndsRE   = regexp.MustCompile(`Shutdown broker because|Encountered fatal fault`)
	// deadMountIORE is the I/O error of a read or write on a mount whose
	// daemon died.
	deadMountIORE = regexp.MustCompile(`IOException: (Software caused connection abort|Transport endpoint is not connected)`)
)

// TestKafkaTierfsKilled: tierfs is killed with SIGKILL under a running
// broker while a producer writes with acks=all and the policy moves
// segments. The broker must see its log dir fail (the mount answers
// ENOTCONN, as a failed disk answers EIO) and stop. Then the dead mount is
// detached, tierfs mounted again on the same tiers and the broker
// restarted: its log recovery is clean, every acknowledged record is
// there, every segment valid.
func TestKafkaTierfsKilled(t *testing.T) {
	k := RequireKafka(t)
	testStart := time.Now()
	dir := WorkDir(t)
	// Moves capped at 1 MiB/s: a segment takes a second to move,
	// so that tierfs dies in the middle of one.
	fs := MountTierfs(t, dir, TierfsOptions{FastSize: "256m", FastCapacity: "24MiB",
		Extra: policyConfig(0.5, "200ms", "1s", `max_rate = "1MiB/s"`)})
	logDir := filepath.Join(fs.Mnt, "kafka-logs")
	b := NewBroker(t, k, dir, logDir, BrokerOptions{})
	b.Start(t)

	const (
		verify  = "verify"
		acked   = "acked"
		verifyN = 15000
	)
	b.CreateTopic(t, dir, verify, 3)
	b.CreateTopic(t, dir, acked, 3)
	p := startAckedProducer(t, k, dir, b.Bootstrap(), acked, 4000)
	produceRange(t, k, b.Bootstrap(), dir, verify, 0, verifyN)
	p.waitAcked(t, 2000, 2*time.Minute)

	// Kill tierfs while the producer writes and a move is under way.
	var st StatusJSON
	err := waitFor(60*time.Second, "a policy move in flight", func() (bool, error) {
		st = fs.Status(t)
		return st.Policy != nil && len(st.Policy.InFlight) > 0, nil
	})
	if err != nil {
		fatalf(t, "%v: %+v", err, st.Policy)
	}
	fs.Kill(t)
	t.Logf("tierfs killed under the broker after %d acknowledged records, %d policy moves done, in flight: %s",
		p.Acked(), st.Moves.PolicyMoved(), compactJSON(st.Policy.InFlight[0]))

	// The broker finds its log dir failed and stops, as on a failed disk.
	code, exited := b.WaitExit(90 * time.Second)
	if !exited {
		fatalf(t, "the broker still runs %v after its log dir died\n--- %s:\n%s", 90*time.Second, b.Log, tail(b.Log, 40))
	}
	lines := logLinesMatching(logDirFailedRE, b.Log)
	if len(lines) == 0 {
		fatalf(t, "the broker exited (status %d) without saying that its log dir failed\n--- %s:\n%s", code, b.Log, tail(b.Log, 40))
	}
	t.Logf("the broker exited with status %d: %s", code, lines[0])
	if l := logLinesMatching(brokerEndsRE, b.Log); len(l) > 0 {
		t.Logf("and: %s", l[0])
	}
	if l := logLinesMatching(regexp.MustCompile(`KafkaStorageException|Transport endpoint is not connected`), b.Log); len(l) > 0 {
		t.Logf("first sign of the failure: %s", l[0])
	}
	acks := p.results()
	t.Logf("the producer had %d records acknowledged", len(acks))

	// Detach the dead mount, mount tierfs again on the same tiers,
	// restart the broker: it recovers its log (an unclean shutdown).
	fs.DetachDead(t)
	fs.Start(t)
	failedRun := b.Log
	b.Start(t)
	if l := logLinesMatching(regexp.MustCompile(`Recovering unflushed segment`), b.Log); len(l) == 0 {
		errorf(t, "no log recovery in %s after the log dir failed", b.Log)
	} else {
		t.Logf("log recovery: %d segments, e.g. %s", len(l), l[0])
	}

	recs := consumeAll(t, k, b.Bootstrap(), dir, verify, verifyN)
	checkNumbered(t, verify, recs, 0, verifyN)
	n := sumInts(offsets(t, k, dir, b.Bootstrap(), acked, "-1"))
	checkAcked(t, acked, consumeAll(t, k, b.Bootstrap(), dir, acked, n), p)

	b.Stop(t)
	var later []string
	for _, l := range b.BrokerLogs {
		if l != failedRun {
			later = append(later, l)
		}
	}
	checkNoProblems(t, nil, later...)
	checkSegments(t, k, dir, logDir, map[string]topicSpec{
		verify: {Records: verifyN, Dense: true},
		acked:  {Records: n, Dense: true},
	})
	st = fs.Status(t)
	checkPolicyHealthy(t, st)
	perTier := checkTierfsListing(t, fs)
	t.Logf("segments per tier after the remount: %v", perTier)
	// The move that tierfs died in left one copy, on one tier.
	checkBacking(t, fs)
	fs.Stop(t)
	checkTierfsErrors(t, fs)
	t.Logf("done in %v", time.Since(testStart).Round(time.Millisecond))
}
