package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/metrics"
	"github.com/tierfs/tierfs/internal/metrics/metricstest"
)

const dashboardPath = "../../examples/grafana/tierfs.json"

// dashboard is what the test reads of a Grafana dashboard.
type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	Panels  []panel
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

var metricNameRE = regexp.MustCompile(`\b(?:tierfs|process|go)_[a-zA-Z0-9_]+\b`)

// The example dashboard is valid JSON, and every metric it queries is
// one the endpoint serves (a histogram's _bucket, _sum and _count
// series by their family's name).
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if d.Title == "" || d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("%s: no title, uid or panels", dashboardPath)
	}

	// A scrape with every family: a store that has written, moved and
	// been listed, a request answered with an error.
	topics := metrics.NewTopics(2, 10)
	s := openStore(t, topics)
	addr, reqs := serve(t, s, topics)
	write(t, s, "t-0", "00000000000000000000.log", 1<<20)
	if err := s.Move("t-0/00000000000000000000.log", "slow"); err != nil {
		t.Fatal(err)
	}
	l, err := s.ListFiles()
	if err != nil {
		t.Fatal(err)
	}
	topics.Observe(l)
	reqs.Done(0, time.Millisecond, int32(unix.EIO))
	families := metricstest.Get(t, addr).Families()

	known := func(name string) bool {
		if _, ok := families[name]; ok {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && families[base] == "histogram" {
				return true
			}
		}
		return false
	}
	ids := map[int]bool{}
	used := map[string]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d twice", p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q queries nothing", p.Title)
			}
			for _, q := range p.Targets {
				names := metricNameRE.FindAllString(q.Expr, -1)
				if len(names) == 0 {
					t.Errorf("panel %q: %q names no metric", p.Title, q.Expr)
				}
				for _, n := range names {
					used[n] = true
					if !known(n) {
						t.Errorf("panel %q queries %s, which the endpoint does not serve", p.Title, n)
					}
				}
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		for _, n := range metricNameRE.FindAllString(v.Definition, -1) {
			if !known(n) {
				t.Errorf("variable %s queries %s, which the endpoint does not serve", v.Name, n)
			}
		}
	}
	// What the issue asks the dashboard to show.
	for _, n := range []string{"tierfs_tier_threshold_ratio", "tierfs_moved_bytes_total", "tierfs_tier_demotion_lag_bytes",
		"tierfs_burst_reserve_seconds", "tierfs_topic_read_bytes_total", "tierfs_fuse_request_duration_seconds_bucket",
		"tierfs_takeovers_total", "tierfs_takeover_last_pause_seconds"} {
		if !used[n] {
			t.Errorf("the dashboard does not show %s", n)
		}
	}
}
