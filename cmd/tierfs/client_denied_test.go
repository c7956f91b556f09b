package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/testuser"
	"github.com/tierfs/tierfs/tiering"
)

// A user the control socket's mode keeps out is told so, and how to be
// let in, not that no daemon answers (issue 16 item 13f).
func TestClientPermissionDenied(t *testing.T) {
	u := testuser.Create(t)
	// The user must reach the binary: a copy in a directory open to all.
	dir := t.TempDir()
	for d := dir; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "tierfs")
	b, err := os.ReadFile(tierfsBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	mp := filepath.Join(dir, "mnt") // never mounted: only names the socket
	var tiers []tiering.TierConfig
	for _, n := range []string{"fast", "slow"} {
		d := filepath.Join(t.TempDir(), n)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		tiers = append(tiers, tiering.TierConfig{Name: n, Type: tiering.TypeHDD, Path: d})
	}
	store, err := tiering.Open(tiers, tiering.Options{Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	l, err := control.Listen(mp, control.NewServer(store, nil, mp, zerolog.Nop()), 0o600, -1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })

	cmd := u.Command(bin, "status", mp)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	out, err := cmd.CombinedOutput()
	want := "tierfs status: permission denied on the control socket " + l.Path() + " of " + mp
	if err == nil || !strings.Contains(string(out), want) || !strings.Contains(string(out), "control_mode") ||
		!strings.Contains(string(out), "control_group") || strings.Contains(string(out), "no tierfs daemon") {
		t.Errorf("status as a user the socket refuses: %v\n%s\nwant %q and the way in (control_mode, control_group)", err, out, want)
	}
	// Root, whom the mode lets in, is answered.
	if out := mustTierfs(t, "", "status", "--json", mp); !strings.Contains(out, `"mountpoint": "`+mp+`"`) {
		t.Errorf("status as root: %s", out)
	}
}
