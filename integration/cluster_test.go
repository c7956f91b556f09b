package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var isrRE = regexp.MustCompile(`Partition: (\d+)\s+Leader: (-?\d+)\s+Replicas: ([\d,]+)\s+Isr: ([\d,]*)`)

// partitionState is one partition in TopicCommand --describe.
type partitionState struct {
	Leader int
	ISR    []int
}

// describeTopic runs TopicCommand --describe and returns each partition's
// leader and ISR.
func describeTopic(t *testing.T, k *Kafka, dir, bootstrap, topic string) (map[int]partitionState, error) {
	t.Helper()
	out, errOut, err := k.Tool(dir, time.Minute, nil, "org.apache.kafka.tools.TopicCommand",
		"--bootstrap-server", bootstrap, "--describe", "--topic", topic)
	if err != nil {
		return nil, fmt.Errorf("%v: %s", err, lastLines(errOut, 5))
	}
	res := map[int]partitionState{}
	for _, m := range isrRE.FindAllStringSubmatch(string(out), -1) {
		p, _ := strconv.Atoi(m[1])
		leader, _ := strconv.Atoi(m[2])
		var isr []int
		for _, s := range strings.Split(m[4], ",") {
			if n, err := strconv.Atoi(s); err == nil {
				isr = append(isr, n)
			}
		}
		sort.Ints(isr)
		res[p] = partitionState{Leader: leader, ISR: isr}
	}
	return res, nil
}

