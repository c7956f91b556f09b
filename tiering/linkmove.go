package tiering

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tierfs/tierfs/pmem"
	"golang.org/x/sys/unix"
)

// Moving a file with several names (hard links). Its names are all on the
// tier that holds it (Link makes a new name there), in any directories,
// and all move at once: a crash leaves every name on the source or every
// name on the destination, never some of each (docs/design.md has the
// crash analysis).
//
// tierfs keeps no link table: the names are found by walking the source
// tier's copy of the namespace for the file's backing inode, once without
// any lock while the data is copied, and checked at the commit (the
// number of names must be the inode's link count, each name still the
// inode); only when a link, unlink or rename came in between is the walk
// done again, under the namespace lock. Kafka never hard-links, so the
// walk is rare, and a table kept by every link, unlink and directory
// rename would cost every file.
//
// The commit, under Store.ns and the file's write lock, after the staged
// copy is complete and fsynced (steps 1–3 of a move):
//
//  1. A journal record (journal.go) names the file's tierfs inode number,
//     every name, both tiers, and the backing inode of the source and of
//     the staged copy.
//  2. The staged copy takes the first name on the destination (rename),
//     each other name is linked to it (linkat), and the destination
//     directories are fsynced.
//  3. The source is marked superseded by the destination and fsynced:
//     this is the commit point. A marker alone could not be: it is on
//     every name of the source, and a crash that left some names on the
//     destination would have recovery's "lone marked copy" rule keep the
//     others on the source, two files where there was one. With the
//     record it only says which way recovery goes.
//  4. Every handle's backing is swapped to the copy.
//  5. Every source name is unlinked, their directories fsynced.
//  6. The record is removed.
//
// Recovery (replayLinkMove) with a record: if a source name still holds
// the source inode unmarked, the commit did not happen and the copies of
// the staged inode on the destination go; otherwise it did, and the
// names of the source inode that are left go. Either way it removes only
// a copy that no handle could have written after the commit point, known
// by its backing inode, so a record that outlives its move (one that
// could not be removed, replayed later) removes nothing live.

// linkMoveRecord is the journal's record of a move of a file with
// several names.
type linkMoveRecord struct {
	// Ino is the file's tierfs inode number.
	Ino uint64 `json:"ino"`
	// Names are every name of the file, as components from the mount's
	// root.
	Names [][]string `json:"names"`
	// Src and Dest are the tiers' names; SrcInode and DestInode the
	// backing inode numbers of the source and of the staged copy.
	Src       string `json:"src"`
	Dest      string `json:"dest"`
	SrcInode  uint64 `json:"src_inode"`
	DestInode uint64 `json:"dest_inode"`
}

func (r *linkMoveRecord) valid() bool {
	if r.Ino == 0 || len(r.Names) == 0 || r.Src == "" || r.Dest == "" || r.Src == r.Dest {
		return false
	}
	for _, n := range r.Names {
		if len(n) == 0 {
			return false
		}
	}
	return true
}

// findNames walks t's copy of the namespace for the names of the regular
// file with backing inode (dev, ino), and stops once it has want of
// them. It reads directories without touching their atime: a move must
// not show. It takes no lock; what it finds is checked (checkNames).
func findNames(t *Tier, dev, ino uint64, want int) ([][]string, error) {
	var out [][]string
	err := walkTier(t, func(_ int, comps []string, name string, st *unix.Stat_t) bool {
		if st.Mode&unix.S_IFMT == unix.S_IFREG && st.Dev == dev && st.Ino == ino {
			out = append(out, append(slices.Clone(comps), name))
		}
		return len(out) >= want
	})
	if err != nil {
		return nil, fmt.Errorf("tier %s: find the names of a file with several: %w", t.Name, err)
	}
	slices.SortFunc(out, slices.Compare) // in the record in one order
	return out, nil
}

