package main

// The form mount(8) uses: `mount -t fuse.tierfs CONFIG MOUNTPOINT` and
// /etc/fstab run mount.fuse3, which runs `tierfs CONFIG MOUNTPOINT -o
// OPTIONS` through /bin/sh with the system's default PATH. The command
// returns once the mount answers, leaving the daemon running detached.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/config"
	"github.com/tierfs/tierfs/internal/daemon"
)

// defaultDetachedLog is where a daemon detached by the mount helper form
// logs when [log] file is unset and its stderr is not the journal.
const defaultDetachedLog = "/var/log/tierfs.log"

// helperChildEnv marks the detached daemon the helper form starts: fds 3
// and 4 are the pipes of its readiness and of its startup errors.
const helperChildEnv = "TIERFS_MOUNT_HELPER_CHILD"

// isMountHelperForm reports whether args are mount.fuse3's call: no
// command, a file, a mountpoint, then options.
func isMountHelperForm(args []string) bool {
	if len(args) < 2 || findCommand(args[0]) != nil || strings.HasPrefix(args[0], "-") {
		return false
	}
	fi, err := os.Stat(args[0])
	return err == nil && !fi.IsDir()
}

// helperOptions are the -o options understood.
type helperOptions struct {
	flags      daemon.Overrides
	debug      bool
	foreground bool
}

// ignoredMountOptions are options mount(8), mount.fuse3 and systemd add
// or keep for themselves. tierfs mounts nodev,nosuid whatever is asked:
// it runs as root and serves files users may write.
var ignoredMountOptions = map[string]bool{
	"": true, "defaults": true, "rw": true, "auto": true, "noauto": true, "nofail": true, "_netdev": true,
	"user": true, "nouser": true, "users": true, "dev": true, "nodev": true, "suid": true, "nosuid": true, "exec": true,
	"async": true,
}

// refusedMountOptions say why an option mount(8) knows does not apply.
var refusedMountOptions = map[string]string{
	"ro":                  "tierfs mounts read-write only",
	"noexec":              "tierfs cannot mount noexec",
	"sync":                "tierfs cannot mount sync (fsync what must be durable)",
	"allow_other":         "set [mount] allow_other in the configuration file",
	"allow_root":          "set [mount] allow_other in the configuration file",
	"default_permissions": "tierfs checks permissions itself",
	"writeback":           "did you mean writeback_cache?",
}

// parseMountOptions reads the comma-separated -o options; every problem
// is reported, one per line.
func parseMountOptions(opts []string) (helperOptions, error) {
	o := helperOptions{flags: daemon.Overrides{}}
	var errs []error
	for _, list := range opts {
		for _, opt := range strings.Split(list, ",") {
			name, value, hasValue := strings.Cut(opt, "=")
			switch {
			case ignoredMountOptions[opt] || strings.HasPrefix(opt, "x-") || strings.HasPrefix(opt, "X-") || name == "comment":
			case refusedMountOptions[name] != "":
				errs = append(errs, fmt.Errorf("mount option %q: %s", opt, refusedMountOptions[name]))
			case name == "debug" && !hasValue:
				o.debug = true
			default:
				key := ""
				for _, m := range daemon.MountFlags {
					if m.Key == name {
						key = m.Key
					}
				}
				if key == "" {
					errs = append(errs, fmt.Errorf("unknown mount option %q (tierfs takes writeback_cache, io_uring, direct_io, each =true or =false, and debug)", opt))
					continue
				}
				v := true
				if hasValue {
					b, err := strconv.ParseBool(value)
					if err != nil {
						errs = append(errs, fmt.Errorf("mount option %q: want %s=true or %s=false", opt, name, name))
						continue
					}
					v = b
				}
				o.flags[key] = v
			}
		}
	}
	return o, errors.Join(errs...)
}

