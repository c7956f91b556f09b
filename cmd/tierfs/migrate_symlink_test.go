package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Migrating a directory moves its files and skips its symlinks (and
// FIFOs), saying so once, and succeeds: they have no data to move (issue
// 16 item 13b; each one printed "invalid argument" and failed the
// command).
func TestMigrateSkipsSymlinks(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy)
	startDaemon(t, e)
	d := filepath.Join(e.mnt, "d")
	if err := os.MkdirAll(filepath.Join(d, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(d, "f"), "data")
	if err := unix.Mkfifo(filepath.Join(d, "sub", "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"l": "f", "sub/dangling": "/nonexistent", "sub/up": "../f"} {
		if err := os.Symlink(target, filepath.Join(d, link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, wait := range []bool{true, false} {
		to := "slow"
		args := []string{"migrate", "--to", to, d}
		if wait {
			args = append(args, "--wait")
		} else {
			to = "fast"
			args[2] = to
		}
		out, errOut, code := tierfs(t, "", args...)
		if code != 0 || strings.Contains(out+errOut, "invalid argument") ||
			!strings.Contains(out+errOut, d+": skipped 3 symlinks and 1 special file") {
			t.Errorf("tierfs %s: exit %d\nstdout:\n%s\nstderr:\n%s\nwant 0 and %q", strings.Join(args, " "), code, out, errOut, d+": skipped 3 symlinks and 1 special file")
		}
		if wait && !strings.Contains(out, "d/f: moved to slow") {
			t.Errorf("migrate --wait did not move d/f:\n%s", out)
		}
		if !wait && !strings.Contains(out, "d/f: queued to move to fast") {
			t.Errorf("migrate did not queue d/f:\n%s", out)
		}
	}
	// A directory holding no regular file has no files to move.
	if _, errOut, code := tierfs(t, "", "migrate", "--to", "slow", filepath.Join(d, "sub")); code != 0 || !strings.Contains(errOut, "skipped 2 symlinks and 1 special file") {
		t.Errorf("migrate of a directory without regular files: exit %d, stderr %q", code, errOut)
	}
}
