package benchkit

import (
	"strings"
	"testing"
)

// TestSplitBrokerProblems: Kafka's own races with the benchmark's deletions
// are counted apart; anything else, with its stack trace, is a problem.
func TestSplitBrokerProblems(t *testing.T) {
	lines := []string{
		// Seen on the HDD-only broker (xfs) in TestSteady.
		"[2026-12-02 13:17:48,023] WARN Failed to flush directory /tmp/w/hdd.mnt/kafka-logs/steady-1-hdd-2 (org.apache.kafka.common.utils.Utils)",
		"[2026-12-02 13:20:37,942] WARN Failed to flush file /tmp/w/hdd.mnt/kafka-logs/steady-1_5-hdd-2/00000000000000112891.snapshot (org.apache.kafka.common.utils.Utils)",
		"    java.nio.file.NoSuchFileException: /tmp/w/hdd.mnt/kafka-logs/steady-1_5-hdd-2/00000000000000112891.snapshot",
		"[2026-12-02 13:20:38,000] ERROR [QuorumController id=1] Exceptionally slow controller event handleBrokerHeartbeat took 1234 ms (org.apache.kafka.controller.QuorumController)",
		"[2026-12-02 13:20:38,500] ERROR Uncaught exception in scheduled task 'flush-log' (org.apache.kafka.server.util.KafkaScheduler)",
		"    java.lang.IllegalStateException: The memory mapped buffer for log of steady-1-0 is already closed",
		"[2026-12-02 13:20:38,600] WARN Failed to write checkpoint. This is ok if the topic/partition is being deleted (org.apache.kafka.storage.internals.checkpoint.CheckpointFileWithFailureHandler)",
		"[2026-12-02 13:20:39,000] ERROR Error while flushing log for steady-2-0 (kafka.log.LogManager)",
		"    java.io.IOException: Input/output error",
		// A directory flush that failed otherwise is not Kafka's benign
		// race: flushDirIfExists logs only NoSuchFileException this way.
		"[2026-12-02 13:20:40,000] WARN Failed to flush directory because of something else",
	}
	problems, slow := SplitBrokerProblems(lines)
	want := []string{lines[7], lines[8], lines[9]}
	if strings.Join(problems, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(problems, "\n"), strings.Join(want, "\n"))
	}
	for _, w := range []string{"1 slow controller events", "the slowest 1234 ms", "3 asynchronous flushes"} {
		if !strings.Contains(slow, w) {
			t.Errorf("summary %q does not say %q", slow, w)
		}
	}
}
