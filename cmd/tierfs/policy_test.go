package main

// End-to-end tests of the policy through the CLI: migrate, pin, unpin,
// reload (and SIGHUP), and the engine demoting on its own.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/tiering"
)

// setConfig rewrites the configuration: fastExtra goes into the fast
// tier's table, tail after the tiers (a [policy] table, say). It returns
// the text.
func (e *env) setConfig(t *testing.T, fastExtra, tail string) string {
	t.Helper()
	text := fmt.Sprintf(`# test configuration
[[tier]]
name = "fast"
type = "nvme"
path = %q
capacity = "64MiB"
%s
[[tier]]
name = "slow"
type = "hdd"
path = %q

[log]
level = "debug"

%s
%s`, e.fast, fastExtra, e.slow, tail, metricsUnlessIn(tail))
	writeFile(t, e.config, text)
	return text
}

// lineOf is the 1-based line of the first line of text that contains s.
func lineOf(t *testing.T, text, s string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("%q is not in the text", s)
	return 0
}

// idlePolicy keeps the engine from planning moves of its own after its
// first plan, so that a test's own moves stay where it put them.
const idlePolicy = "[policy]\ninterval = \"1h\"\n"

func policyOf(t *testing.T, mnt string) *control.PolicyStatus {
	t.Helper()
	st, _ := statusJSON(t, mnt)
	if st.Policy == nil {
		t.Fatalf("status --json has no policy")
	}
	return st.Policy
}