// runMountHelper serves mount.fuse3's call: `tierfs CONFIG MOUNTPOINT [-o
// OPTIONS] [-f]`. -f stays in the foreground, as `tierfs mount` does.
func runMountHelper(args []string) int {
	cfgPath, mnt := args[0], args[1]
	var opts []string
	foreground := false
	for i := 2; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-o" && i+1 < len(args):
			opts = append(opts, args[i+1])
			i++
		case strings.HasPrefix(a, "-o") && len(a) > 2:
			opts = append(opts, a[2:])
		case a == "-f":
			foreground = true
		case a == "-v" || a == "-n":
			// mount(8)'s verbose and no-mtab flags, passed on by some.
		default:
			fmt.Fprintf(stderr, "tierfs: %q: want tierfs CONFIG MOUNTPOINT [-o OPTIONS] [-f] (as mount.fuse3 runs it)\n", a)
			return 2
		}
	}
	o, err := parseMountOptions(opts)
	if err != nil {
		return fail("mount", err)
	}
	o.foreground = foreground
	for _, p := range []*string{&cfgPath, &mnt} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
	}
	if os.Getenv(helperChildEnv) != "" {
		return runDetachedChild(cfgPath, mnt, o)
	}
	if o.foreground {
		return runForeground(cfgPath, mnt, o)
	}
	return detach(cfgPath, mnt, args)
}

// detach starts the daemon in a session of its own, with its log going
// where [log] file says (or the journal, or defaultDetachedLog), and
// returns 0 once the mount answers; the daemon's startup errors come out
// here.
func detach(cfgPath, mnt string, args []string) int {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return fail("mount", err)
	}
	logOut, err := detachedLog(cfg.Log.File)
	if err != nil {
		return fail("mount", err)
	}
	defer logOut.Close()
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return fail("mount", err)
	}
	defer devNull.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fail("mount", err)
	}
	defer readyR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		readyW.Close()
		return fail("mount", err)
	}
	defer errR.Close()

	self, err := os.Executable()
	if err != nil {
		self = "/proc/self/exe"
	}
	cmd := exec.Command(self, append([]string{cfgPath, mnt}, args[2:]...)...)
	cmd.Args[0] = "tierfs"
	cmd.Env = append(os.Environ(), helperChildEnv+"=1")
	// "/" keeps no directory of another filesystem busy.
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devNull, logOut, logOut
	cmd.ExtraFiles = []*os.File{readyW, errW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	readyW.Close()
	errW.Close()
	if err != nil {
		return fail("mount", fmt.Errorf("starting the daemon: %w", err))
	}
	copied := make(chan struct{})
	go func() {
		io.Copy(stderr, errR)
		close(copied)
	}()
	ready, _ := io.ReadAll(readyR)
	if bytes.Equal(ready, []byte("ready\n")) {
		<-copied
		if err := checkMountAnswers(mnt); err != nil {
			// Still mounted, and the daemon keeps it: say so, fail.
			return fail("mount", fmt.Errorf("the daemon (pid %d) reported %s mounted, but %w", cmd.Process.Pid, mnt, err))
		}
		cmd.Process.Release()
		return 0
	}
	werr := cmd.Wait()
	<-copied
	var ee *exec.ExitError
	if errors.As(werr, &ee) && ee.ExitCode() > 0 {
		return ee.ExitCode()
	}
	return fail("mount", fmt.Errorf("the daemon ended before %s was mounted (%v); its log: %s", mnt, werr, logOut.Name()))
}

// detachedLog opens where the detached daemon logs: file if given; the
// journal when our stderr is systemd's journal stream (a mount unit, an
// fstab line at boot); else defaultDetachedLog.
func detachedLog(file string) (*os.File, error) {
	if file == "" {
		if stderrIsJournal() {
			fd, err := unix.FcntlInt(2, unix.F_DUPFD_CLOEXEC, 3)
			if err != nil {
				return nil, err
			}
			return os.NewFile(uintptr(fd), "the journal"), nil
		}
		file = defaultDetachedLog
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("log.file: %w", err)
	}
	return f, nil
}