// checkNames locates each of names, which must be all the names of the
// file f whose backing on t st describes: one copy, on t, that object,
// with f's inode number, and as many names as it has links. It returns
// each name's copy. Caller holds ns exclusively.
func (s *Store) checkNames(f *File, t *Tier, st *unix.Stat_t, names [][]string) (locs, error) {
	if len(names) != int(st.Nlink) {
		return nil, fmt.Errorf("file has %d names, %d found on tier %s: %w", st.Nlink, len(names), t.Name, unix.ESTALE)
	}
	seen := map[string]bool{}
	var out locs
	for _, n := range names {
		key := strings.Join(n, "/")
		if seen[key] {
			out.close()
			return nil, fmt.Errorf("name %q found twice: %w", key, unix.ESTALE)
		}
		seen[key] = true
		ls, err := s.locate(n[:len(n)-1], n[len(n)-1])
		if err != nil {
			out.close()
			return nil, err
		}
		if len(ls) != 1 || ls[0].tier != t || ls[0].st.Dev != st.Dev || ls[0].st.Ino != st.Ino {
			ls.close()
			out.close()
			return nil, fmt.Errorf("name %q is not the file on tier %s: %w", key, t.Name, unix.ESTALE)
		}
		if ino, err := getIno(ls[0].dirfd, ls[0].name); err != nil || ino != f.ino {
			ls.close()
			out.close()
			return nil, fmt.Errorf("name %q is another file now: %w", key, unix.ESTALE)
		}
		out = append(out, ls[0])
	}
	return out, nil
}

// linkNames finds the names of the file whose backing st describes on t,
// before a move's commit takes the namespace lock: nil if the walk
// failed (the commit walks again).
func (s *Store) linkNames(t *Tier, st *unix.Stat_t) [][]string {
	names, err := findNames(t, st.Dev, st.Ino, int(st.Nlink))
	if err != nil {
		s.log.Debug().Err(err).Msg("names of a file with several: the commit walks again")
		return nil
	}
	return names
}

// keptTimes are the times of the directories whose entries a move
// changes, and of their parents (a directory it makes changes its
// parent's), on one tier, to be put back: a move must not show in any
// directory's times. A directory the tier lacks gets the times the mount
// shows for it once it is made.
type keptTimes struct {
	t      *Tier
	dirs   [][]string
	times  [][]unix.Timespec
	ctimes []unix.Timespec // the ctime each showed (ctime.go)
	seen   map[string]bool
}

// keepTimes notes dir and its parents up to the root in k. Caller holds
// ns.
func (s *Store) keepTimes(k *keptTimes, dir []string) {
	if k.seen == nil {
		k.seen = map[string]bool{}
	}
	for i := 0; i <= len(dir); i++ {
		d := dir[:i]
		key := strings.Join(d, "/")
		if k.seen[key] {
			continue
		}
		k.seen[key] = true
		var ts []unix.Timespec
		var ct unix.Timespec
		if fd, err := k.t.walk(d, nil); err == nil {
			ts, ct = dirTimes(fd), s.shownCtimeFd(k.t, fd)
			unix.Close(fd)
		} else {
			ts, ct = s.shownDirTimes(d), s.shownDirCtime(d)
		}
		k.dirs = append(k.dirs, slices.Clone(d))
		k.times = append(k.times, ts)
		k.ctimes = append(k.ctimes, ct)
	}
}

// restoreTimes puts the noted times back on the directories of k's tier
// that changed (an entry left or came, a copy was made), and keeps the
// ctime each showed. Caller holds ns.
func (s *Store) restoreTimes(k *keptTimes) {
	for i, d := range k.dirs {
		fd, err := k.t.walk(d, nil)
		if err != nil {
			continue
		}
		if now := dirTimes(fd); now == nil || k.times[i] == nil || now[0] != k.times[i][0] || now[1] != k.times[i][1] {
			setDirTimes(fd, k.times[i])
			s.ct.keep(k.t, fd, k.ctimes[i])
		}
		unix.Close(fd)
	}
}

