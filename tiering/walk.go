package tiering

import (
	"errors"
	"slices"

	"golang.org/x/sys/unix"
)

// walkTier visits every entry of t's copy of the namespace, depth first, a directory before what it holds, without
// following a symlink or touching an atime (a walk must not show). visit
// gets the open parent directory, the parent's components, the entry's
// name and its lstat; it returns true to end the walk. An entry gone
// between the listing and its stat is skipped: the caller checks what it
// found under its own lock.
func walkTier(t *Tier, visit func(dir int, comps []string, name string, st *unix.Stat_t) (stop bool)) error {
	const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_NOATIME | unix.O_CLOEXEC
	stopped := false
	var walk func(fd int, comps []string) error
	walk = func(fd int, comps []string) error {
		names, err := readNames(fd)
		if err != nil {
			return err
		}
		for _, n := range names {
			if stopped {
				return nil
			}
			if hidden(comps, n) {
				continue
			}
			var st unix.Stat_t
			if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				return err
			}
			if visit(fd, comps, n, &st) {
				stopped = true
				return nil
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				continue
			}
			sub, err := unix.Openat(fd, n, dirFlags, 0)
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				continue // renamed or replaced since the stat
			}
			if err != nil {
				return err
			}
			err = walk(sub, append(slices.Clone(comps), n))
			unix.Close(sub)
			if err != nil {
				return err
			}
		}
		return nil
	}
	root, err := unix.Openat(t.root, ".", dirFlags, 0)
	if err != nil {
		return err
	}
	defer unix.Close(root)
	return walk(root, nil)
}
