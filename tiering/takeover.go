package tiering

import (
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
	return walkTier(t, func(dir int, comps []string, n string, st *unix.Stat_t) bool {
		var ino uint64
		if ft := st.Mode & unix.S_IFMT; ft == unix.S_IFREG || ft == unix.S_IFDIR {
			ino, _ = getIno(dir, n) // 0 when it has none yet
		} else {
			ino = derivedIno(t.Index, st.Ino)
		}
		if _, seen := idx[ino]; ino != 0 && !seen {
			idx[ino] = append(slices.Clone(comps), n)
		}
		return false
	})
}
