package metrics_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/iostats"
	"github.com/tierfs/tierfs/internal/metrics"
	"github.com/tierfs/tierfs/internal/metrics/metricstest"
	"github.com/tierfs/tierfs/internal/supervisor"
	"github.com/tierfs/tierfs/internal/testenv"
	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/tiering"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		listen string
		topics int
		want   string // "" valid; else the start of the error
	}{
		{metrics.DefaultListen, 100, ""},
		{"", 0, ""},
		{":9571", 1, ""},
		{"[::1]:0", 1, ""},
		{"localhost:9571", 1, ""},
		{"9571", 1, "metrics.listen: \"9571\" is not HOST:PORT"},
		{"127.0.0.1:http", 1, "metrics.listen: port \"http\" is not a number"},
		{"127.0.0.1:70000", 1, "metrics.listen: port \"70000\""},
		{"bad host!:1", 1, "metrics.listen: host \"bad host!\""},
		{":1", -1, "metrics.max_topics: must be 0 or more"},
	} {
		err := metrics.Config{Listen: tc.listen, MaxTopics: tc.topics}.Validate()
		var ke *units.KeyError
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: %v", tc.listen, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want) || !errors.As(err, &ke)):
			t.Errorf("%q, %d: %v, want a key error starting %q", tc.listen, tc.topics, err, tc.want)
		}
	}
}

func TestTopicOf(t *testing.T) {
	for comps, want := range map[string]string{
		"orders-3/00000000000000000000.log":   "orders",
		"orders-x-12/leader-epoch-checkpoint": "orders-x",
		"__consumer_offsets-49/a.log":         "__consumer_offsets",
		"no-partition/a":                      "no-partition",
		"trailing-/a":                         "trailing-",
		"meta.properties":                     metrics.Other,
	} {
		if got := metrics.TopicOf(strings.Split(comps, "/")); got != want {
			t.Errorf("TopicOf(%s) = %q, want %q", comps, got, want)
		}
	}
}

// Past max_topics, topics count under "other"; an admitted topic keeps
// its own series.
func TestTopicsBounded(t *testing.T) {
	tp := metrics.NewTopics(2, 2)
	a, b := tp.Bucket([]string{"a-0", "x"}), tp.Bucket([]string{"b-0", "x"})
	c, root := tp.Bucket([]string{"c-0", "x"}), tp.Bucket([]string{"meta.properties"})
	if a == b || a == c || b == c {
		t.Fatalf("two topics within the bound share a bucket, or one past it has its own")
	}
	if c != root {
		t.Errorf("a topic past the bound does not count with the root's files under %q", metrics.Other)
	}
	if tp.Bucket([]string{"a-7", "y"}) != a {
		t.Errorf("another partition of an admitted topic counts elsewhere")
	}
}

