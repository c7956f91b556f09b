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
// done again, with the names held. Kafka never hard-links, so the
// walk is rare, and a table kept by every link, unlink and directory
// rename would cost every file.
//
// The commit, after the staged copy is complete and fsynced and the file
// sealed (steps 1–3 of a move), holding the names (Store.names: no
// unlink, rename or link meanwhile) and taking ns only where marked:
//
//  1. A journal record (journal.go) names the file's tierfs inode number,
//     every name, both tiers, and the backing inode of the source and of
//     the staged copy.
//  2. Under ns: each name is linked to the staged copy on the
//     destination (linkat, never over anything), which lookups skip from
//     here to step 4 (Store.pending). Then the destination directories
//     are fsynced.
//  3. The source is marked superseded by the destination (under ns, with
//     step 4) and fsynced (after): this is the commit point; the file
//     stays sealed until it is durable. A marker alone could not be: it
//     is on every name of the source, and a crash that left some names on
//     the destination would have recovery's "lone marked copy" rule keep
//     the others on the source, two files where there was one. With the
//     record it only says which way recovery goes.
//  4. Under ns: every handle's backing is swapped to the copy, whose
//     staging name goes.
//  5. Under ns: every source name is unlinked. Then their directories
//     are fsynced.
//  6. The record is removed.
//
// A change the seal did not see (a truncate, chmod or xattr by name,
// which hold ns shared) found at step 2 or 4 takes back the names made
// and has the move seal again.
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
// each name's copy. Caller holds ns.
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
// to 6 above. The staged copy is complete and fsynced, and the file
// sealed (the move's seal); m.st is the source's stat, m.names what a
// walk found of its names (nil: none yet). again says the file changed
// since the seal: seal again. An error comes only without the commit:
// what fails after the commit point is logged and left to settleJournal.
// The source's descriptors are closed once the locks are dropped
// (m.release). Caller holds no lock.
//
// The names are held (Store.names, exclusively) throughout: no unlink,
// rename or link can change them, nor write the journal, so the record
// and every fsync are written with ns free. ns is taken three times, for
// no fsync: to make the names on the destination (which lookups skip
// until the swap: pendingLinks, so that the name on two tiers unmarked
// never answers EIO), to mark the source and swap (the marker's fsync,
// the commit point, follows with the file still sealed), and to unlink
// the source's names.
func (m *move) commitLinked() (again bool, err error) {
	s, f := m.s, m.f
	s.names.Lock()
	defer s.names.Unlock()
	if m.changed() {
		return true, nil
	}
	ls, err := m.linkedNames()
	if err != nil {
		return false, err
	}
	defer ls.close()
	var staged unix.Stat_t
	if err := unix.Fstat(m.dfd, &staged); err != nil {
		return false, err
	}

	// Step 1: the record.
	if err := s.settleJournal(); err != nil {
		return false, err
	}
	c := &linkCommit{m: m, names: m.names, pfds: make([]int, len(m.names)),
		pending: &pendingLink{t: m.dest, dev: staged.Dev, ino: staged.Ino},
		rec:     &linkMoveRecord{Ino: f.ino, Names: m.names, Src: m.src.Name, Dest: m.dest.Name, SrcInode: m.st.Ino, DestInode: staged.Ino}}
	for i := range c.pfds {
		c.pfds[i] = -1
	}
	defer c.close()
	if c.jt, err = s.writeJournal(&renameRecord{LinkMove: c.rec}); err != nil {
		return false, err
	}
	failPoint("link-move:journaled")

	// Step 2: every name on dest, then durable. Until the commit point
	// an error (or a change) takes back the names made there.
	if again, err := c.makeNames(); again || err != nil {
		return c.undo(again, err)
	}
	for _, fd := range c.pfds {
		if err := fsyncDirAt(fd); err != nil {
			return c.undo(false, err)
		}
	}
	failPoint("link-move:durable")

	// Steps 3 and 4: the marker, and the swap; the marker's fsync, the
	// commit point, before the file is unsealed.
	if again, err := c.markAndSwap(); again || err != nil {
		return c.undo(again, err)
	}
	failPoint("link-move:swapped")
	if err := unix.Fsync(m.srcfd); err != nil {
		// The file is the destination's now; only a power cut before
		// the marker is on disk would take it back to the source.
		s.log.Error().Err(err).Str("tier", m.src.Name).Uint64("ino", f.ino).Msg("fsync of a moved file's marker failed; the move goes on")
	}
	failPoint("link-move:marked")
	m.unseal()

	// Steps 5 and 6.
	c.dropSource(ls)
	return false, nil
}

