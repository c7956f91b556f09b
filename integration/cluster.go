package integration

// A KRaft cluster of several nodes, each in combined mode (broker and
// controller) with its own log dir, on its own tierfs mount.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Cluster is a set of combined-mode nodes that form one KRaft quorum (a
// static voter set: controller.quorum.voters).
type Cluster struct {
	K       *Kafka
	Brokers []*Broker
	ID      string
}

// Bootstrap is bootstrap.servers for the whole cluster, or for the
// brokers of the given node ids only.
func (c *Cluster) Bootstrap(nodes ...int) string {
	var s []string
	for _, b := range c.Brokers {
		if len(nodes) == 0 || containsInt(nodes, b.NodeID) {
			s = append(s, b.Bootstrap())
		}
	}
	return strings.Join(s, ",")
}

func containsInt(l []int, x int) bool {
	for _, y := range l {
		if y == x {
			return true
		}
	}
	return false
}

// NewCluster writes server.properties for len(logDirs) nodes (ids 1..n,
// each in dir/broker-N, with log.dirs logDirs[i-1]), formats each node's
// storage and registers their stop in t.Cleanup. The internal topics are
// replicated n times (at most 3), min.insync.replicas 2. Start them with
// Start.
func NewCluster(t *testing.T, k *Kafka, dir string, logDirs []string, o BrokerOptions) *Cluster {
	t.Helper()
	if o.SegmentBytes == 0 {
		o.SegmentBytes = 1 << 20
	}
	if o.Heap == "" {
		o.Heap = "384m"
	}
	n := len(logDirs)
	c := &Cluster{K: k, ID: NewClusterID()}
	used := map[int]bool{}
	port := func() int {
		for {
			p := FreePort(t)
			if !used[p] {
				used[p] = true
				return p
			}
		}
	}
	var voters []string
	for i := 1; i <= n; i++ {
		b := &Broker{
			K: k, NodeID: i, Port: port(), CtrlPort: port(), ClusterID: c.ID,
			Dir: filepath.Join(dir, fmt.Sprintf("broker-%d", i)), LogDir: logDirs[i-1], heap: o.Heap, jvm: o.JVM,
		}
		b.Props = filepath.Join(b.Dir, "server.properties")
		c.Brokers = append(c.Brokers, b)
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", i, b.CtrlPort))
	}
	rf := strconv.Itoa(min(n, 3))
	minISR := strconv.Itoa(min(n, 2))
	for _, b := range c.Brokers {
		if err := os.MkdirAll(b.Dir, 0o755); err != nil {
			fatalf(t, "%v", err)
		}
		props := [][2]string{
			{"process.roles", "broker,controller"},
			{"node.id", strconv.Itoa(b.NodeID)},
			{"controller.quorum.voters", strings.Join(voters, ",")},
			{"listeners", fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", b.Port, b.CtrlPort)},
			{"advertised.listeners", fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", b.Port, b.CtrlPort)},
			{"controller.listener.names", "CONTROLLER"},
			{"inter.broker.listener.name", "PLAINTEXT"},
			{"listener.security.protocol.map", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"},
			{"log.dirs", b.LogDir},
			{"num.partitions", "1"},
			{"num.recovery.threads.per.data.dir", "1"},
			{"num.io.threads", "2"},
			{"num.network.threads", "2"},
			{"num.replica.fetchers", "1"},
			{"background.threads", "4"},
			{"log.segment.bytes", strconv.FormatInt(o.SegmentBytes, 10)},
			{"log.retention.check.interval.ms", "5000"},
			{"offsets.topic.replication.factor", rf},
			{"offsets.topic.num.partitions", "4"},
			{"transaction.state.log.replication.factor", rf},
			{"transaction.state.log.min.isr", minISR},
			{"transaction.state.log.num.partitions", "2"},
			{"share.coordinator.state.topic.replication.factor", rf},
			{"share.coordinator.state.topic.min.isr", minISR},
			{"default.replication.factor", rf},
			{"min.insync.replicas", minISR},
			{"group.initial.rebalance.delay.ms", "0"},
			{"auto.create.topics.enable", "false"},
			// A node that comes back is put back in the ISR as soon as it
			// has caught up; a dead one leaves it after this long.
			{"replica.lag.time.max.ms", "10000"},
		}
		b.writeProps(t, props, o.Extra)
		out := k.MustTool(t, dir, 2*time.Minute, nil, "kafka.tools.StorageTool",
			"format", "--cluster-id", c.ID, "--config", b.Props)
		t.Logf("node %d: StorageTool format: %s", b.NodeID, strings.TrimSpace(string(out)))
		t.Cleanup(func() { b.cleanup(t) })
	}
	// Runs first: all nodes stopped at once.
	t.Cleanup(func() { c.Stop(t) })
	return c
}

// Start launches every node and waits until all serve.
func (c *Cluster) Start(t *testing.T) {
	t.Helper()
	for _, b := range c.Brokers {
		b.Launch(t)
	}
	for _, b := range c.Brokers {
		b.WaitStarted(t)
	}
}

// Stop stops every running node at once (one after the other, the last
// ones would wait for a quorum that is gone).
func (c *Cluster) Stop(t *testing.T) {
	t.Helper()
	done := make(chan *Broker, len(c.Brokers))
	n := 0
	for _, b := range c.Brokers {
		if !b.Running() {
			continue
		}
		n++
		go func() {
			b.p.stop(syscall.SIGTERM, brokerStopTimeout)
			done <- b
		}()
	}
	for ; n > 0; n-- {
		b := <-done
		code := b.p.exitCode()
		if code != 0 && code != 128+int(syscall.SIGTERM) {
			errorf(t, "node %d exited with status %d\n--- %s:\n%s", b.NodeID, code, b.Log, tail(b.Log, 40))
		} else if !fileMatches(b.Log, shutdownCompleteRE) {
			errorf(t, "node %d: the broker log has no %q\n--- %s:\n%s", b.NodeID, shutdownCompleteRE, b.Log, tail(b.Log, 40))
		}
	}
}