func openStore(t *testing.T, topics *metrics.Topics) *tiering.Store {
	t.Helper()
	testenv.Root(t, "tiering keeps its attributes in trusted.* xattrs")
	base := t.TempDir()
	var tiers []tiering.TierConfig
	for i, n := range []string{"fast", "slow"} {
		d := filepath.Join(base, n)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		c := tiering.TierConfig{Name: n, Type: tiering.TypeHDD, Path: d}
		if i == 0 {
			c.Type, c.Capacity = tiering.TypeNVMe, 64<<20
		}
		tiers = append(tiers, c)
	}
	s, err := tiering.Open(tiers, tiering.Options{Log: zerolog.Nop(), IOBucket: topics.Bucket})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func write(t *testing.T, s *tiering.Store, dir, name string, n int) {
	t.Helper()
	if dir != "" {
		if _, err := s.Mkdir(tiering.RelPath(""), dir, 0o755, tiering.Owner{}); err != nil && !errors.Is(err, unix.EEXIST) {
			t.Fatal(err)
		}
	}
	h, _, err := s.Create(tiering.RelPath(dir), name, unix.O_RDWR, 0o644, tiering.Owner{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if _, err := h.Write(make([]byte, n), 0); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, s *tiering.Store, rel string, n int) {
	t.Helper()
	h, err := s.Open(tiering.RelPath(rel), unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if got, err := h.Read(make([]byte, n), 0); err != nil || got != n {
		t.Fatalf("read %s: %d, %v", rel, got, err)
	}
}

// serve serves a store's metrics over real HTTP on a port of its own,
// with request counters and a transport as a mount would give them.
func serve(t *testing.T, s *tiering.Store, topics *metrics.Topics) (string, *iostats.Requests) {
	t.Helper()
	ln, err := metrics.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reqs := iostats.NewRequests([]string{"lookup", "write"})
	srv := metrics.Serve(ln, metrics.Sources{
		Store:      s,
		Thresholds: func() map[string]float64 { return map[string]float64{"fast": 0.25, "slow": -1} },
		Requests:   reqs,
		Transport:  func() string { return "/dev/fuse" },
		Topics:     topics,
		// What a supervisor answers after two takeovers
		// (cmd/tierfs's TestMetricsCountTakeovers asks a real one).
		Supervisor: func() (supervisor.Status, error) {
			return supervisor.Status{Gen: 3, Takeovers: 2, Pauses: []float64{8.5, 12.25}}, nil
		},
	})
	t.Cleanup(func() { srv.Close() })
	return srv.Addr(), reqs
}

func must(t *testing.T, sc metricstest.Scrape, want float64, name string, labels ...string) {
	t.Helper()
	v, ok := sc.Value(name, labels...)
	if !ok || v != want {
		t.Errorf("%s%v = %v (present %v), want %v", name, labels, v, ok, want)
	}
}

// The endpoint, scraped over HTTP, follows the store: tier fill and
// threshold, demotion lag, bytes written and read by tier and topic, the
// move ledger by reason and outcome, and what promtool accepts.
func TestScrapeFollowsTheStore(t *testing.T) {
	topics := metrics.NewTopics(2, 10)
	s := openStore(t, topics)
	addr, reqs := serve(t, s, topics)

	sc := metricstest.Get(t, addr)
	must(t, sc, 64<<20, "tierfs_tier_capacity_bytes", "tier", "fast")
	must(t, sc, 0.25, "tierfs_tier_threshold_ratio", "tier", "fast")
	if _, ok := sc.Value("tierfs_tier_threshold_ratio", "tier", "slow"); ok {
		t.Errorf("a threshold that is off is exported")
	}
	must(t, sc, 0, "tierfs_tier_demotion_lag_bytes", "tier", "fast")
	must(t, sc, 0, "tierfs_moves_started_total", "reason", "manual")
	must(t, sc, 1, "tierfs_fuse_transport_info", "transport", "/dev/fuse")
	must(t, sc, 3, "tierfs_daemon_generation")
	must(t, sc, 2, "tierfs_takeovers_total")
	must(t, sc, 0.01225, "tierfs_takeover_last_pause_seconds")
	if v, ok := sc.Value("tierfs_burst_reserve_seconds"); !ok || !math.IsInf(v, 1) {
		t.Errorf("burst reserve seconds of an idle tier: %v, want +Inf", v)
	}
	for _, f := range []string{"tierfs_build_info", "go_goroutines", "process_cpu_seconds_total"} {
		if !strings.Contains(sc.Text, "\n"+f) {
			t.Errorf("no %s in the scrape", f)
		}
	}

	write(t, s, "orders-0", "00000000000000000000.log", 20<<20)
	write(t, s, "", "meta.properties", 4096)
	if err := s.Move("orders-0/00000000000000000000.log", "slow"); err != nil {
		t.Fatal(err)
	}
	if err := s.MoveWith(context.Background(), "gone.log", "slow", tiering.MoveOptions{Reason: tiering.ReasonDemote}); err == nil {
		t.Fatal("a move of no file succeeded")
	}
	read(t, s, "orders-0/00000000000000000000.log", 1<<20)
	reqs.Done(1, 3*time.Millisecond, 0)
	reqs.Done(0, 40*time.Microsecond, int32(unix.ENOENT))
	// Bytes per topic come from the policy's listings.
	l, err := s.ListFiles()
	if err != nil {
		t.Fatal(err)
	}
	topics.Observe(l)

	sc = metricstest.Get(t, addr)
	must(t, sc, 20<<20+4096, "tierfs_tier_written_bytes_total", "tier", "fast")
	must(t, sc, 1<<20, "tierfs_tier_read_bytes_total", "tier", "slow")
	must(t, sc, 1, "tierfs_tier_reads_total", "tier", "slow")
	must(t, sc, 1, "tierfs_moves_started_total", "reason", "manual")
	must(t, sc, 1, "tierfs_moves_finished_total", "outcome", "moved", "reason", "manual")
	must(t, sc, 1, "tierfs_moves_finished_total", "outcome", "gone", "reason", "demote")
	must(t, sc, 0, "tierfs_moves_finished_total", "outcome", "failed", "reason", "manual")
	must(t, sc, 20<<20, "tierfs_moved_bytes_total", "reason", "manual")
	must(t, sc, 1, "tierfs_move_duration_seconds_count", "reason", "manual")
	must(t, sc, 0, "tierfs_moves_in_flight")
	must(t, sc, 1<<20, "tierfs_topic_read_bytes_total", "tier", "slow", "topic", "orders")
	if v, _ := sc.Value("tierfs_topic_bytes", "tier", "slow", "topic", "orders"); v < 20<<20 || v > 21<<20 {
		t.Errorf("bytes of topic orders on slow: %v, want its 20 MiB segment's blocks", v)
	}
	must(t, sc, 4096, "tierfs_topic_bytes", "tier", "fast", "topic", metrics.Other)
	must(t, sc, 1, "tierfs_fuse_request_duration_seconds_count", "op", "write")
	must(t, sc, 1, "tierfs_fuse_request_duration_seconds_bucket", "op", "write", "le", "0.005")
	must(t, sc, 0, "tierfs_fuse_request_duration_seconds_bucket", "op", "write", "le", "0.0025")
	must(t, sc, 1, "tierfs_fuse_errors_total", "errno", "ENOENT")

	// Above the threshold: the lag is what lies above it.
	write(t, s, "orders-1", "00000000000000000000.log", 20<<20)
	sc = metricstest.Get(t, addr)
	used, _ := sc.Value("tierfs_tier_used_bytes", "tier", "fast")
	must(t, sc, used-0.25*(64<<20), "tierfs_tier_demotion_lag_bytes", "tier", "fast")
	free, _ := sc.Value("tierfs_tier_free_bytes", "tier", "fast")
	must(t, sc, free, "tierfs_burst_reserve_bytes")

	metricstest.Promtool(t, sc.Text)
}
