package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestKafkaPolicyMoves: a broker produces into a small fast tier (24
// MiB, migrate_threshold 0.5) while the policy (a plan every 200 ms,
// min_age 1 s) moves sealed segments down to the slow tier; once
// production stops the fast tier settles under threshold·capacity. Then
// a consumer reads the topic from the beginning, the older segments from
// the slow tier (their pages evicted, as for data written long ago); the
// operator makes room on the fast tier (migrate_threshold 0.9, `tierfs
// reload`) while it reads, and the policy promotes the segments being
// read, and those ahead of them, back to the fast tier first. Every
// record is checked, and every segment.
func TestKafkaPolicyMoves(t *testing.T) {
	k := RequireKafka(t)
	testStart := time.Now()
	dir := WorkDir(t)
	fs := MountTierfs(t, dir, TierfsOptions{FastSize: "256m", FastCapacity: "24MiB",
		Extra: policyConfig(0.5, "200ms", "1s")})
	logDir := filepath.Join(fs.Mnt, "kafka-logs")
	b := NewBroker(t, k, dir, logDir, BrokerOptions{})
	b.Start(t)

	const (
		topic   = "verify"
		n       = 24000 // of 1 KiB over 3 partitions: ~8 segments each
		reader  = "slow-reader"
		readBps = 5 << 20 // the reader's quota: ~5 s for the topic
	)
	b.CreateTopic(t, dir, topic, 3)
	b.K.MustTool(t, dir, 2*time.Minute, nil, "kafka.admin.ConfigCommand",
		"--bootstrap-server", b.Bootstrap(), "--alter", "--entity-type", "clients", "--entity-name", reader,
		"--add-config", "consumer_byte_rate="+strconv.Itoa(readBps))

	// 1. Produce 24 MiB into a fast tier whose threshold is 12 MiB.
	produceRange(t, k, b.Bootstrap(), dir, topic, 0, n)
	st := fs.Status(t)
	used, capacity := tierUsage(st, "fast")
	t.Logf("production done: fast tier %d of %d bytes used; policy: %d moves done, %d queued, %d in flight",
		used, capacity, st.Moves.PolicyMoved(), len(st.Policy.Queued), len(st.Policy.InFlight))

	st = waitPolicySettled(t, fs, 0.5, 60*time.Second)
	used, _ = tierUsage(st, "fast")
	t.Logf("settled: fast tier %d of %d bytes used (threshold 0.5: %d); policy: %d moves, %d bytes",
		used, capacity, capacity/2, st.Moves.PolicyMoved(), st.Moves.PolicyBytes())
	checkPolicyHealthy(t, st)
	if st.Moves.PolicyMoved() == 0 {
		fatalf(t, "the policy moved nothing")
	}
	ls := fs.Ls(t)
	onSlow := segmentsOn(ls, topic, "slow")
	t.Logf("%d segments of %s on the slow tier, %d on the fast one", len(onSlow), topic, len(segmentsOn(ls, topic, "fast")))
	if len(onSlow) == 0 {
		fatalf(t, "no segment of %s on the slow tier", topic)
	}
	demoted := movedLines(fs, "demote:")
	for _, p := range onSlow {
		if _, ok := demoted[p]; !ok {
			errorf(t, "%s is on the slow tier but the policy did not demote it", p)
		}
	}

	// 2. A consumer reads from the beginning; its reads reach tierfs.
	var all []string
	for _, p := range append(onSlow, segmentsOn(ls, topic, "fast")...) {
		all = append(all, filepath.Join(fs.Mnt, p))
	}
	evictPageCache(t, all)
	promotedBefore := movedLines(fs, "promote:")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd, err := k.ToolCommand(ctx, dir, "org.apache.kafka.tools.consumer.ConsoleConsumer",
		"--bootstrap-server", b.Bootstrap(), "--topic", topic, "--from-beginning",
		"--max-messages", strconv.Itoa(n), "--timeout-ms", "60000",
		"--consumer-property", "client.id="+reader,
		"--consumer-property", "fetch.max.bytes=262144",
		"--consumer-property", "max.partition.fetch.bytes=262144",
		"--property", "print.key=true", "--property", "print.partition=true",
		"--property", "print.offset=true", "--property", "key.separator=\t")
	if err != nil {
		fatalf(t, "%v", err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		fatalf(t, "%v", err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fatalf(t, "%v", err)
	}
	first := make(chan struct{})
	var out bytes.Buffer
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			if out.Len() == 0 {
				close(first)
			}
			out.Write(sc.Bytes())
			out.WriteByte('\n')
		}
	}()
	select {
	case <-first:
	case <-readDone:
	}
	// 3. Room on the fast tier while the consumer reads.
	fs.Reconfigure(t, policyConfig(0.9, "200ms", "1s"))
	<-readDone
	err = cmd.Wait()
	_ = os.WriteFile(filepath.Join(dir, "tools", "slow-reader.err"), stderr.Bytes(), 0o644)
	if err != nil {
		fatalf(t, "ConsoleConsumer: %v\n%s", err, lastLines(stderr.Bytes(), 30))
	}
	t.Logf("the throttled consumer read %d bytes in %v", out.Len(), time.Since(start).Round(time.Millisecond))
	recs, err := parseRecords(out.Bytes())
	if err != nil {
		fatalf(t, "%v", err)
	}
	checkNumbered(t, topic, recs, 0, n)

	// The segments read on the slow tier went up first.
	var readUp []string
	for p, reason := range movedLines(fs, "promote: read") {
		if _, before := promotedBefore[p]; !before && strings.HasSuffix(p, ".log") && strings.Contains(p, "/"+topic+"-") {
			readUp = append(readUp, fmt.Sprintf("%s (%s)", p, reason))
		}
	}
	if len(readUp) == 0 {
		errorf(t, "no segment of %s was promoted for the reader; promotions: %v", topic, movedLines(fs, "promote:"))
	} else {
		t.Logf("%d segments promoted for the reader, e.g. %s", len(readUp), readUp[0])
	}
	ls = fs.Ls(t)
	back := 0
	for _, p := range onSlow {
		if ls[p].Tier == "fast" {
			back++
		}
	}
	t.Logf("%d of the %d segments that were on the slow tier are on the fast tier again", back, len(onSlow))
	if back == 0 {
		errorf(t, "no segment of %s came back to the fast tier", topic)
	}

	b.Stop(t)
	b.CheckBrokerLog(t)
	checkSegments(t, k, dir, logDir, map[string]topicSpec{topic: {Records: n, Dense: true}})
	st = fs.Status(t)
	checkPolicyHealthy(t, st)
	perTier := checkTierfsListing(t, fs)
	checkBacking(t, fs)
	t.Logf("segments per tier: %v; policy: %d moves, %d bytes", perTier, st.Moves.PolicyMoved(), st.Moves.PolicyBytes())
	fs.Stop(t)
	checkTierfsErrors(t, fs)
	t.Logf("done in %v", time.Since(testStart).Round(time.Millisecond))
}
