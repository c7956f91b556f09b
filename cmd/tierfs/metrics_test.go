package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tierfs/tierfs/internal/metrics/metricstest"
)

// metricsAddr is where the daemon's endpoint listens, from its
// "mounted" log line.
func metricsAddr(t *testing.T, d *daemonProc) string {
	t.Helper()
	var m struct {
		Metrics string `json:"metrics"`
	}
	if !mountedLog(d.stderr.String(), &m) || !strings.HasPrefix(m.Metrics, "http://") {
		t.Fatalf("no metrics address in the mounted line (%q):\n%s", m.Metrics, d.stderr)
	}
	return strings.TrimSuffix(strings.TrimPrefix(m.Metrics, "http://"), "/metrics")
}

// The real binary serves its metrics over HTTP: the build, the tiers, and
// the operator's moves under their reasons (migrate: manual, pin: pin),
// in a form promtool accepts. A second daemon whose port is taken does
// not mount, and says which port.
func TestMetricsEndpoint(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy)
	d := startDaemon(t, e)
	addr := metricsAddr(t, d)

	sc := metricstest.Get(t, addr)
	if !strings.Contains(sc.Text, "\ntierfs_build_info{") || !strings.Contains(sc.Text, "\nprocess_resident_memory_bytes ") {
		t.Errorf("no build info or process metrics in:\n%s", sc.Text)
	}
	if v, _ := sc.Value("tierfs_tier_capacity_bytes", "tier", "fast"); v != 64<<20 {
		t.Errorf("fast capacity %v, want 64 MiB", v)
	}
	data := randomBytes(t, 3<<20)
	if err := os.WriteFile(filepath.Join(e.mnt, "seg.log"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	mustTierfs(t, "", "migrate", "--to", "slow", "--wait", filepath.Join(e.mnt, "seg.log"))
	mustTierfs(t, "", "pin", "--tier", "fast", filepath.Join(e.mnt, "seg.log"))
	poll(t, "the pin's move", func() (bool, error) {
		got := lsJSON(t, "", e.mnt)
		return got["seg.log"].Tier == "fast", nil
	})
	sc = metricstest.Get(t, addr)
	for _, reason := range []string{"manual", "pin"} {
		if v, _ := sc.Value("tierfs_moves_finished_total", "outcome", "moved", "reason", reason); v != 1 {
			t.Errorf("moves with reason %s that moved: %v, want 1", reason, v)
		}
	}
	if v, _ := sc.Value("tierfs_tier_written_bytes_total", "tier", "fast"); v < float64(len(data)) {
		t.Errorf("bytes written to fast: %v, want %d", v, len(data))
	}
	metricstest.Promtool(t, sc.Text)

	// A second daemon told the first one's port.
	e2 := newEnv(t)
	e2.setConfig(t, "", "[metrics]\nlisten = \""+addr+"\"\n")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tierfsBin, "mount", "--config", e2.config, e2.mnt)
	out, err := cmd.CombinedOutput()
	if err == nil || mounted(e2.mnt) {
		t.Fatalf("a second daemon on port %s mounted (%v):\n%s", addr, err, out)
	}
	_, port, _ := strings.Cut(addr, ":")
	if !strings.Contains(string(out), "metrics: cannot listen on "+addr) || !strings.Contains(string(out), ":"+port) {
		t.Errorf("the second daemon's error does not name the port %s:\n%s", port, out)
	}
}

// tierfs check refuses a bad [metrics] table with key and line.
func TestCheckMetricsTable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	text := e.setConfig(t, "", "[metrics]\nlisten = \"localhost\"\nmax_topics = -2\n")
	line := func(prefix string) string {
		for i, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, prefix) {
				return fmt.Sprintf("%s:%d: ", e.config, i+1)
			}
		}
		t.Fatalf("no %q in the configuration", prefix)
		return ""
	}
	_, errOut, code := tierfs(t, "", "check", "--config", e.config)
	for _, want := range []string{
		line("listen") + `metrics.listen: "localhost" is not HOST:PORT`,
		line("max_topics") + "metrics.max_topics: must be 0 or more",
	} {
		if code == 0 || !strings.Contains(errOut, want) {
			t.Errorf("check exited %d, want an error %q:\n%s", code, want, errOut)
		}
	}
	e.setConfig(t, "", "[metrics]\nlisten = \"\"\n")
	if out := mustTierfs(t, "", "check", "--config", e.config); !strings.Contains(out, "[metrics]") {
		t.Errorf("check does not print the [metrics] table:\n%s", out)
	}
}
