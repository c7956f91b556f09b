package tiering

import (
	"errors"
	"slices"

	"golang.org/x/sys/unix"
)

// InoIndex maps every object's tierfs inode number to a name it has in
// the mount: for a daemon that takes over a live FUSE connection, whose
// kernel holds node IDs (inode numbers) a predecessor handed out and
// that this daemon has never looked up. One walk of every tier's copy
// of the namespace (directories read without touching their atime), under
// the namespace lock held shared; objects without a number yet are left
// out (the kernel cannot hold one). The names are hints: whoever acts on
// one checks the number it finds there.
func (s *Store) InoIndex() (map[uint64][]string, error) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	idx := map[uint64][]string{}
	for _, t := range s.tiers {
		if err := indexTier(t, idx); err != nil {
			return nil, err
		}
	}
	return idx, nil
}

func indexTier(t *Tier, idx map[uint64][]string) error {
	const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_NOATIME | unix.O_CLOEXEC
	var walk func(fd int, comps []string) error
	walk = func(fd int, comps []string) error {
		names, err := readNames(fd)
		if err != nil {
			return err
		}
		for _, n := range names {
			if hidden(comps, n) {
				continue
			}
			var st unix.Stat_t
			if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				continue
			}
			ft := st.Mode & unix.S_IFMT
			var ino uint64
			if ft == unix.S_IFREG || ft == unix.S_IFDIR {
				if ino, err = getIno(fd, n); err != nil {
					ino = 0
				}
			} else {
				ino = derivedIno(t.Index, st.Ino)
			}
			path := append(slices.Clone(comps), n)
			if _, seen := idx[ino]; ino != 0 && !seen {
				idx[ino] = path
			}
			if ft == unix.S_IFDIR {
				sub, err := unix.Openat(fd, n, dirFlags, 0)
				if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
					continue
				}
				if err != nil {
					return err
				}
				err = walk(sub, path)
				unix.Close(sub)
				if err != nil {
					return err
				}
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
