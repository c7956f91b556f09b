package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// These run without Kafka: they check the harness's own parsers on lines
// taken from Kafka 4.1 logs and tools.

func TestIsProblem(t *testing.T) {
	for _, c := range []struct {
		line string
		want bool
	}{
		{"[2026-11-23 14:31:24,496] INFO [BrokerServer id=1] shut down completed (kafka.server.BrokerServer)", false},
		{"[2026-11-23 14:43:08,478] INFO Failed to delete log /x/comp-0/00000000000000000000.log.deleted because it does not exist. (org.apache.kafka.storage.internals.log.LogSegment)", false},
		{"[2026-11-23 14:35:11,818] WARN [NodeToControllerChannelManager id=1 name=registration] Attempting to close NetworkClient that has already been closed. (org.apache.kafka.clients.NetworkClient)", false},
		{"\tlog.flush.interval.ms = null", false},
		{"[2026-11-23 14:35:11,818] ERROR Error while flushing log for perf-0 in dir /m/kafka-logs with offset 10 (org.apache.kafka.storage.internals.log.LogDirFailureChannel)", true},
		{"[2026-11-23 14:35:11,818] WARN [ReplicaManager broker=1] Stopping serving replicas in dir /m/kafka-logs (kafka.server.ReplicaManager)", false},
		{"[2026-11-23 14:35:11,818] WARN [ReplicaManager broker=1] Stopping serving logs in dir /m/kafka-logs (kafka.log.LogManager)", true},
		{"[2026-11-23 14:35:11,818] FATAL Shutdown broker because all log dirs in /m/kafka-logs have failed (kafka.log.LogManager)", true},
		{"[2026-11-23 14:35:11,818] WARN Failed to flush (kafka.log.X)", true},
		{"[2026-11-23 14:35:11,818] INFO x org.apache.kafka.common.errors.KafkaStorageException: Error while writing", true},
	} {
		if got := isProblem(c.line); got != c.want {
			errorf(t, "isProblem(%q) = %v, want %v", c.line, got, c.want)
		}
	}
}

// Kafka's controller startup race (controllerStartupRaceRE) is not a
// problem; the same ERROR line followed by anything else is, and so is
// every other ERROR around it.
func TestProblemLinesSkipControllerStartupRace(t *testing.T) {
	const apiErr = "[2026-12-05 21:03:28,482] ERROR [ControllerApis nodeId=3] Unexpected error handling request RequestHeader(apiKey=API_VERSIONS, apiVersion=4, clientId=raft-client-1, correlationId=259, headerVersion=2) -- ApiVersionsRequestData(clientSoftwareName='apache-kafka-java', clientSoftwareVersion='4.1.1') with context RequestContext(...) (kafka.server.ControllerApis)"
	const npe = `java.lang.NullPointerException: Cannot invoke "kafka.raft.KafkaRaftManager.client()" because the return value of "kafka.server.ControllerServer.raftManager()" is null`
	const other = "java.lang.IllegalStateException: something else"
	const frame = "\tat kafka.server.ControllerServer.$anonfun$startup$7(ControllerServer.scala:159) ~[kafka_2.13-4.1.1.jar:?]"
	const flushErr = "[2026-12-05 21:03:29,000] ERROR Error while flushing log for perf-0 in dir /m/kafka-logs with offset 10 (org.apache.kafka.storage.internals.log.LogDirFailureChannel)"
	log := strings.Join([]string{apiErr, npe, frame, frame, apiErr, other, frame, flushErr, apiErr}, "\n") + "\n"
	path := filepath.Join(t.TempDir(), "broker.log")
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	got := ProblemLinesIn(path)
	var heads []string
	for _, l := range got {
		if !strings.HasPrefix(l, "    ") {
			heads = append(heads, strings.TrimPrefix(l, "broker.log: "))
		}
	}
	want := []string{apiErr, flushErr, apiErr}
	if strings.Join(heads, "\n") != strings.Join(want, "\n") {
		t.Errorf("problem lines:\n%s\nwant the ERROR not followed by the race's exception, the flush error, and the last ERROR (nothing after it)", strings.Join(got, "\n"))
	}
	for _, l := range got {
		if strings.Contains(l, "raftManager()") {
			t.Errorf("the race's exception was reported: %s", l)
		}
	}
}