func TestMigrateCLI(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy)
	startDaemon(t, e)

	content := map[string][]byte{}
	put := func(rel string, n int) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(e.mnt, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		content[rel] = randomBytes(t, n)
		if err := os.WriteFile(filepath.Join(e.mnt, rel), content[rel], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	seg := "t-0/00000000000000000000.log"
	put(seg, 3<<20)
	put("t-1/00000000000000000000.log", 100_000)
	put("t-1/00000000000000001000.log", 200_000)
	put("meta.properties", 10)

	// A relative path, resolved against the working directory.
	out := mustTierfs(t, filepath.Join(e.mnt, "t-0"), "migrate", "--to", "slow", "--wait", filepath.Base(seg))
	if !strings.Contains(out, seg+": moved to slow (3.0 MiB in ") {
		t.Errorf("migrate --wait printed:\n%s", out)
	}
	if got := lsJSON(t, "", "-r", e.mnt); got[seg].Tier != "slow" || got["meta.properties"].Tier != "fast" {
		t.Errorf("after migrate, ls = %+v; want %s on slow", got, seg)
	}

	// A directory is every file under it; flags after the paths.
	out = mustTierfs(t, "", "migrate", filepath.Join(e.mnt, "t-1"), "--to", "slow", "--wait")
	for _, f := range []string{"t-1/00000000000000000000.log", "t-1/00000000000000001000.log"} {
		if !strings.Contains(out, f+": moved to slow") {
			t.Errorf("migrate of a directory printed:\n%s", out)
		}
	}
	// Several paths back, without --wait: queued, then done.
	out = mustTierfs(t, e.mnt, "migrate", "--to", "fast", seg, "t-1/00000000000000001000.log")
	if !strings.Contains(out, seg+": queued to move to fast (job ") {
		t.Errorf("migrate without --wait printed:\n%s", out)
	}
	poll(t, "the queued moves", func() (bool, error) {
		got := lsJSON(t, "", "-r", e.mnt)
		return got[seg].Tier == "fast" && got["t-1/00000000000000001000.log"].Tier == "fast", nil
	})
	got := lsJSON(t, "", "-r", e.mnt)
	if got["t-1/00000000000000000000.log"].Tier != "slow" {
		t.Errorf("ls = %+v; want t-1/00000000000000000000.log still on slow", got)
	}
	for rel, want := range content {
		if b, err := os.ReadFile(filepath.Join(e.mnt, rel)); err != nil || !bytes.Equal(b, want) {
			t.Errorf("%s reads back different after its moves (%v)", rel, err)
		}
	}
	if p := policyOf(t, e.mnt); len(p.Queued)+len(p.InFlight) != 0 {
		t.Errorf("policy status after the moves: %+v", p)
	}
	// The store's ledger counts the moves, once, all the operator's.
	st, _ := statusJSON(t, e.mnt)
	if m := st.Moves; m.Moved != 5 || m.Failed != 0 || m.Started != 5 || m.BytesMoved < 2*(3<<20) ||
		m.ByReason[3].Reason != tiering.ReasonManual || m.ByReason[3].Outcomes[tiering.OutcomeMoved] != 5 {
		t.Errorf("move ledger after the moves: %+v", m)
	}
	human := mustTierfs(t, "", "status", e.mnt)
	for _, want := range []string{"Policy: enabled; every 1h0m0s", "Thresholds: fast 0.5, slow 0.5", "Moves: 5 moved (", "0 failed, 0 in flight; 0 spills",
		"  manual  5        5"} {
		if !strings.Contains(human, want) {
			t.Errorf("status lacks %q:\n%s", want, human)
		}
	}

	// Errors.
	_, errOut, code := tierfs(t, "", "migrate", "--to", "tape", filepath.Join(e.mnt, seg))
	if code != 1 || !strings.Contains(errOut, `no tier named "tape" (its tiers: fast, slow)`) {
		t.Errorf("migrate to an unknown tier: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = tierfs(t, "", "migrate", "--to", "slow", filepath.Join(e.mnt, "missing.log"))
	if code != 1 || !strings.Contains(errOut, "missing.log: no such file or directory") {
		t.Errorf("migrate of a missing file: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = tierfs(t, "", "migrate", "--to", "slow", e.base)
	if code != 1 || !strings.Contains(errOut, "not inside a tierfs mount") {
		t.Errorf("migrate outside tierfs: exit %d, stderr %q", code, errOut)
	}
	if got := lsJSON(t, "", "-r", e.mnt); got[seg].Tier != "fast" {
		t.Errorf("a refused migrate moved %s: %+v", seg, got[seg])
	}
}

func TestPinCLI(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy)
	d := startDaemon(t, e)

	const seg = "t-0/00000000000000000000.log"
	if err := os.Mkdir(filepath.Join(e.mnt, "t-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := randomBytes(t, 1<<20)
	if err := os.WriteFile(filepath.Join(e.mnt, seg), data, 0o644); err != nil {
		t.Fatal(err)
	}
	out := mustTierfs(t, e.mnt, "pin", "--tier", "slow", "--wait", seg)
	if !strings.Contains(out, seg+": pinned to slow") || !strings.Contains(out, seg+": moved to slow") {
		t.Errorf("pin --wait printed:\n%s", out)
	}
	if got := lsJSON(t, "", "-r", e.mnt); got[seg].Tier != "slow" {
		t.Errorf("after pin, ls = %+v", got)
	}
	if p := policyOf(t, e.mnt); p.Pins[seg] != "slow" {
		t.Errorf("pins = %v", p.Pins)
	}
	if human := mustTierfs(t, "", "status", e.mnt); !strings.Contains(human, "Pins:") || !tableHasRow(human, seg, "slow") {
		t.Errorf("status does not list the pin:\n%s", human)
	}
	if _, err := os.Stat(filepath.Join(e.fast, ".tierfs", "pins.json")); err != nil {
		t.Errorf("pins file: %v", err)
	}
	if _, errOut, code := tierfs(t, "", "pin", "--tier", "tape", filepath.Join(e.mnt, seg)); code != 1 || !strings.Contains(errOut, `no tier named "tape"`) {
		t.Errorf("pin to an unknown tier: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := tierfs(t, "", "pin", "--tier", "fast", filepath.Join(e.mnt, "t-0")); code != 1 || !strings.Contains(errOut, "is a directory") {
		t.Errorf("pin of a directory: exit %d, stderr %q", code, errOut)
	}

	// The pin survives a restart.
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.waitExit(t); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
	startDaemon(t, e)
	if p := policyOf(t, e.mnt); p.Pins[seg] != "slow" {
		t.Errorf("pins after a restart = %v", p.Pins)
	}
	if got := lsJSON(t, "", "-r", e.mnt); got[seg].Tier != "slow" {
		t.Errorf("after the restart, ls = %+v", got)
	}

	if out := mustTierfs(t, e.mnt, "unpin", seg); !strings.Contains(out, seg+": unpinned") {
		t.Errorf("unpin printed %q", out)
	}
	if p := policyOf(t, e.mnt); len(p.Pins) != 0 {
		t.Errorf("pins after unpin = %v", p.Pins)
	}
	if _, errOut, code := tierfs(t, e.mnt, "unpin", seg); code != 1 || !strings.Contains(errOut, "not pinned") {
		t.Errorf("unpin of an unpinned file: exit %d, stderr %q", code, errOut)
	}
	if b, err := os.ReadFile(filepath.Join(e.mnt, seg)); err != nil || !bytes.Equal(b, data) {
		t.Errorf("the pinned file reads back different (%v)", err)
	}
}

func TestReload(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy)
	d := startDaemon(t, e)
	if p := policyOf(t, e.mnt); p.Thresholds["fast"] != 0.5 || p.Thresholds["slow"] != 0.5 || p.MaxRate != 0 {
		t.Fatalf("thresholds at start: %+v", p)
	}

	// tierfs reload.
	e.setConfig(t, "migrate_threshold = 0.8\n", idlePolicy+"max_rate = \"10MiB/s\"\n")
	out := mustTierfs(t, "", "reload", e.mnt)
	for _, want := range []string{"configuration reloaded from " + e.config, "tier fast threshold: 0.5 -> 0.8", "policy.max_rate: 0 -> 10MiB/s"} {
		if !strings.Contains(out, want) {
			t.Errorf("reload printed (want %q):\n%s", want, out)
		}
	}
	if p := policyOf(t, e.mnt); p.Thresholds["fast"] != 0.8 || p.Thresholds["slow"] != 0.5 || p.MaxRate != 10<<20 {
		t.Errorf("after reload: thresholds %v, max_rate %v", p.Thresholds, p.MaxRate)
	}

	// SIGHUP.
	e.setConfig(t, "migrate_threshold = 0.7\n", idlePolicy+"migrate_threads = 3\n")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll(t, "the SIGHUP reload", func() (bool, error) {
		p := policyOf(t, e.mnt)
		return p.Thresholds["fast"] == 0.7 && p.MigrateThreads == 3 && p.MaxRate == 0, nil
	})

	// An invalid file is refused, with file, line and key; the running
	// configuration stays.
	text := e.setConfig(t, "migrate_threshold = 7\n", idlePolicy)
	_, errOut, code := tierfs(t, "", "reload", e.mnt)
	want := fmt.Sprintf("%s:%d: tier[0].migrate_threshold: must be in (0, 1]", e.config, lineOf(t, text, "migrate_threshold = 7"))
	if code != 1 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "keeps its running configuration") {
		t.Errorf("reload of an invalid file: exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll(t, "the refused SIGHUP reload in the log", func() (bool, error) {
		return strings.Count(d.stderr.String(), "reload refused") >= 2, nil
	})
	if p := policyOf(t, e.mnt); p.Thresholds["fast"] != 0.7 || p.MigrateThreads != 3 {
		t.Errorf("after refused reloads: thresholds %v, threads %d; want the running 0.7 and 3", p.Thresholds, p.MigrateThreads)
	}

	// The tiers cannot change live.
	writeFile(t, e.config, strings.Replace(e.setConfig(t, "", idlePolicy), `name = "slow"`, `name = "cold"`, 1))
	if _, errOut, code := tierfs(t, "", "reload", e.mnt); code != 1 || !strings.Contains(errOut, "tier list changed: restart to apply") || !strings.Contains(errOut, "fast, cold") {
		t.Errorf("reload with a renamed tier: exit %d, stderr %q", code, errOut)
	}
	writeFile(t, e.config, strings.Replace(e.setConfig(t, "", idlePolicy), `capacity = "64MiB"`, `capacity = "32MiB"`, 1))
	if _, errOut, code := tierfs(t, "", "reload", e.mnt); code != 1 || !strings.Contains(errOut, `tier[0] "fast" capacity 64MiB -> 32MiB`) {
		t.Errorf("reload with a new capacity: exit %d, stderr %q", code, errOut)
	}
	// What only a mount applies is reported, and the rest applies.
	e.setConfig(t, "", idlePolicy+"\n[mount]\ncontrol_mode = \"0640\"\n")
	out = mustTierfs(t, "", "reload", e.mnt)
	if !strings.Contains(out, "tier fast threshold: 0.7 -> 0.5") || !strings.Contains(out, `not applied until the next mount: mount.control_mode: "0600" -> "0640"`) {
		t.Errorf("reload with a [mount] change printed:\n%s", out)
	}
	if p := policyOf(t, e.mnt); p.Thresholds["fast"] != 0.5 {
		t.Errorf("thresholds %v", p.Thresholds)
	}
	if out := mustTierfs(t, "", "reload", e.mnt); !strings.Contains(out, "nothing changed") {
		t.Errorf("a reload of the same file printed:\n%s", out)
	}
	// The log level: the reload that quietens the log still logs itself,
	// the next one is not logged.
	writeFile(t, e.config, strings.Replace(e.setConfig(t, "", idlePolicy), `level = "debug"`, `level = "warn"`, 1))
	if out := mustTierfs(t, "", "reload", e.mnt); !strings.Contains(out, `log.level: "debug" -> "warn"`) {
		t.Errorf("reload of the log level printed:\n%s", out)
	}
	if p := policyOf(t, e.mnt); p.LogLevel != "warn" {
		t.Errorf("log level %q after the reload, want warn", p.LogLevel)
	}
	text = strings.Replace(e.setConfig(t, "migrate_threshold = 0.6\n", idlePolicy), `level = "debug"`, `level = "warn"`, 1)
	writeFile(t, e.config, text)
	mustTierfs(t, "", "reload", e.mnt)
	if p := policyOf(t, e.mnt); p.Thresholds["fast"] != 0.6 {
		t.Errorf("thresholds %v", p.Thresholds)
	}
	var reloaded int
	sc := bufio.NewScanner(strings.NewReader(d.stderr.String()))
	for sc.Scan() {
		var l struct{ Message string }
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Message == "configuration reloaded" {
			reloaded++
		}
	}
	if reloaded != 5 {
		t.Errorf("the log has %d 'configuration reloaded' lines, want 5 (the last reload is below the warn level)", reloaded)
	}
}

// The engine demotes on its own: a small fast tier over its threshold
// sheds its oldest segments to the slow tier, and a reload that lowers
// the threshold makes it shed more.
func TestPolicyDemotes(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	policyConf := func(threshold float64) {
		text := e.setConfig(t, "", fmt.Sprintf("[policy]\nmigrate_threshold = %v\ninterval = \"100ms\"\nmin_age = \"0s\"\n", threshold))
		writeFile(t, e.config, strings.Replace(text, `capacity = "64MiB"`, `capacity = "8MiB"`, 1))
	}
	policyConf(0.5)
	startDaemon(t, e)

	const fastCap = 8 << 20
	if err := os.Mkdir(filepath.Join(e.mnt, "t-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	var segs []string
	content := map[string][]byte{}
	for i := 0; i < 6; i++ {
		rel := fmt.Sprintf("t-0/%020d.log", i*1000)
		segs = append(segs, rel)
		content[rel] = randomBytes(t, 1<<20)
		if err := os.WriteFile(filepath.Join(e.mnt, rel), content[rel], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// settled waits until the fast tier uses at most limit bytes with no
	// move pending, then checks that the oldest segments (at least
	// minSlow) are on slow and the rest on fast, and that every file
	// reads back as written.
	settled := func(limit int64, minSlow int) {
		t.Helper()
		poll(t, fmt.Sprintf("the fast tier at or under %d bytes with no move pending", limit), func() (bool, error) {
			st, tiers := statusJSON(t, e.mnt)
			p := st.Policy
			return tiers["fast"].UsedBytes <= limit && len(p.Queued) == 0 && len(p.InFlight) == 0,
				fmt.Errorf("fast uses %d bytes; policy %+v", tiers["fast"].UsedBytes, p)
		})
		got := lsJSON(t, "", "-r", e.mnt)
		onSlow := 0
		for onSlow < len(segs) && got[segs[onSlow]].Tier == "slow" {
			onSlow++
		}
		for _, s := range segs[onSlow:] {
			if got[s].Tier != "fast" {
				t.Errorf("%s is on %s, but an older segment stayed on fast: %+v", s, got[s].Tier, got)
			}
		}
		if onSlow < minSlow || onSlow == len(segs) {
			t.Errorf("%d oldest segments on slow, want %d to %d: %+v", onSlow, minSlow, len(segs)-1, got)
		}
		for _, rel := range segs {
			if b, err := os.ReadFile(filepath.Join(e.mnt, rel)); err != nil || !bytes.Equal(b, content[rel]) {
				t.Errorf("%s reads back different after the policy's moves (%v)", rel, err)
			}
		}
	}
	// The planner demotes when the tier is above its threshold, down to
	// the threshold less policy.Hysteresis: a plan that saw all six
	// segments leaves 3 MiB, one that saw five leaves 3 MiB and then the
	// sixth makes exactly 4 MiB, which is not above.
	settled(fastCap/2, 2)
	if st, _ := statusJSON(t, e.mnt); st.Moves.ByReason[0].Outcomes[tiering.OutcomeMoved] < 2 || st.Moves.Failed != 0 {
		t.Errorf("move ledger: %+v, want 2 demotions or more, none failed", st.Moves)
	}

	// A lower threshold, live: above 0.3 of 8 MiB, down to 0.25.
	policyConf(0.3)
	mustTierfs(t, "", "reload", e.mnt)
	settled(fastCap/4, 4)
	if _, tiers := statusJSON(t, e.mnt); tiers["fast"].UsedBytes >= fastCap*3/10 {
		t.Errorf("fast uses %d bytes after the reload, want under 0.3 of %d", tiers["fast"].UsedBytes, fastCap)
	}
}
