package tiering

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/tierfs/tierfs/pmem"

	"golang.org/x/sys/unix"
)

// An open file whose last name is removed keeps a name of its own in its
// tier's .tierfs/orphans, <tierfs inode number>, instead of living only in
// the daemon's descriptor: a daemon that takes the live mount over
// (Options.TakingOver) adopts it and serves the handles the kernel still
// holds (OpenOrphan). It goes on the last release, or, in a daemon that
// took over and so cannot count the kernel's handles, when the kernel
// forgets the node (Forgotten). A mount that is not a takeover removes
// what is left: nobody can open those files any more. The name is only
// for a successor on the same running kernel, never for a power cut, so
// nothing about it is fsynced.
//
// The directory is root's alone, under the tier's .tierfs; still, a name
// in it is trusted only as a regular file (opened without following a
// symlink) with one link whose trusted.tierfs.ino, which only root can
// write, is the number it is named by. Anything else is left alone.
const orphanDir = "orphans"

// orphan is a file with no name left in the mount, kept in its tier's
// orphan directory. Guarded by Store.openMu.
type orphan struct {
	tier     *Tier
	dev, ino uint64 // of the backing
	// blocks is what it counts for on its tier while no File holds it
	// (a File counts its own share while open).
	blocks int64
	// forgotten: the kernel has let go of the node (a daemon that took
	// over removes it once nothing here holds it open either).
	forgotten bool
}

func orphanName(ino uint64) string { return strconv.FormatUint(ino, 10) }

// openOrphanDir makes and opens the tier's orphan directory: only a
// directory that is root's (ours) and open to no one else is used.
func (t *Tier) openOrphanDir() error {
	if err := unix.Mkdirat(t.meta, orphanDir, 0o700); errors.Is(err, unix.EROFS) {
		return nil // nothing can be unlinked there either
	} else if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("mkdir %s: %w", orphanDir, err)
	}
	fd, err := unix.Openat(t.meta, orphanDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", orphanDir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return err
	}
	if st.Uid != uint32(os.Geteuid()) {
		unix.Close(fd)
		return fmt.Errorf("%s/%s/%s belongs to uid %d, not to tierfs's user: remove it (tierfs makes it again)", t.Path, metaDir, orphanDir, st.Uid)
	}
	if st.Mode&0o077 != 0 {
		if err := unix.Fchmod(fd, 0o700); err != nil && !errors.Is(err, unix.EROFS) {
			unix.Close(fd)
			return err
		}
	}
	t.orphans = fd
	return nil
}

// orphanAt checks the orphan directory's entry name: a regular file with
// one link that carries the inode number it is named by. It returns the
// entry's stat and number; ok is false for anything else.
func orphanAt(t *Tier, name string) (st unix.Stat_t, ino uint64, ok bool) {
	n, err := strconv.ParseUint(name, 10, 64)
	if err != nil || n == 0 || orphanName(n) != name {
		return st, 0, false
	}
	fd, err := unix.Openat(t.orphans, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, 0, false
	}
	defer unix.Close(fd)
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		return st, 0, false
	}
	// Through /proc: an O_PATH descriptor takes no fgetxattr.
	var b [8]byte
	if k, err := unix.Getxattr(fdPath(fd), xattrIno, b[:]); err != nil || k != 8 {
		return st, 0, false
	}
	if binary.LittleEndian.Uint64(b[:]) != n {
		return st, 0, false
	}
	return st, n, true
}

// settleOrphans runs at mount, before the scan: a fresh mount removes the
// orphans a dead daemon left (their files can no longer be opened); a
// daemon that takes over keeps them for the kernel's handles and counts
// them on their tiers.
func (s *Store) settleOrphans(maxIno *uint64) error {
	for _, t := range s.tiers {
		if t.orphans < 0 {
			continue
		}
		names, err := readNamesQuiet(t.orphans)
		if err != nil {
			return fmt.Errorf("tier %s: read %s: %w", t.Name, orphanDir, err)
		}
		for _, n := range names {
			st, ino, ok := orphanAt(t, n)
			if !ok {
				s.log.Warn().Str("tier", t.Name).Str("name", n).Msg("an entry in .tierfs/orphans that tierfs did not make (not a regular file with one link and its number): left alone")
				continue
			}
			*maxIno = max(*maxIno, ino)
			if !s.opts.TakingOver {
				if err := unix.Unlinkat(t.orphans, n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("tier %s: remove an orphan left by a dead daemon: %w", t.Name, err)
				}
				s.log.Info().Str("tier", t.Name).Uint64("ino", ino).Msg("recovery: removed an open file with no name left that its daemon's death closed")
				continue
			}
			if prev := s.orphans[ino]; prev != nil {
				// A spill killed between the copy's rename and the
				// source's removal: both hold the same bytes (the file
				// was sealed), the one first found is kept.
				_ = unix.Unlinkat(t.orphans, n, 0)
				continue
			}
			b := usedBytes(&st)
			t.addUsed(b)
			s.orphans[ino] = &orphan{tier: t, dev: st.Dev, ino: st.Ino, blocks: b}
		}
	}
	return nil
}