func TestParseDump(t *testing.T) {
	out := `Dumping /m/kafka-logs/perf-0/00000000000000001005.log
Log starting offset: 1005
baseOffset: 1005 lastOffset: 1006 count: 2 baseSequence: 0 lastSequence: 1 producerId: 0 producerEpoch: 0 partitionLeaderEpoch: 0 isTransactional: false isControl: false deleteHorizonMs: OptionalLong.empty position: 0 CreateTime: 1795444237576 size: 2130 magic: 2 compresscodec: none crc: 3961064405 isvalid: true
| offset: 1005 CreateTime: 1795444237563 keySize: -1 valueSize: 1024 sequence: 0 headerKeys: []
| offset: 1006 CreateTime: 1795444237576 keySize: -1 valueSize: 1024 sequence: 1 headerKeys: []
baseOffset: 1007 lastOffset: 1007 count: 1 baseSequence: 0 lastSequence: 1 producerId: 0 producerEpoch: 0 partitionLeaderEpoch: 0 isTransactional: false isControl: false deleteHorizonMs: OptionalLong.empty position: 2130 CreateTime: 1795444237576 size: 1100 magic: 2 compresscodec: none crc: 1 isvalid: false
| offset: 1007 CreateTime: 1795444237563 keySize: -1 valueSize: 1024 sequence: 0 headerKeys: []
Found 12 invalid bytes at the end of 00000000000000001005.log
Dumping /m/kafka-logs/perf-0/00000000000000002010.log
Log starting offset: 2010
`
	d := parseDump([]byte(out))
	if len(d) != 2 {
		fatalf(t, "parsed %d files, want 2", len(d))
	}
	a := d[0]
	if a.StartOffset != 1005 || a.Batches != 2 || a.Records != 3 || len(a.RecordOffsets) != 3 ||
		len(a.InvalidBatches) != 1 || len(a.Unexpected) != 1 || !strings.HasPrefix(a.Unexpected[0], "Found 12 invalid bytes") {
		errorf(t, "first file: %+v", a)
	}
	if b := d[1]; b.StartOffset != 2010 || b.Batches != 0 || len(b.Unexpected) != 0 {
		errorf(t, "second file: %+v", b)
	}
}

func TestFailureSummary(t *testing.T) {
	if got := firstLines("a\nb\nc", 6); got != "a\nb\nc" {
		t.Errorf("firstLines kept %q", got)
	}
	if got := firstLines("1\n2\n3\n4", 2); got != "1\n2\n[... 2 more lines above]" {
		t.Errorf("firstLines cut to %q", got)
	}
	sub := &testing.T{}
	noteFailure(sub, "one")
	noteFailure(sub, "two")
	if got := takeFailures(sub); len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Errorf("takeFailures = %q, want [one two]", got)
	}
	if got := takeFailures(sub); got != nil {
		t.Errorf("takeFailures again = %q, want nothing", got)
	}
}

func TestProcessReport(t *testing.T) {
	r := processReport(os.Getpid())
	if !strings.Contains(r, fmt.Sprintf("pid %d: ", os.Getpid())) || !strings.Contains(r, " threads: ") {
		t.Errorf("processReport(self) = %q", r)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if r := processReport(cmd.Process.Pid); !strings.Contains(r, "gone") {
		t.Errorf("processReport(a reaped child) = %q, want gone", r)
	}
	if r := fuseConnReport("/nonexistent/mnt"); !strings.HasPrefix(r, "nothing mounted") {
		t.Errorf("fuseConnReport(nothing) = %q", r)
	}
}