// commitLinked commits the move m of a file with several names: steps 1
// to 6 above. The staged copy is complete and fsynced (the move's seal),
// m.st is the source's stat, m.names what a walk found of its names (nil:
// none yet). committed says whether the destination is the file now (an
// error comes only without it: what fails after the commit point is
// logged and left to settleJournal). The source's descriptors are closed
// once the locks are dropped (m.release). Caller holds ns and f.mu
// exclusively.
//
// Unlike a one-name move's, this commit fsyncs under ns: the record must
// be durable before a name is made on the destination (it is what tells
// recovery which copies go), and from the first name made to the marker
// the name is on two tiers unmarked, which a lookup without the lock
// would answer EIO. Kafka makes no hard links.
func (m *move) commitLinked() (committed bool, err error) {
	s, f, src, dest := m.s, m.f, m.src, m.dest
	sfd, staging, dfd, st, names := m.sfd, m.staging, m.dfd, &m.st, m.names
	ls, err := s.checkNames(f, src, st, names)
	if err != nil {
		// A link, unlink or rename since the walk (or none yet): walk
		// again, under the lock this time.
		if names, err = findNames(src, st.Dev, st.Ino, int(st.Nlink)); err != nil {
			return false, err
		}
		if ls, err = s.checkNames(f, src, st, names); err != nil {
			if len(names) < int(st.Nlink) {
				// A name outside the tier's namespace (made behind
				// tierfs's back): it could not move with the others.
				return false, fmt.Errorf("file has %d names, %d of them in tier %s's namespace: %w", st.Nlink, len(names), src.Name, unix.EMLINK)
			}
			return false, err
		}
	}
	defer ls.close()
	var staged unix.Stat_t
	if err := unix.Fstat(dfd, &staged); err != nil {
		return false, err
	}

	// The directories keep their times; those the destination lacks are
	// made there (with the metadata of the copy the mount shows).
	srcTimes, destTimes := &keptTimes{t: src}, &keptTimes{t: dest}
	defer s.restoreTimes(destTimes)
	defer s.restoreTimes(srcTimes)
	pfds := make([]int, len(names))
	defer func() {
		for _, fd := range pfds {
			closeQuiet(fd)
		}
	}()
	for i := range pfds {
		pfds[i] = -1
	}
	for i, n := range names {
		dir := n[:len(n)-1]
		s.keepTimes(srcTimes, dir)
		s.keepTimes(destTimes, dir)
		if pfds[i], err = dest.walk(dir, s.dirMetaFor(dir)); err != nil {
			return false, err
		}
	}

	// Step 1: the record.
	if err := s.settleJournal(); err != nil {
		return false, err
	}
	rec := &linkMoveRecord{Ino: f.ino, Names: names, Src: src.Name, Dest: dest.Name, SrcInode: st.Ino, DestInode: staged.Ino}
	jt, err := s.writeJournal(&renameRecord{LinkMove: rec})
	if err != nil {
		return false, err
	}
	failPoint("link-move:journaled")

	// Step 2: every name on dest. Until the commit point an error takes
	// back the names made there.
	made := 0
	undo := func(cause error) (bool, error) {
		left := false
		for i := range made {
			if err := unix.Unlinkat(pfds[i], names[i][len(names[i])-1], 0); err != nil && !errors.Is(err, unix.ENOENT) {
				left = true
			}
		}
		for i := range made {
			if fsyncDirAt(pfds[i]) != nil {
				left = true
			}
		}
		if left {
			// The names left on dest answer EIO until the next journaled
			// operation, or the next mount, removes them (the record
			// says the move did not commit).
			s.log.Error().Err(cause).Str("tier", dest.Name).Uint64("ino", f.ino).Msg("move of a file with several names failed and not every name it made could be removed")
			s.journalPending = rec
			s.journalStale = append(s.journalStale, jt)
		} else {
			s.clearJournal(jt)
		}
		return false, cause
	}
	for i, n := range names {
		name := n[len(n)-1]
		if i == 0 {
			// Never over anything: the name is the source's alone.
			err = unix.Renameat2(sfd, staging, pfds[i], name, unix.RENAME_NOREPLACE)
			if errors.Is(err, unix.EINVAL) {
				err = unix.Renameat(sfd, staging, pfds[i], name) // no RENAME_NOREPLACE here
			}
		} else {
			err = unix.Linkat(dfd, "", pfds[i], name, unix.AT_EMPTY_PATH)
		}
		if err != nil {
			return undo(err)
		}
		made++
		if i == 0 {
			failPoint("link-move:linked")
		}
	}
	for _, fd := range pfds {
		if err := fsyncDirAt(fd); err != nil {
			return undo(err)
		}
	}
	_ = fsyncDirAt(sfd)

	// Step 3: the commit point.
	if err := unix.Fsetxattr(f.fd, xattrSuperseded, []byte(dest.Name), 0); err != nil {
		return undo(err)
	}
	if err := unix.Fsync(f.fd); err != nil {
		if rerr := unix.Fremovexattr(f.fd, xattrSuperseded); rerr == nil {
			return undo(err)
		}
		// The marker stands, so a crash finds the move committed: it is.
		s.log.Error().Err(err).Str("tier", src.Name).Uint64("ino", f.ino).Msg("fsync of a moved file's marker failed; the move goes on")
	}
	failPoint("link-move:marked")

	// Step 4.
	s.ct.keep(dest, dfd, m.shown) // the copy shows the source's ctime
	old, oldPM := s.swapTo(f, src, dest, dfd, true)
	failPoint("link-move:swapped")
	m.release = append(m.release, func() {
		if oldPM != nil {
			oldPM.Close()
		}
		unix.Close(old)
	})

	// Step 5: the source's names go (a pool file with several names is
	// not the pool's to take back: its space is freed once the move
	// closes it).
	left := false
	for i := range ls {
		if err := unix.Unlinkat(ls[i].dirfd, ls[i].name, 0); err != nil {
			s.log.Error().Err(err).Str("tier", src.Name).Str("name", ls[i].name).Msg("unlink a moved source's name; the next journaled operation or mount removes it")
			left = true
			continue
		}
		if i == 0 {
			failPoint("link-move:unlinked")
		}
	}
	for i := range ls {
		_ = fsyncDirAt(ls[i].dirfd)
	}

	// Step 6.
	if left {
		// Marked, the names left are hidden (dropSuperseded) until they go.
		s.journalPending = rec
		s.journalStale = append(s.journalStale, jt)
	} else {
		s.clearJournal(jt)
	}
	return true, nil
}