// orphanLocked keeps the file whose last name l is being removed under
// a name in its tier's orphan directory instead, if it is open here (or,
// in a daemon that took over, if the kernel may hold it). done says it
// did; else the caller removes the name as before. Caller holds ns
// exclusively. The rename is made under openMu, so that the file cannot
// be released between the look at the open table and the marking.
func (s *Store) orphanLocked(l *loc, ino uint64) (done bool) {
	t := l.tier
	s.openMu.Lock()
	defer s.openMu.Unlock()
	f := s.open[ino]
	if t.orphans < 0 || f != nil && f.tier != t || f == nil && !s.opts.TakingOver {
		return false
	}
	err := unix.Renameat2(l.dirfd, l.name, t.orphans, orphanName(ino), unix.RENAME_NOREPLACE)
	if err != nil {
		s.log.Warn().Err(err).Str("tier", t.Name).Uint64("ino", ino).Msg("cannot keep a name for an open file whose last name goes: a daemon that takes the mount over will answer ESTALE for it")
		return false
	}
	o := &orphan{tier: t, dev: l.st.Dev, ino: l.st.Ino}
	if f == nil {
		o.blocks = usedBytes(&l.st)
	} else {
		f.unlinked = true
		f.path = nil
		f.orphan.Store(true)
	}
	s.orphans[ino] = o
	return true
}

// removeOrphan removes the orphan's name (what is there must be its
// backing); a pool file goes back to its pool, and is recycled at once
// unless the caller takes that on (later: it still has it open).
func (s *Store) removeOrphan(o *orphan, ino uint64, recycleNow bool) *pmem.Detached {
	t, name := o.tier, orphanName(ino)
	var st unix.Stat_t
	if err := unix.Fstatat(t.orphans, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Dev != o.dev || st.Ino != o.ino {
		s.log.Warn().Err(err).Str("tier", t.Name).Uint64("ino", ino).Msg("an orphan's name is not its file any more: left alone")
		return nil
	}
	if t.isPoolFile(t.orphans, name, &st) {
		if d, err := t.pool.Detach(t.orphans, name, &st); err == nil {
			if recycleNow {
				s.recycle(t, d)
				return nil
			}
			return d
		}
	}
	if err := unix.Unlinkat(t.orphans, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		s.log.Warn().Err(err).Str("tier", t.Name).Uint64("ino", ino).Msg("remove an orphan")
	}
	return nil
}

// Orphan reports whether inode number ino is a file with no name left
// that this store keeps for the kernel.
func (s *Store) Orphan(ino uint64) bool {
	s.openMu.Lock()
	defer s.openMu.Unlock()
	return s.orphans[ino] != nil
}

// OpenOrphan opens the file with no name left whose inode number is ino:
// the kernel holds a handle on it that a dead daemon gave (a takeover).
// ENOENT if there is none.
func (s *Store) OpenOrphan(ino uint64, flags int) (*Handle, error) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	s.openMu.Lock()
	if f := s.open[ino]; f != nil && f.unlinked {
		f.refs++
		s.openMu.Unlock()
		return s.orphanHandle(f, flags)
	}
	o := s.orphans[ino]
	s.openMu.Unlock()
	if o == nil {
		return nil, unix.ENOENT
	}
	dfd, err := unix.Dup(o.tier.orphans)
	if err != nil {
		return nil, err
	}
	l := loc{tier: o.tier, dirfd: dfd, name: orphanName(ino)}
	defer closeQuiet(dfd)
	if err := unix.Fstatat(dfd, l.name, &l.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	if l.st.Mode&unix.S_IFMT != unix.S_IFREG || l.st.Dev != o.dev || l.st.Ino != o.ino {
		return nil, fmt.Errorf("orphan %d changed on tier %s behind tierfs: %w", ino, o.tier.Name, unix.ESTALE)
	}
	f, err := s.getFile(&l, ino, nil)
	if err != nil {
		return nil, err
	}
	s.openMu.Lock()
	if !f.unlinked {
		f.unlinked = true
		f.path = nil
		f.orphan.Store(true)
		// The File counts the file on its tier from here (getFile took
		// its share from the same backing, which nobody wrote since).
		o.tier.addUsed(usedBytes(&l.st) - o.blocks)
		o.blocks = 0
	}
	s.openMu.Unlock()
	return s.orphanHandle(f, flags)
}

func (s *Store) orphanHandle(f *File, flags int) (*Handle, error) {
	h := &Handle{f: f, flags: flags}
	if flags&unix.O_ACCMODE != unix.O_RDONLY && f.readOnly != nil {
		h.Release()
		return nil, f.readOnly
	}
	return h, nil
}

// OrphanAttr is the attributes of the file with no name left whose inode
// number is ino (a takeover's kernel asks for them).
func (s *Store) OrphanAttr(ino uint64) (Attr, error) {
	h, err := s.OpenOrphan(ino, unix.O_RDONLY)
	if err != nil {
		return Attr{}, err
	}
	defer h.Release()
	return h.Stat()
}

// Forgotten tells the store that the kernel let go of inode number ino
// (a FORGET, in a daemon that took over: it cannot count the kernel's
// handles, so it keeps a file with no name left until then). An orphan
// that nothing here holds open goes now, else with its last release.
func (s *Store) Forgotten(ino uint64) {
	s.openMu.Lock()
	o := s.orphans[ino]
	if o == nil {
		s.openMu.Unlock()
		return
	}
	if s.open[ino] != nil {
		o.forgotten = true
		s.openMu.Unlock()
		return
	}
	delete(s.orphans, ino)
	s.openMu.Unlock()
	s.removeOrphan(o, ino, true)
	o.tier.addUsed(-o.blocks)
}
