package integration

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/tierfs/tierfs/internal/supervisor"
)

// TestKafkaTierfsTakeover: with [mount] supervisor, the serving daemon is
// killed with SIGKILL ten times under a running broker while a producer
// writes with acks=all and the policy moves segments (half of the kills
// while a move is in flight). Each time the supervisor starts a new
// daemon on the live connection: the broker never sees its log dir fail
// and never stops, every acknowledged record is read back, and every
// segment is valid.
func TestKafkaTierfsTakeover(t *testing.T) {
	k := RequireKafka(t)
	testStart := time.Now()
	dir := WorkDir(t)
	fs := MountTierfs(t, dir, TierfsOptions{FastSize: "256m", FastCapacity: "24MiB",
		Extra: policyConfig(0.5, "200ms", "1s", `max_rate = "1MiB/s"`) + "\n[mount]\nsupervisor = true\n"})
	logDir := fs.Mnt + "/kafka-logs"
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

	var pauses []float64
	midMove := 0
	for i := 0; i < 10; i++ {
		before, err := supervisor.Query(fs.Mnt)
		if err != nil {
			fatalf(t, "the supervisor: %v", err)
		}
		if i%2 == 0 {
			err := waitFor(60*time.Second, "a policy move in flight", func() (bool, error) {
				st := fs.Status(t)
				return st.Policy != nil && len(st.Policy.InFlight) > 0, nil
			})
			if err == nil {
				midMove++
			} else {
				t.Logf("kill %d: no move in flight within 60 s; killing anyway", i+1)
			}
		}
		if err := syscall.Kill(before.Pid, syscall.SIGKILL); err != nil {
			fatalf(t, "kill -9 %d: %v", before.Pid, err)
		}
		var after supervisor.Status
		err = waitFor(60*time.Second, "a new daemon on the connection", func() (bool, error) {
			after, err = supervisor.Query(fs.Mnt)
			return err == nil && after.Takeovers == before.Takeovers+1 && after.Pid != before.Pid, err
		})
		if err != nil {
			fatalf(t, "kill %d: %v\n--- %s:\n%s", i+1, err, fs.Log, tail(fs.Log, 40))
		}
		pauses = append(pauses, after.Pauses[len(after.Pauses)-1])
		if !b.Running() {
			fatalf(t, "kill %d: the broker stopped\n--- %s:\n%s", i+1, b.Log, tail(b.Log, 40))
		}
		p.waitAcked(t, p.Acked()+300, 2*time.Minute)
	}
	if l := logLinesMatching(logDirFailedRE, b.Log); len(l) > 0 {
		fatalf(t, "the broker saw its log dir fail: %s", l[0])
	}
	slices.Sort(pauses)
	t.Logf("10 kill -9 of the daemon (%d with a move in flight) under the broker; pause from the death to the new daemon serving, ms: min %.1f, median %.1f, max %.1f %s",
		midMove, pauses[0], pauses[len(pauses)/2], pauses[len(pauses)-1], fmt.Sprint(pauses))

	recs := consumeAll(t, k, b.Bootstrap(), dir, verify, verifyN)
	checkNumbered(t, verify, recs, 0, verifyN)
	p.kill()
	p.mu.Lock()
	sendErrors := p.errors
	p.mu.Unlock()
	if sendErrors > 0 {
		errorf(t, "the producer saw %d send errors", sendErrors)
	}
	n := sumInts(offsets(t, k, dir, b.Bootstrap(), acked, "-1"))
	checkAcked(t, acked, consumeAll(t, k, b.Bootstrap(), dir, acked, n), p)
	b.Stop(t)
	checkNoProblems(t, nil, b.BrokerLogs...)
	checkSegments(t, k, dir, logDir, map[string]topicSpec{
		verify: {Records: verifyN, Dense: true},
		acked:  {Records: n, Dense: true},
	})
	checkBacking(t, fs)
	fs.Stop(t)
	checkTierfsErrors(t, fs)
	t.Logf("done in %v", time.Since(testStart).Round(time.Millisecond))
}
