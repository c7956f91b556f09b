package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/supervisor"
)

func setupRestart(fs *flag.FlagSet) func([]string) int {
	asJSON := fs.Bool("json", false, "print the result as JSON")
	bin := fs.String("binary", "", "start the new daemon from this executable `FILE` (an upgrade): root's, writable by no one else, "+
		"no symbolic link on its path; daemons start from it from then on; if it does not serve, the previous binary takes back")
	timeout := fs.Duration("timeout", supervisor.DefaultTrialTimeout, "with --binary: how long the new binary has to serve the mount before the previous one takes back")
	return func(args []string) int {
		if len(args) != 1 {
			return usageError(fs, "want exactly one MOUNTPOINT")
		}
		mp, err := canonicalPath(args[0])
		if err != nil {
			return fail("restart", err)
		}
		o := supervisor.RestartOptions{TrialTimeout: *timeout}
		if *bin != "" {
			// Made absolute here (the supervisor's directory is not
			// ours); symlinks are not resolved: the supervisor refuses
			// them.
			if o.Binary, err = filepath.Abs(*bin); err != nil {
				return fail("restart", err)
			}
		}
		r, err := supervisor.Restart(mp, o)
		if r.NewPid != 0 {
			// The mount is served before the new daemon's control
			// socket listens: wait for it too, so that a command run
			// after this one finds the daemon.
			waitControl(mp, r.NewPid, 30*time.Second)
		}
		if *asJSON && (err == nil || r.RolledBack) {
			b, _ := json.Marshal(r)
			fmt.Fprintln(stdout, string(b))
			if err != nil {
				return 1
			}
			return 0
		}
		if r.RolledBack {
			return fail("restart", fmt.Errorf("%v: pid %d (generation %d); the mount paused %.1f ms", err, r.NewPid, r.Gen, r.PauseMs))
		}
		if err != nil {
			return fail("restart", err)
		}
		with := ""
		if r.Binary != "" {
			with = ", " + r.Binary
		}
		fmt.Fprintf(stdout, "daemon replaced: pid %d -> %d (generation %d%s); the mount paused %.1f ms\n", r.OldPid, r.NewPid, r.Gen, with, r.PauseMs)
		return 0
	}
}

// waitControl waits until the control socket of mountpoint answers for
// the daemon pid, or timeout passes.
func waitControl(mountpoint string, pid int, timeout time.Duration) {
	c, err := control.NewClient(mountpoint)
	if err != nil {
		return
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.Status(ctx)
		cancel()
		if err == nil && st.Daemon != nil && st.Daemon.Pid == pid {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