// linkedNames checks the names the lock-free walk found (m.names), and
// walks again if a link, unlink or rename came in between (or the walk
// failed); with the names held, none can change now. It returns each
// name's copy on the source. Caller holds Store.names exclusively.
func (m *move) linkedNames() (locs, error) {
	s, f, src, st := m.s, m.f, m.src, &m.st
	s.ns.RLock()
	ls, err := s.checkNames(f, src, st, m.names)
	s.ns.RUnlock()
	if err == nil {
		return ls, nil
	}
	names, err := findNames(src, st.Dev, st.Ino, int(st.Nlink))
	if err != nil {
		return nil, err
	}
	s.ns.RLock()
	ls, err = s.checkNames(f, src, st, names)
	s.ns.RUnlock()
	if err != nil {
		if len(names) < int(st.Nlink) {
			// A name outside the tier's namespace (made behind
			// tierfs's back): it could not move with the others.
			return nil, fmt.Errorf("file has %d names, %d of them in tier %s's namespace: %w", st.Nlink, len(names), src.Name, unix.EMLINK)
		}
		return nil, err
	}
	m.names = names
	return ls, nil
}

// changed says whether the file changed since the seal in a way the
// commit must seal again for: written to, truncated, chmodded or given
// xattrs by name, or linked or unlinked behind tierfs's back.
func (m *move) changed() bool {
	f := m.f
	f.mu.Lock()
	defer f.mu.Unlock()
	return m.changedLocked()
}

// changedLocked is changed; caller holds f.mu exclusively.
func (m *move) changedLocked() bool {
	var st unix.Stat_t
	return m.f.changedSinceSeal() || unix.Fstat(m.f.fd, &st) != nil || st.Nlink != m.st.Nlink
}

// unseal lets the file's reads and writes go on.
func (m *move) unseal() {
	f := m.f
	f.mu.Lock()
	if f.sealed != nil {
		close(f.sealed)
		f.sealed = nil
	}
	f.mu.Unlock()
}

// pendingLink is the staged copy of a several-name move, under the
// file's names on the destination before the move's commit point:
// lookups skip it, the source is the file. Guarded by ns (Store.pending).
type pendingLink struct {
	t        *Tier
	dev, ino uint64
}

// dropPending sets aside the copies in ls that a several-name move made
// and has not committed. Caller holds ns.
func (s *Store) dropPending(ls locs) locs {
	if len(s.pending) == 0 {
		return ls
	}
	keep := ls[:0]
	for i := range ls {
		if s.isPending(&ls[i]) {
			closeQuiet(ls[i].dirfd)
			continue
		}
		keep = append(keep, ls[i])
	}
	return keep
}

func (s *Store) isPending(l *loc) bool {
	for _, p := range s.pending {
		if l.tier == p.t && l.st.Dev == p.dev && l.st.Ino == p.ino {
			return true
		}
	}
	return false
}

// linkCommit is a several-name move's commit in progress.
type linkCommit struct {
	m         *move
	names     [][]string
	pfds      []int // the destination's copy of each name's directory
	made      int   // names made on the destination
	pending   *pendingLink
	rec       *linkMoveRecord
	jt        *Tier      // the tier holding the record
	destTimes *keptTimes // the destination directories' times
}

func (c *linkCommit) close() {
	for _, fd := range c.pfds {
		closeQuiet(fd)
	}
}