// swapTo makes dfd, the committed copy on dest, the backing of every
// handle of f, and returns the old backing. named says whether f is
// counted among its tier's files (an open file with no name left is not).
// Caller holds f.mu exclusively.
func (s *Store) swapTo(f *File, src, dest *Tier, dfd int, named bool) (old int, oldPM *pmem.File) {
	old, oldPM = f.fd, f.pm
	f.fd, f.pm = dfd, nil
	f.tier = dest
	f.readOnly = nil
	s.forgetPlain(f.ino) // another backing
	var nst unix.Stat_t
	_ = unix.Fstat(dfd, &nst)
	f.acctMu.Lock()
	src.addUsed(-f.blocks)
	f.blocks = usedBytes(&nst)
	f.size = nst.Size
	dest.addUsed(f.blocks)
	f.acctMu.Unlock()
	if named {
		src.files.Add(-1)
		dest.files.Add(1)
	}
	return old, oldPM
}

// replayLinkMove settles an interrupted move of a file with several
// names: at mount, before the scan, or while mounted, when a move left
// copies it could not remove (settleJournal). Caller holds ns
// exclusively, or is recovery.
func (s *Store) replayLinkMove(rec *linkMoveRecord) error {
	src, serr := s.TierByName(rec.Src)
	dest, derr := s.TierByName(rec.Dest)
	if err := errors.Join(serr, derr); err != nil {
		return fmt.Errorf("a move of a file with several names (inode %d) was interrupted between tiers %s and %s, and %w: configure the tier again to finish it", rec.Ino, rec.Src, rec.Dest, err)
	}
	var srcCopies, destCopies locs
	defer srcCopies.close()
	defer destCopies.close()
	for _, n := range rec.Names {
		dir, name := n[:len(n)-1], n[len(n)-1]
		for _, c := range []struct {
			t      *Tier
			inode  uint64
			copies *locs
		}{{src, rec.SrcInode, &srcCopies}, {dest, rec.DestInode, &destCopies}} {
			fd, err := c.t.walk(dir, nil)
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				continue
			}
			if err != nil {
				return err
			}
			var st unix.Stat_t
			err = unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
			if err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Ino == c.inode {
				if ino, ierr := getIno(fd, name); ierr == nil && ino == rec.Ino {
					*c.copies = append(*c.copies, loc{tier: c.t, dirfd: fd, name: name, st: st})
					continue
				}
			}
			unix.Close(fd)
			if err != nil && !errors.Is(err, unix.ENOENT) {
				return err
			}
		}
	}
	// Committed unless the source is still there unmarked.
	committed := true
	if len(srcCopies) > 0 {
		winner, ok := supersededBy(&srcCopies[0], make([]byte, 256))
		committed = ok && winner == rec.Dest
	}
	gone, from := destCopies, dest
	if committed {
		gone, from = srcCopies, src
	}
	if len(gone) == 0 {
		return nil
	}
	s.log.Info().Uint64("ino", rec.Ino).Str("from", rec.Src).Str("to", rec.Dest).Bool("committed", committed).Int("names", len(gone)).Str("removing_from", from.Name).
		Msg("recovery: settling an interrupted move of a file with several names")
	for i := range gone {
		if err := unix.Unlinkat(gone[i].dirfd, gone[i].name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("tier %s: remove %s, a copy an interrupted move left: %w", from.Name, gone[i].name, err)
		}
	}
	for i := range gone {
		if err := fsyncDirAt(gone[i].dirfd); err != nil {
			return err
		}
	}
	return nil
}
