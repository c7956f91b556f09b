package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPinEndsWithFile: a CLI pin is bound to the file it named when it was
// set. It follows the file through Kafka's rename to .deleted and ends
// when the file is removed; a file made later under the pinned name is
// neither pinned nor moved (it was, and the pin stayed listed for ever).
func TestPinEndsWithFile(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	// Plans often; nothing here is old or big enough for the policy to
	// move on its own.
	e.setConfig(t, "", "[policy]\ninterval = \"100ms\"\n")
	startDaemon(t, e)

	const seg = "t-0/00000000000000000000.log"
	if err := os.Mkdir(filepath.Join(e.mnt, "t-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.mnt, seg), randomBytes(t, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	mustTierfs(t, e.mnt, "pin", "--tier", "slow", "--wait", seg)
	if p := policyOf(t, e.mnt); len(p.Pins) != 1 || p.Pins[seg] != "slow" {
		t.Fatalf("pins = %v", p.Pins)
	}

	if err := os.Rename(filepath.Join(e.mnt, seg), filepath.Join(e.mnt, seg+".deleted")); err != nil {
		t.Fatal(err)
	}
	poll(t, "the pin to follow its file's rename", func() (bool, error) {
		p := policyOf(t, e.mnt)
		return len(p.Pins) == 1 && p.Pins[seg+".deleted"] == "slow", nil
	})
	if err := os.Remove(filepath.Join(e.mnt, seg+".deleted")); err != nil {
		t.Fatal(err)
	}
	poll(t, "the pin to end with its file", func() (bool, error) { return len(policyOf(t, e.mnt).Pins) == 0, nil })

	if err := os.WriteFile(filepath.Join(e.mnt, seg), randomBytes(t, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	poll(t, "a plan made after the new file", func() (bool, error) {
		p := policyOf(t, e.mnt)
		return p.LastPlan.After(created) && len(p.Queued)+len(p.InFlight) == 0, nil
	})
	if got := lsJSON(t, "", "-r", e.mnt); got[seg].Tier != "fast" {
		t.Errorf("a new file under a pinned file's old name: %+v, want it left on fast", got[seg])
	}
	if p := policyOf(t, e.mnt); len(p.Pins) != 0 {
		t.Errorf("pins = %v after the new file", p.Pins)
	}
	if _, errOut, code := tierfs(t, e.mnt, "unpin", seg); code != 1 || !strings.Contains(errOut, "not pinned") {
		t.Errorf("unpin of the new file: exit %d, stderr %q", code, errOut)
	}
}
