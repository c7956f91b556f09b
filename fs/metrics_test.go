package fs

import (
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/metrics/metricstest"
	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/policy"
)

// TestMetricsFromAMount scrapes a real mount's endpoint over HTTP while
// files are written through it, demoted by the policy, moved by hand and
// read back from the slow tier: the counters follow, per tier, reason,
// topic and request, and promtool accepts what is served.
func TestMetricsFromAMount(t *testing.T) {
	pc := policy.DefaultConfig()
	pc.MigrateThreshold = 0.5
	pc.Interval = units.Duration(50 * time.Millisecond)
	pc.MinAge = units.Duration(200 * time.Millisecond)
	pc.Pin = nil
	m := mount(t, mountOpt{capacities: []units.ByteSize{16 << 20, 0}, policy: &pc, metrics: true})
	addr := m.call(t, request{Op: "metrics"}).Addr
	if addr == "" {
		t.Fatal("the daemon serves no metrics")
	}
	value := func(sc metricstest.Scrape, name string, labels ...string) float64 {
		v, _ := sc.Value(name, labels...)
		return v
	}
	sc0 := metricstest.Get(t, addr)
	transport := "/dev/fuse"
	if m.call(t, request{Op: "uring"}).URing.Active {
		transport = "io_uring"
	}
	if v, ok := sc0.Value("tierfs_fuse_transport_info", "transport", transport); !ok || v != 1 {
		t.Errorf("transport info: %v %v, want %s", v, ok, transport)
	}

	mustOK(t, os.Mkdir(m.path("events-0"), 0o755), "mkdir")
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for i := 0; i < 3; i++ {
		mustOK(t, os.WriteFile(m.path(fmt.Sprintf("events-0/%020d.log", i)), data, 0o644), "write segment")
	}
	// (A missing name is no error to FUSE: go-fuse answers a negative
	// entry.)
	if err := unix.Rmdir(m.path("events-0")); err != unix.ENOTEMPTY {
		t.Fatalf("rmdir of a directory with files: %v, want ENOTEMPTY", err)
	}

	var sc metricstest.Scrape
	waitFor(t, "a demotion on the ledger and the topic's bytes on slow", func() bool {
		sc = metricstest.Get(t, addr)
		return value(sc, "tierfs_moves_finished_total", "outcome", "moved", "reason", "demote") >= 1 &&
			value(sc, "tierfs_topic_bytes", "tier", "slow", "topic", "events") >= 4<<20
	})
	if w := value(sc, "tierfs_tier_written_bytes_total", "tier", "fast") - value(sc0, "tierfs_tier_written_bytes_total", "tier", "fast"); w < 12<<20 {
		t.Errorf("bytes written to fast: %v, want the 12 MiB written", w)
	}
	if n := value(sc, "tierfs_fuse_request_duration_seconds_count", "op", "write"); n < 12 {
		t.Errorf("WRITE requests counted: %v, want at least one per MiB written", n)
	}
	if n := value(sc, "tierfs_fuse_request_duration_seconds_count", "op", "lookup"); n < 1 {
		t.Errorf("LOOKUP requests counted: %v", n)
	}
	if n := value(sc, "tierfs_fuse_errors_total", "errno", "ENOTEMPTY"); n != 1 {
		t.Errorf("ENOTEMPTY answers counted: %v, want the rmdir's", n)
	}
	if b := value(sc, "tierfs_moved_bytes_total", "reason", "demote"); b < 4<<20 {
		t.Errorf("bytes demoted: %v", b)
	}
	if n := value(sc, "tierfs_moves_finished_total", "outcome", "failed", "reason", "demote"); n != 0 {
		t.Errorf("failed demotions: %v", n)
	}

	// An operator's move, and a read of the moved file on the slow tier.
	// The file is one the policy never moves (a segment Kafka has deleted
	// and not yet removed), so that no promotion can take it back to fast
	// before or during the read, and the read counts on slow.
	deleted := "events-0/00000000000000000099.log.deleted"
	mustOK(t, os.WriteFile(m.path(deleted), data[:1<<20], 0o644), "write a deleted segment")
	mustOK(t, m.move(t, deleted, "slow"), "move")
	if tier := m.tierOf(t, deleted); tier != 1 {
		t.Fatalf("%s on tier %d after the move to slow", deleted, tier)
	}
	// O_DIRECT: the read must reach the daemon (a FADV_DONTNEED of the
	// mount's cache can leave pages behind, and the read then counts
	// nothing: seen in make test's io_uring rerun).
	f, err := os.OpenFile(m.path(deleted), os.O_RDONLY|unix.O_DIRECT, 0)
	mustOK(t, err, "open")
	buf := make([]byte, 1<<20)
	n, err := f.ReadAt(buf, 0)
	f.Close()
	if n != len(buf) {
		t.Fatalf("read back %d bytes: %v", n, err)
	}
	sc1 := metricstest.Get(t, addr)
	if d := value(sc1, "tierfs_moves_finished_total", "outcome", "moved", "reason", "manual") - value(sc, "tierfs_moves_finished_total", "outcome", "moved", "reason", "manual"); d != 1 {
		t.Errorf("manual moves: +%v, want +1", d)
	}
	if d := value(sc1, "tierfs_topic_read_bytes_total", "tier", "slow", "topic", "events") - value(sc, "tierfs_topic_read_bytes_total", "tier", "slow", "topic", "events"); d < 1 {
		t.Errorf("bytes read from slow for topic events: +%v, want the read", d)
	}
	if d := value(sc1, "tierfs_tier_reads_total", "tier", "slow") - value(sc, "tierfs_tier_reads_total", "tier", "slow"); d < 1 {
		t.Errorf("reads served by slow: +%v", d)
	}
	if v, ok := sc1.Value("tierfs_tier_threshold_ratio", "tier", "fast"); !ok || v != 0.5 {
		t.Errorf("fast threshold: %v %v, want 0.5", v, ok)
	}
	metricstest.Promtool(t, sc1.Text)
}
