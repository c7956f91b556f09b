package daemon

import (
	"os"
	"os/exec"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/tierfs/tierfs/internal/supervisor"
	"github.com/tierfs/tierfs/mountutil"
)

// runSupervisor is `tierfs mount` with [mount] supervisor: this process
// holds the connection and runs the daemon, this same command, as its
// child (internal/supervisor). helper is the mount(8) form's, or nil.
func runSupervisor(mp string, log zerolog.Logger, helper *Helper) (int, error) {
	// Checked here too, so that a busy mountpoint fails before any child.
	if err := mountutil.Prepare(mp); err != nil {
		return 1, err
	}
	mp = resolveMountpoint(mp, false)
	c := supervisor.Config{
		Mountpoint: mp,
		Command: func() *exec.Cmd {
			// This binary as it was started, even if replaced on disk
			// since: an upgrade is `tierfs restart --binary`, later.
			cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
			cmd.Args[0] = os.Args[0]
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			if helper != nil && helper.Daemon != nil {
				helper.Daemon(cmd)
			}
			return cmd
		},
		Log: log,
	}
	if helper != nil {
		c.Ready = helper.Mounted
	}
	return supervisor.Run(c), nil
}

// resolveMountpoint resolves the symlinks of mp; on a takeover only those
// of its parent, since resolving mp itself would ask the mount, which no
// one serves yet.
func resolveMountpoint(mp string, takeover bool) string {
	if takeover {
		if dir, err := filepath.EvalSymlinks(filepath.Dir(mp)); err == nil {
			return filepath.Join(dir, filepath.Base(mp))
		}
		return mp
	}
	if resolved, err := filepath.EvalSymlinks(mp); err == nil {
		return resolved
	}
	return mp
}
