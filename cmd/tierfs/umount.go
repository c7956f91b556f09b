package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/supervisor"
	"github.com/tierfs/tierfs/mountutil"
)

func setupUmount(fs *flag.FlagSet) func([]string) int {
	lazy := fs.Bool("lazy", false, "detach a busy mount at once; the daemon exits when the last open file is closed")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long (`D`, e.g. 30s, 5m) to wait for the daemon to exit (0: no limit)")
	return func(args []string) int {
		if len(args) != 1 {
			return usageError(fs, "want exactly one MOUNTPOINT")
		}
		return umount(args[0], *lazy, *timeout)
	}
}

// umount unmounts the tierfs at path and waits for its daemon to exit.
// The daemon is the process at the other end of the mount's control
// socket (its credentials, SO_PEERCRED), found before the unmount: after
// it, nothing would name it.
func umount(path string, lazy bool, timeout time.Duration) int {
	mp, err := canonicalPath(path)
	if err != nil {
		return fail("umount", err)
	}
	m, err := mountutil.FindTierfsMount(mp)
	if err != nil || m.Mountpoint != mp {
		return fail("umount", fmt.Errorf("%s is not a tierfs mountpoint", mp))
	}
	pid, pidfd, perr := daemonOf(mp)
	if perr == nil {
		defer unix.Close(pidfd)
	}
	// A supervised mount's supervisor exits after its daemon: a mount
	// made at once after this one returns must not find it still there.
	supPid, supFd := 0, -1
	if sock, err := supervisor.SocketPath(mp); err == nil {
		if p, fd, err := peerOf(sock); err == nil {
			supPid, supFd = p, fd
			defer unix.Close(supFd)
		}
	}
	if err := unmountPath(mp, lazy); err != nil {
		return fail("umount", err)
	}
	if perr != nil {
		fmt.Fprintf(stderr, "tierfs umount: %s: unmounted; not waiting for its daemon: %v\n", mp, perr)
		return 1
	}
	if err := waitExit(pidfd, timeout); err != nil {
		return fail("umount", fmt.Errorf("%s: unmounted, but daemon pid %d %w", mp, pid, err))
	}
	if supFd >= 0 {
		if err := waitExit(supFd, timeout); err != nil {
			return fail("umount", fmt.Errorf("%s: unmounted, but supervisor pid %d %w", mp, supPid, err))
		}
		fmt.Fprintf(stdout, "%s: unmounted; daemon pid %d and supervisor pid %d exited\n", mp, pid, supPid)
		return 0
	}
	fmt.Fprintf(stdout, "%s: unmounted; daemon pid %d exited\n", mp, pid)
	return 0
}

// daemonOf returns the pid of the daemon listening on mp's control socket
// and a pidfd that keeps naming that process (a pid may be reused once it
// exits; a pidfd may not).
func daemonOf(mp string) (int, int, error) {
	sock, err := control.SocketPath(mp)
	if err != nil {
		return 0, -1, err
	}
	pid, fd, err := peerOf(sock)
	if err != nil {
		return 0, -1, fmt.Errorf("no daemon answers on its control socket %s: %w", sock, err)
	}
	return pid, fd, nil
}

// peerOf returns the pid of the process listening on the unix socket
// sock and a pidfd of it.
func peerOf(sock string) (int, int, error) {
	conn, err := net.DialTimeout("unix", sock, control.RequestTimeout)
	if err != nil {
		return 0, -1, err
	}
	defer conn.Close()
	raw, err := conn.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, -1, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, -1, err
	}
	if cerr != nil {
		return 0, -1, fmt.Errorf("the control socket's peer: %w", cerr)
	}
	pidfd, err := unix.PidfdOpen(int(cred.Pid), 0)
	if err != nil {
		return 0, -1, fmt.Errorf("pidfd_open %d: %w", cred.Pid, err)
	}
	return int(cred.Pid), pidfd, nil
}

// unmountPath unmounts mp: umount(2) as root, else fusermount3 -u; a
// busy mount is an error unless lazy.
func unmountPath(mp string, lazy bool) error {
	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	err := unix.Unmount(mp, flags)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%s is busy: files or directories on it are open (fuser -vm %s); close them, or use --lazy", mp, mp)
	case errors.Is(err, unix.EPERM):
		args := []string{"-u"}
		if lazy {
			args = append(args, "-z")
		}
		out, ferr := exec.Command("fusermount3", append(args, mp)...).CombinedOutput()
		if ferr != nil {
			return fmt.Errorf("unmounting %s: %v (fusermount3: %s)", mp, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return fmt.Errorf("unmounting %s: %w", mp, err)
}

// waitExit waits until the process of pidfd exits, or timeout (0: no
// limit) passes.
func waitExit(pidfd int, timeout time.Duration) error {
	ms := -1
	if timeout > 0 {
		ms = int(timeout / time.Millisecond)
	}
	deadline := time.Now().Add(timeout)
	for {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if errors.Is(err, unix.EINTR) {
			if timeout > 0 {
				ms = max(int(time.Until(deadline)/time.Millisecond), 0)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("cannot be waited for: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("has not exited after %v (moves it was making end first: see its log)", timeout)
		}
		return nil
	}
}