// stderrIsJournal reports whether fd 2 is the stream systemd connected to
// the journal ($JOURNAL_STREAM names its device and inode).
func stderrIsJournal() bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	var st unix.Stat_t
	if unix.Fstat(2, &st) != nil {
		return false
	}
	return strconv.FormatUint(st.Dev, 10) == dev && strconv.FormatUint(st.Ino, 10) == ino
}

// checkMountAnswers asks the mount at mnt for its statistics: a FUSE
// filesystem that answers.
func checkMountAnswers(mnt string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(mnt, &st); err != nil {
		return fmt.Errorf("it does not answer: %w", err)
	}
	if st.Type != unix.FUSE_SUPER_MAGIC {
		return fmt.Errorf("%s is not a FUSE mount (filesystem type %#x)", mnt, st.Type)
	}
	return nil
}

// runDetachedChild is the process detach started: the supervisor (see
// [mount] supervisor) or, without one, the daemon. Startup errors go to
// the parent on fd 4 until the mount is up, when fd 3 says "ready".
func runDetachedChild(cfgPath, mnt string, o helperOptions) int {
	ready, errs := os.NewFile(3, "ready"), os.NewFile(4, "errors")
	if ready == nil || errs == nil {
		fmt.Fprintln(stderr, "tierfs: "+helperChildEnv+" is set but fds 3 and 4 are not open")
		return 2
	}
	// Not for the daemons a supervisor starts: they get what they need.
	unix.CloseOnExec(3)
	unix.CloseOnExec(4)
	os.Unsetenv(helperChildEnv)
	stderr = errs
	errsOpen := true
	return runDaemon(cfgPath, mnt, o, &daemon.Helper{
		Mounted: func() {
			ready.WriteString("ready\n")
			ready.Close()
			// Errors at exit go to the log from now on.
			stderr = os.Stderr
			errs.Close()
			errsOpen = false
		},
		// A supervised daemon runs in the foreground under this
		// process; until the mount is up, the first one's startup
		// errors go to the parent too (runForeground).
		Daemon: func(cmd *exec.Cmd) {
			cmd.Args = append(cmd.Args, "-f")
			if errsOpen {
				cmd.Env = append(cmd.Environ(), fmt.Sprintf("%s=%d", helperErrorsEnv, 3+len(cmd.ExtraFiles)))
				cmd.ExtraFiles = append(cmd.ExtraFiles, errs)
			}
		},
	})
}

// helperErrorsEnv names, in a helper form's supervised daemon, the
// descriptor its startup errors go to (the helper's parent).
const helperErrorsEnv = "TIERFS_MOUNT_HELPER_ERRORS"

// runForeground is `tierfs CONFIG MOUNTPOINT -f`, as an operator or a
// helper form's supervisor (runDetachedChild) runs it.
func runForeground(cfgPath, mnt string, o helperOptions) int {
	v := os.Getenv(helperErrorsEnv)
	if v == "" {
		return runDaemon(cfgPath, mnt, o, nil)
	}
	os.Unsetenv(helperErrorsEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		fmt.Fprintf(stderr, "tierfs: %s=%q is not a descriptor\n", helperErrorsEnv, v)
		return 2
	}
	unix.CloseOnExec(fd)
	errs := os.NewFile(uintptr(fd), "errors")
	stderr = errs
	return runDaemon(cfgPath, mnt, o, &daemon.Helper{Mounted: func() {
		stderr = os.Stderr
		errs.Close()
	}})
}

// runDaemon is the helper form's daemon (or its supervisor): tierfs
// mount's, with the -o options for its flags.
func runDaemon(cfgPath, mnt string, o helperOptions, h *daemon.Helper) int {
	status, err := daemon.Run(cfgPath, mnt, o.debug, o.flags, mountFS, h)
	if err != nil {
		return fail("mount", err)
	}
	return status
}
