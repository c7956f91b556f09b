package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tierfs/tierfs/internal/control"
)

// The CLI says only what happened (issue 18, item 8): a file already on
// the tier is "already on" it, with or without --wait, and no move is
// counted; a move's time and rate are the copy's; migrate and pin take
// --to and --tier both; an error names the file once.
func TestCLISaysWhatHappened(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy)
	d := startDaemon(t, e)
	writeFile(t, filepath.Join(e.mnt, "seg"), strings.Repeat("x", 1<<20))
	writeFile(t, filepath.Join(e.mnt, "other"), "y")

	out := mustTierfs(t, e.mnt, "migrate", "--tier", "slow", "--wait", "seg")
	// Progress lines may come first; the last says what was done, in the
	// copy's time as the daemon logged it.
	re := regexp.MustCompile(`\nseg: moved to slow \(1\.0 MiB in (\d+)ms(, [\d.]+ [KMGT]?i?B/s)?\)\n$`)
	m := re.FindStringSubmatch("\n" + out)
	if m == nil {
		t.Errorf("migrate --tier slow --wait printed %q", out)
	}
	before, _ := statusJSON(t, e.mnt)
	if before.Moves.Started != 1 || before.Moves.Moved != 1 {
		t.Fatalf("moves %+v after one move", before.Moves)
	}
	for _, args := range [][]string{{"migrate", "--to", "slow", "--wait", "seg"}, {"migrate", "--to", "slow", "seg"}} {
		if out := mustTierfs(t, e.mnt, args...); out != "seg: already on slow\n" {
			t.Errorf("%s printed %q, want %q", strings.Join(args, " "), out, "seg: already on slow\n")
		}
	}
	if out := mustTierfs(t, e.mnt, "pin", "--to", "slow", "--wait", "seg"); out != "seg: pinned to slow\nseg: already on slow\n" &&
		out != "seg: pinned to slow, where it is already\n" {
		t.Errorf("pin --to slow of a file on slow printed %q", out)
	}
	if after, _ := statusJSON(t, e.mnt); after.Moves.Started != before.Moves.Started || after.Moves.Moved != before.Moves.Moved ||
		after.Moves.BytesMoved != before.Moves.BytesMoved {
		t.Errorf("moves %+v -> %+v: a file already on its tier counted as a move", before.Moves, after.Moves)
	}

	// The pinned file cannot go elsewhere: the error names it once.
	_, errOut, code := tierfs(t, e.mnt, "migrate", "--to", "fast", "seg")
	if code != 1 || errOut != "tierfs migrate: seg: cannot move to fast: pinned to tier slow: unpin it first\n" {
		t.Errorf("migrate of a pinned file: exit %d, %q", code, errOut)
	}
	if _, errOut, code := tierfs(t, e.mnt, "pin", "--tier", "nowhere", "other"); code != 1 || strings.Count(errOut, "other") > 1 {
		t.Errorf("pin to a missing tier: exit %d, %q", code, errOut)
	}

	// The log: the pin's own moves say reason pin, durations have a unit.
	mustTierfs(t, e.mnt, "pin", "--tier", "slow", "--wait", "other")
	poll(t, "the pin's moved line", func() (bool, error) {
		return strings.Contains(d.stderr.String(), `"path":"other","to":"slow","reason":"pin"`), nil
	})
	if m != nil && !strings.Contains(d.stderr.String(), `"path":"seg","to":"slow","reason":"manual","bytes":1048576,"dur_ms":`+m[1]+`,`) {
		t.Errorf("migrate printed %sms; the daemon's moved line says otherwise:\n%s", m[1], d.stderr.String())
	}
	for _, line := range strings.Split(d.stderr.String(), "\n") {
		if strings.Contains(line, `"dur":`) {
			t.Errorf("a duration without a unit: %s", line)
		}
		if strings.Contains(line, `"message":"moved"`) && !strings.Contains(line, `"dur_ms":`) {
			t.Errorf("a moved line without dur_ms: %s", line)
		}
	}
}

// A move's rate is its bytes over the copy's time as the daemon measured
// it: the time the move waited in the queue is not in it.
func TestRateLeavesOutQueueTime(t *testing.T) {
	q := &queued{queued: time.Now().Add(-time.Hour), last: control.JobResponse{BytesDone: 10 << 20, MoveMs: 2000}}
	if got := q.rate(time.Now()); got != 5<<20 {
		t.Errorf("rate %v, want 5 MiB/s (10 MiB in the 2 s of copying; the hour queued left out)", got)
	}
	q.last.MoveMs = 0
	if got := q.rate(time.Now()); got != 0 {
		t.Errorf("rate %v before the copy ran, want none", got)
	}
}

// Help spells flags as the usage lines do and says each default once.
func TestHelpSpellsFlagsOnce(t *testing.T) {
	_, errOut, code := tierfs(t, "", "mount", "-h")
	if code != 0 {
		t.Fatalf("mount -h: exit %d", code)
	}
	if strings.Contains(errOut, "(default true) (default true)") || strings.Count(errOut, "(default true)") != 1 {
		t.Errorf("mount -h says a default other than once:\n%s", errOut)
	}
	if !strings.Contains(errOut, "\n  --config FILE\n") || strings.Contains(errOut, "\n  -config") {
		t.Errorf("mount -h does not spell --config as the usage line does:\n%s", errOut)
	}
	for _, c := range []string{"migrate", "pin"} {
		out := mustTierfs(t, "", "help", c)
		if !strings.Contains(out, "--to TIER") || !strings.Contains(out, "--tier TIER") {
			t.Errorf("help %s lacks --to or --tier:\n%s", c, out)
		}
	}
}

// A spill's log line names the file it moved, as every move line does.
func TestSpillLineNamesTheFile(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	cfg, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	// A fast tier of 2 MiB: a 4 MiB file cannot stay there.
	writeFile(t, e.config, strings.Replace(string(cfg), `capacity = "64MiB"`, `capacity = "2MiB"`, 1)+idlePolicy)
	d := startDaemon(t, e)
	if err := os.Mkdir(filepath.Join(e.mnt, "t-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(e.mnt, "t-0", "big.log"), strings.Repeat("z", 4<<20))
	if got := lsJSON(t, "", filepath.Join(e.mnt, "t-0", "big.log")); got["t-0/big.log"].Tier != "slow" {
		t.Fatalf("the 4 MiB file is on %q, want slow (spilled)", got["t-0/big.log"].Tier)
	}
	if !strings.Contains(d.stderr.String(), `"path":"t-0/big.log","from":"fast","to":"slow"`) ||
		!strings.Contains(d.stderr.String(), `"message":"tier full: file moved on"`) {
		t.Errorf("no spill line naming t-0/big.log:\n%s", d.stderr.String())
	}
}
