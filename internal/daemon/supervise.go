package daemon

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/tierfs/tierfs/internal/supervisor"
	"github.com/tierfs/tierfs/mountutil"
)

// runSupervisor is `tierfs mount` with [mount] supervisor: this process
// holds the connection and runs the daemon, this same command, as its
// child (internal/supervisor).
//
// handed: systemd passed the connection of mp kept in the unit's store
// (supervisor.Handed): mp may be a mount that nobody serves until the
// supervisor takes it over, so it is neither checked nor resolved.
// check is the configuration's check of the mountpoint, made before a
// fresh mount.
func runSupervisor(mp string, handed bool, check func() error, log zerolog.Logger) (int, error) {
	if os.Geteuid() != 0 {
		return 1, errors.New("mount.supervisor: the supervisor mounts by hand and needs root")
	}
	if !handed {
		// Checked here too, so that a busy mountpoint fails before any
		// child, with its error.
		if err := mountutil.Prepare(mp); err != nil {
			return 1, err
		}
	}
	mp = resolveMountpoint(mp, handed)
	return supervisor.Run(supervisor.Config{
		Mountpoint: mp,
		// When what systemd passed is no use: the checks not made.
		Prepare: func() error {
			if !handed {
				return nil
			}
			if err := check(); err != nil {
				return err
			}
			return mountutil.Prepare(mp)
		},
		Mounted: mountedAt,
		Command: func() *exec.Cmd {
			// This binary as it was started, even if replaced on disk
			// since: an upgrade is `tierfs restart --binary`, later.
			cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
			cmd.Args[0] = os.Args[0]
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			return cmd
		},
		Log: log,
	}), nil
}

// mountedAt is mountinfo's topmost entry for mp, read without touching
// the mount.
func mountedAt(mp string) (supervisor.MountRef, error) {
	ms, err := mountutil.Mounts()
	if err != nil {
		return supervisor.MountRef{}, err
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Mountpoint == mp {
			return supervisor.MountRef{ID: ms[i].ID(), Dev: ms[i].Dev, FSType: ms[i].FSType}, nil
		}
	}
	return supervisor.MountRef{}, fmt.Errorf("nothing is mounted at %s", mp)
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