// makeNames is step 2 but for the fsyncs: the directories the
// destination lacks are made (with the metadata of the copy the mount
// shows), each name linked to the staged copy (its staging name stays
// until the swap, so that a move that must seal again can), and the copy
// set aside from lookups. Takes ns and f.mu.
func (c *linkCommit) makeNames() (again bool, err error) {
	m := c.m
	s, f := m.s, m.f
	s.ns.Lock()
	defer s.ns.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.changedLocked() {
		return true, nil
	}
	// The directories keep their times: a move must not show in them.
	c.destTimes = &keptTimes{t: m.dest}
	defer s.restoreTimes(c.destTimes)
	for i, n := range c.names {
		dir := n[:len(n)-1]
		s.keepTimes(c.destTimes, dir)
		if c.pfds[i], err = m.dest.walk(dir, s.dirMetaFor(dir)); err != nil {
			return false, err
		}
	}
	s.pending = append(s.pending, c.pending)
	for i, n := range c.names {
		// Never over anything: the name is the source's alone.
		if err := unix.Linkat(m.dfd, "", c.pfds[i], n[len(n)-1], unix.AT_EMPTY_PATH); err != nil {
			return false, err
		}
		c.made++
		if i == 0 {
			failPoint("link-move:linked")
		}
	}
	return false, nil
}

// markAndSwap is steps 3 and 4 but for the marker's fsync: nothing
// changed since the seal; the source is marked superseded by the
// destination, the handles swapped to the copy, which lookups see from
// now on, and its staging name goes. Takes ns and f.mu.
func (c *linkCommit) markAndSwap() (again bool, err error) {
	m := c.m
	s, f := m.s, m.f
	s.ns.Lock()
	defer s.ns.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if m.changedLocked() {
		return true, nil
	}
	if err := unix.Fsetxattr(f.fd, xattrSuperseded, []byte(m.dest.Name), 0); err != nil {
		return false, err
	}
	// The copy is the file; with its staging name gone its link count is
	// the file's.
	s.pending = slices.DeleteFunc(s.pending, func(p *pendingLink) bool { return p == c.pending })
	_ = unix.Unlinkat(m.sfd, m.staging, 0)
	s.ct.keep(m.dest, m.dfd, m.shown) // the copy shows the source's ctime
	old, oldPM := s.swapTo(f, m.src, m.dest, m.dfd, true)
	m.committed = true
	m.bytes = m.st.Size
	m.release = append(m.release, func() {
		if oldPM != nil {
			oldPM.Close()
		}
		unix.Close(old)
	})
	return false, nil
}

// undo takes back what a several-name move made on the destination
// before its commit point: the names (lookups skip them meanwhile), then
// the record. A name that cannot go is left to settleJournal (the record
// says the move did not commit) and answers EIO until then.
func (c *linkCommit) undo(again bool, cause error) (bool, error) {
	m := c.m
	s := m.s
	s.ns.Lock()
	s.pending = slices.DeleteFunc(s.pending, func(p *pendingLink) bool { return p == c.pending })
	left := false
	for i := range c.made {
		if err := unix.Unlinkat(c.pfds[i], c.names[i][len(c.names[i])-1], 0); err != nil && !errors.Is(err, unix.ENOENT) {
			left = true
		}
	}
	if c.destTimes != nil {
		s.restoreTimes(c.destTimes)
	}
	s.ns.Unlock()
	for i := range c.made {
		if fsyncDirAt(c.pfds[i]) != nil {
			left = true
		}
	}
	if left {
		s.log.Error().Err(cause).Str("tier", m.dest.Name).Uint64("ino", m.f.ino).Msg("move of a file with several names failed and not every name it made could be removed")
		s.journalPending = c.rec
		s.journalStale = append(s.journalStale, c.jt)
		if again {
			return false, fmt.Errorf("take back the names a move made before it sealed the file again: %w", unix.EIO)
		}
	} else {
		s.clearJournal(c.jt)
	}
	return again, cause
}

// dropSource is steps 5 and 6: the source's names go (their directories
// keep their times), under ns; their directories' fsyncs and the
// record's removal follow without it. A pool file with several names is
// not the pool's to take back: its space is freed once the move closes
// it.
func (c *linkCommit) dropSource(ls locs) {
	m := c.m
	s, src := m.s, m.src
	s.ns.Lock()
	srcTimes := &keptTimes{t: src}
	for _, n := range c.names {
		s.keepTimes(srcTimes, n[:len(n)-1])
	}
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
	s.restoreTimes(srcTimes)
	s.ns.Unlock()
	for i := range ls {
		_ = fsyncDirAt(ls[i].dirfd)
	}
	_ = fsyncDirAt(m.sfd)
	if left {
		// Marked, the names left are hidden (dropSuperseded) until they go.
		s.journalPending = c.rec
		s.journalStale = append(s.journalStale, c.jt)
	} else {
		s.clearJournal(c.jt)
	}
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