// waitISR polls TopicCommand --describe until every partition of topic
// has exactly the replicas want in its ISR and a leader among them.
func waitISR(t *testing.T, k *Kafka, dir, bootstrap, topic string, partitions int, want []int, timeout time.Duration) {
	t.Helper()
	var last map[int]partitionState
	var lastErr error
	start := time.Now()
	err := waitFor(timeout, fmt.Sprintf("the ISR of %s to be %v", topic, want), func() (bool, error) {
		last, lastErr = describeTopic(t, k, dir, bootstrap, topic)
		if lastErr != nil || len(last) != partitions {
			return false, nil
		}
		for _, st := range last {
			if !slices.Equal(st.ISR, want) || !slices.Contains(want, st.Leader) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		fatalf(t, "%v: last %v %v", err, last, lastErr)
	}
	t.Logf("%s: ISR %v on all %d partitions after %v (%v)", topic, want, partitions, time.Since(start).Round(time.Millisecond), last)
}

// What the survivors of a three-node cluster log, normally, while a node
// is down: their fetchers and the raft client cannot reach it.
var peerDownREs = []*regexp.Regexp{
	regexp.MustCompile(`WARN \[ReplicaFetcher replicaId=\d+, leaderId=3, fetcherId=\d+\] Error in response for fetch request`),
	regexp.MustCompile(`WARN \[ReplicaFetcher replicaId=\d+, leaderId=3, fetcherId=\d+\] Error sending fetch request`),
	regexp.MustCompile(`(?i)WARN .*Connection to node 3 .*(could not be established|disconnected)`),
	regexp.MustCompile(`java\.io\.IOException: Connection to 3 was disconnected before the response was read`),
	// All three voters stopping at once: the last ones cannot finish the
	// raft client's graceful shutdown without a quorum.
	regexp.MustCompile(`ERROR \[RaftManager id=\d\] Graceful shutdown of RaftClient failed`),
	// A broker's heartbeat, or a controller's registration at start-up,
	// that reaches a controller in the middle of an election or a
	// failover (NotControllerException); the sender retries.
	regexp.MustCompile(`ERROR \[ControllerApis nodeId=\d\] Unexpected error handling request RequestHeader\(apiKey=(BROKER_HEARTBEAT|CONTROLLER_REGISTRATION),`),
}

// TestKafkaThreeBrokers: three KRaft nodes in combined mode, each on its
// own tierfs mount (two tiers of its own, the policy moving segments), a
// topic with replication factor 3 and min.insync.replicas=2. Node 3's
// tierfs is killed with SIGKILL: node 3 stops on its failed log dir, the
// cluster keeps serving (acks=all producing goes on with two in sync);
// then node 3's mount is detached, tierfs mounted again, node 3 restarted,
// and its replicas catch up until the ISR is whole again. Every record
// is consumed and checked, and every segment on every node.
func TestKafkaThreeBrokers(t *testing.T) {
	k := RequireKafka(t)
	testStart := time.Now()
	dir := WorkDir(t)
	var mounts []*Tierfs
	var logDirs []string
	for i := 1; i <= 3; i++ {
		fs := MountTierfs(t, filepath.Join(dir, fmt.Sprintf("node-%d", i)), TierfsOptions{FastSize: "256m",
			FastCapacity: "24MiB", Extra: policyConfig(0.5, "200ms", "1s")})
		mounts = append(mounts, fs)
		logDirs = append(logDirs, filepath.Join(fs.Mnt, "kafka-logs"))
	}
	// Three JVMs on two cores: the serial collector, and C1 only, start
	// them faster.
	c := NewCluster(t, k, dir, logDirs, BrokerOptions{Heap: "384m",
		JVM: []string{"-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"}, Extra: map[string]string{
			"broker.session.timeout.ms":    "6000",
			"broker.heartbeat.interval.ms": "1000",
			// The test ends by stopping all three nodes at once. A
			// broker's controlled shutdown waits (up to 5 minutes) for
			// the active controller to approve it; a node whose request
			// comes after the other two have shut their controllers
			// down has no quorum to ask, and was killed after 60 s
			// (status 137). With nowhere to move leadership to, a
			// controlled shutdown has nothing to do here: the brokers
			// still flush their logs and write the clean-shutdown mark.
			"controlled.shutdown.enable": "false",
		}})
	c.Start(t)

	const (
		topic      = "repl"
		partitions = 3
		n1         = 9000 // records before node 3 fails
		n2         = 18000
	)
	topicCmd(t, k, dir, c.Bootstrap(), "--create", "--topic", topic, "--partitions", strconv.Itoa(partitions),
		"--replication-factor", "3", "--config", "min.insync.replicas=2")
	produceRange(t, k, c.Bootstrap(), dir, topic, 0, n1)
	// A follower that fell behind while three JVMs shared two cores
	// leaves the ISR after replica.lag.time.max.ms (30 s) and comes back
	// once it has caught up: give it that, twice.
	waitISR(t, k, dir, c.Bootstrap(), topic, partitions, []int{1, 2, 3}, 120*time.Second)

	// Node 3's tierfs dies; node 3 stops on its failed log dir.
	victim, vfs := c.Brokers[2], mounts[2]
	vfs.Kill(t)
	code, exited := victim.WaitExit(30 * time.Second)
	if !exited {
		// Not normal: node 3 meets its dead log dir within a second
		// (a follower appends the leader's metadata records twice a
		// second). Say why before waiting longer: a connection the
		// kernel did not abort leaves requests waiting; a broker in a
		// JVM fault or a GC pause shows in its threads and in the
		// thread dump that SIGQUIT writes to its log.
		diag := fmt.Sprintf("after 30 s: killed tierfs %s; %s; broker %s",
			processReport(vfs.Pid()), fuseConnReport(vfs.Mnt), processReport(victim.Pid()))
		t.Log(diag)
		if p, err := os.FindProcess(victim.Pid()); err == nil {
			_ = p.Signal(syscall.SIGQUIT)
		}
		if code, exited = victim.WaitExit(60 * time.Second); !exited {
			fatalf(t, "node 3 still runs 90 s after its log dir died (%s)\n--- %s:\n%s", diag, victim.Log, tail(victim.Log, 40))
		}
	}
	// Which thread meets the dead mount first is a matter of timing: a
	// log append fails the log dir; the KRaft IO thread reading the
	// metadata log ends the process with a fatal fault on the same I/O
	// error (ECONNABORTED, ENOTCONN).
	died := logLinesMatching(logDirFailedRE, victim.Log)
	if len(died) == 0 && len(logLinesMatching(deadMountIORE, victim.Log)) > 0 {
		died = logLinesMatching(brokerEndsRE, victim.Log)
	}
	if l := died; len(l) == 0 {
		errorf(t, "node 3 exited (status %d) without saying that its log dir failed\n--- %s:\n%s", code, victim.Log, tail(victim.Log, 30))
	} else {
		t.Logf("node 3 exited with status %d: %s", code, l[0])
	}
	failedRun := victim.Log

	// The cluster keeps serving: acks=all with two replicas in sync.
	start := time.Now()
	produceRange(t, k, c.Bootstrap(1, 2), dir, topic, n1, n2)
	t.Logf("produced with node 3 down in %v", time.Since(start).Round(time.Millisecond))
	waitISR(t, k, dir, c.Bootstrap(1, 2), topic, partitions, []int{1, 2}, 60*time.Second)

	// Node 3 comes back on its remounted tiers and catches up.
	vfs.DetachDead(t)
	vfs.Start(t)
	victim.Start(t)
	if l := logLinesMatching(regexp.MustCompile(`Recovering unflushed segment`), victim.Log); len(l) > 0 {
		t.Logf("node 3 log recovery: %d segments", len(l))
	}
	waitISR(t, k, dir, c.Bootstrap(), topic, partitions, []int{1, 2, 3}, 120*time.Second)

	consumeVerifyAt(t, k, c.Bootstrap(), dir, topic, n2)
	ends := offsets(t, k, dir, c.Bootstrap(), topic, "-1")
	if got := sumInts(ends); got != n2 {
		errorf(t, "%s end offsets add up to %d, want %d", topic, got, n2)
	}

	c.Stop(t)
	for i, b := range c.Brokers {
		var logs []string
		for _, l := range b.BrokerLogs {
			if l != failedRun {
				logs = append(logs, l)
			}
		}
		checkNoProblems(t, peerDownREs, logs...)
		counts := checkSegments(t, k, dir, b.LogDir, map[string]topicSpec{topic: {Records: n2, Dense: true}})
		t.Logf("node %d: segments of %s: %d, %d, %d", b.NodeID, topic, counts[topic+"-0"], counts[topic+"-1"], counts[topic+"-2"])
		st := mounts[i].Status(t)
		checkPolicyHealthy(t, st)
		checkTierfsListing(t, mounts[i])
		checkBacking(t, mounts[i])
		t.Logf("node %d: policy: %d moves, %d bytes", b.NodeID, st.Moves.PolicyMoved(), st.Moves.PolicyBytes())
	}
	for _, fs := range mounts {
		fs.Stop(t)
		checkTierfsErrors(t, fs)
	}
	t.Logf("done in %v", time.Since(testStart).Round(time.Millisecond))
}
