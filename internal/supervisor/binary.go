package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// EnvExeFD names, in a daemon's environment, the descriptor its binary
// was started from (`tierfs restart --binary`): the daemon closes it.
const EnvExeFD = "TIERFS_SUPERVISOR_EXE_FD"

// DefaultTrialTimeout is how long a new binary has to serve the mount
// before the supervisor kills it and the previous binary takes back.
const DefaultTrialTimeout = 10 * time.Second

// binary is an executable a daemon may be started from: opened once and
// checked, then started through its descriptor, so that what runs is
// the file that was checked whatever its name points at later.
type binary struct {
	path string
	f    *os.File // O_PATH
}

func (b *binary) close() {
	if b != nil && b.f != nil {
		b.f.Close()
	}
}

// openBinary opens path for a root process to execute as a daemon. The
// path is walked from / one name at a time without following symlinks,
// and every directory on it must be root's and writable by nobody else
// (or sticky, as /tmp: then the next name, root's, cannot be swapped); the
// file must be a regular file of root's, executable, writable by nobody
// else. Anyone who could change the file, or a directory above it, could
// otherwise run code as root in the next daemon.
func openBinary(path string) (*binary, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%s: not an absolute path", path)
	}
	clean := filepath.Clean(path)
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := checkDir(fd, "/"); err != nil {
		unix.Close(fd)
		return nil, err
	}
	names := strings.Split(strings.TrimPrefix(clean, "/"), "/")
	if clean == "/" {
		names = nil
	}
	at := "/"
	for i, name := range names {
		at = filepath.Join(at, name)
		next, err := unix.Openat(fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		fd = next
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			unix.Close(fd)
			return nil, fmt.Errorf("%s is a symbolic link: give the binary's own path", at)
		}
		if i < len(names)-1 {
			if err := checkDir(fd, at); err != nil {
				unix.Close(fd)
				return nil, err
			}
			continue
		}
		if err := checkExecutable(&st, at); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	if len(names) == 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	return &binary{path: clean, f: os.NewFile(uintptr(fd), clean)}, nil
}

func checkDir(fd int, at string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("%s: %w", at, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("%s: not a directory", at)
	case st.Uid != 0:
		return fmt.Errorf("%s: owned by uid %d, not root: its entries could be swapped", at, st.Uid)
	case st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0:
		return fmt.Errorf("%s: writable by others (mode %04o): its entries could be swapped", at, st.Mode&0o7777)
	}
	return nil
}

func checkExecutable(st *unix.Stat_t, at string) error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%s: not a regular file", at)
	case st.Uid != 0:
		return fmt.Errorf("%s: owned by uid %d, not root", at, st.Uid)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("%s: writable by others (mode %04o)", at, st.Mode&0o7777)
	case st.Mode&0o111 == 0:
		return fmt.Errorf("%s: not executable (mode %04o)", at, st.Mode&0o7777)
	}
	return nil
}
