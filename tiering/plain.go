package tiering

import "github.com/tierfs/tierfs/pmem"

// What attrOf remembers of plain files (Store.plain): a regular file whose
// size is whole pages may be a pmem file, whose size is in an attribute,
// and finding out costs a getxattr. Most such files are plain (indexes,
// segments off the pmem tier, files on tiers without a pool), and only
// these ways give a file the attribute:
//
//   - a pool slot renamed in at create (takeSlot): a new inode number;
//   - a pmem.File on an open file (Sync, Truncate and growth write the
//     attribute): only on a file mapped at open, which had it already, or
//     made from a slot;
//   - a rename that puts another file under a name: another inode number;
//   - anything done to the tiers while tierfs is not running.
//
// Through the mount user.tierfs.* cannot be set or removed (EPERM), and a
// move's copy never carries the attribute. Still, an entry holds only for
// the backing it was learnt on (tier, device, inode: a move or a
// replacement misses), nothing is remembered across a mount, and
// forgetPlain runs at every step above and wherever a backing changes:
// create, a slot taken, a pmem.File attached or released, a move's
// commit, rename (both names), unlink.

// plainKey names the backing an entry was learnt on.
type plainKey struct {
	tier     int
	dev, ino uint64
}

// maxPlain bounds the entries: past it the map starts again empty (only a
// cost, never a wrong answer).
const maxPlain = 1 << 20

func plainKeyOf(l *loc) plainKey {
	return plainKey{tier: l.tier.Index, dev: l.st.Dev, ino: l.st.Ino}
}

// forgetPlainLocked drops what is known of ino. Caller holds openMu.
func (s *Store) forgetPlainLocked(ino uint64) {
	delete(s.plain, ino)
	s.plainGen++
}

// forgetPlain drops what is known of ino.
func (s *Store) forgetPlain(ino uint64) {
	s.openMu.Lock()
	s.forgetPlainLocked(ino)
	s.openMu.Unlock()
}

// forgetPlainAt drops what is known of the regular file at l, if it could
// be known: its inode number costs a getxattr, so files that cannot be pmem
// files are skipped.
func (s *Store) forgetPlainAt(l *loc) {
	if !mayBePMem(&l.st) {
		return
	}
	if ino, err := getIno(l.dirfd, l.name); err == nil {
		s.forgetPlain(ino)
	}
}

// rememberPlain records that ino's backing at l has no size attribute, if
// nothing was forgotten since gen was read (a change in between could be
// the one that gave it the attribute).
func (s *Store) rememberPlain(ino uint64, l *loc, gen uint64) {
	s.openMu.Lock()
	defer s.openMu.Unlock()
	if s.plainGen != gen {
		return
	}
	if len(s.plain) >= maxPlain {
		s.plain = map[uint64]plainKey{}
	}
	s.plain[ino] = plainKeyOf(l)
}

// readPMemSize reads the logical size attribute of the file at l (not
// open here): size and ok as pmemSizeAt, and absent when the file has no
// attribute at all, a plain file.
func readPMemSize(l *loc) (size int64, ok, absent bool) {
	size, has, err := pmem.SizeAt(procPath(l.dirfd, l.name))
	switch {
	case err != nil:
		return 0, false, false
	case !has:
		return 0, false, true
	case size > l.st.Size:
		return 0, false, false
	}
	return size, true, false
}

// pmemAttrSize is the size a getattr shows for the file ino at l, whose
// stat says it may be a pmem file: the live logical size while open as
// one, else the durable one from its attribute, else st_size. Caller
// holds ns (either mode).
func (s *Store) pmemAttrSize(l *loc, ino uint64) int64 {
	key := plainKeyOf(l)
	s.openMu.Lock()
	f := s.open[ino]
	known, gen := s.plain[ino] == key, s.plainGen
	s.openMu.Unlock()
	if f != nil {
		f.mu.RLock()
		size, live := int64(0), false
		if f.tier == l.tier {
			size, live = f.liveSize()
		}
		f.mu.RUnlock()
		if live {
			return size
		}
	}
	if known {
		return l.st.Size
	}
	s.sizeXattrReads.Add(1)
	size, ok, absent := readPMemSize(l)
	if ok {
		return size
	}
	if absent {
		s.rememberPlain(ino, l, gen)
	}
	return l.st.Size
}
