package tiering

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Rename flags, as renameat2(2).
const (
	RenameNoReplace = unix.RENAME_NOREPLACE
	RenameExchange  = unix.RENAME_EXCHANGE
)

// Rename moves srcDir/srcName to dstDir/dstName. A file is renamed on its
// tier; a name it replaces on another tier is first marked superseded (or,
// when it cannot carry a durable marker, named in the journal) and removed
// after the rename is durable. A directory is renamed on every tier
// that has a copy, under a journal record that recovery rolls forward.
// commit runs under the namespace lock once the rename is done.
func (s *Store) Rename(srcDir Path, srcName string, dstDir Path, dstName string, flags uint32, commit func()) error {
	if err := renameArgs(dstName, flags); err != nil {
		return err
	}
	over, err := s.renameLocked(srcDir, srcName, dstDir, dstName, flags, commit, true)
	if !over {
		return err
	}
	// Over copies on other tiers that can be marked: the fsyncs go
	// without ns, unless the names changed meanwhile.
	if done, err := s.renameOver(srcDir, srcName, dstDir, dstName, commit); done {
		return err
	}
	_, err = s.renameLocked(srcDir, srcName, dstDir, dstName, flags, commit, false)
	return err
}

// renameLocked is Rename under ns. With tryOver, a file renamed over
// copies on other tiers that can all be marked is left to renameOver:
// over says so, and nothing changed.
func (s *Store) renameLocked(srcDir Path, srcName string, dstDir Path, dstName string, flags uint32, commit func(), tryOver bool) (over bool, err error) {
	s.names.RLock()
	defer s.names.RUnlock()
	s.ns.Lock()
	defer s.ns.Unlock()
	s.nameDrops.Add(1)
	sd, dd, src, dst, err := s.renameLocate(srcDir, srcName, dstDir, dstName)
	if err != nil {
		return false, err
	}
	defer src.close()
	defer dst.close()
	if flags&RenameNoReplace != 0 && len(dst) > 0 {
		return false, unix.EEXIST
	}
	if tryOver && flags == 0 && s.overAnotherTier(src, dst) {
		return true, nil
	}
	if flags&RenameExchange != 0 {
		err = s.renameExchangeLocked(sd, srcName, dd, dstName, src, dst)
	} else {
		err = s.renameReplaceLocked(sd, srcName, dd, dstName, src, dst)
	}
	if err != nil {
		return false, err
	}
	if commit != nil {
		commit()
	}
	return false, nil
}

// overAnotherTier says whether renaming src, a file, over dst replaces
// copies on other tiers than src's, each of which can carry a marker
// and none of which a move has in progress (renameOver). Caller holds
// ns.
func (s *Store) overAnotherTier(src, dst locs) bool {
	if len(src) != 1 || isDir(&src[0].st) {
		return false
	}
	n := 0
	for i := range dst {
		if dst[i].tier == src[0].tier {
			continue
		}
		if !markable(&dst[i].st) || s.moving(&dst[i]) {
			return false
		}
		n++
	}
	return n > 0
}

// renameArgs checks a rename's new name and flags.
func renameArgs(dstName string, flags uint32) error {
	if err := validName(dstName); err != nil {
		return err
	}
	if flags&^uint32(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return unix.EINVAL
	}
	return nil
}

// renameLocate resolves both directories and finds both names' copies
// (none for a target that does not exist); the source must exist. A
// source a move left under either name goes first. Caller holds ns
// exclusively.
func (s *Store) renameLocate(srcDir Path, srcName string, dstDir Path, dstName string) (sd, dd []string, src, dst locs, err error) {
	if sd, err = s.comps(srcDir); err != nil {
		return nil, nil, nil, nil, err
	}
	if dd, err = s.comps(dstDir); err != nil {
		return nil, nil, nil, nil, err
	}
	if hidden(sd, srcName) || hidden(dd, dstName) {
		return nil, nil, nil, nil, unix.EPERM
	}
	s.settleLeftAt(sd, srcName)
	s.settleLeftAt(dd, dstName)
	if src, err = s.locate(sd, srcName); err != nil {
		return nil, nil, nil, nil, err
	}
	if len(src) == 0 {
		return nil, nil, nil, nil, unix.ENOENT
	}
	if dst, err = s.locate(dd, dstName); err != nil {
		src.close()
		return nil, nil, nil, nil, err
	}
	return sd, dd, src, dst, nil
}

// renameExchangeLocked swaps two names of one tier (RENAME_EXCHANGE).
// Caller holds ns exclusively.
func (s *Store) renameExchangeLocked(sd []string, srcName string, dd []string, dstName string, src, dst locs) error {
	if len(dst) == 0 {
		return unix.ENOENT
	}
	if len(src) != 1 || len(dst) != 1 || src[0].tier != dst[0].tier {
		return unix.EINVAL // only a same-tier exchange is atomic
	}
	s.forgetPlainAt(&src[0])
	s.forgetPlainAt(&dst[0])
	err := unix.Renameat2(src[0].dirfd, srcName, dst[0].dirfd, dstName, unix.RENAME_EXCHANGE)
	if isDir(&src[0].st) || isDir(&dst[0].st) {
		src[0].tier.forgetDir(sd, srcName)
		src[0].tier.forgetDir(dd, dstName)
	}
	if err != nil {
		return err
	}
	s.dirChanged(sd, src[0].tier)
	s.dirChanged(dd, src[0].tier)
	return nil
}

// renameReplaceLocked renames src to the target, replacing dst (its
// copies, if any). Caller holds ns exclusively.
func (s *Store) renameReplaceLocked(sd []string, srcName string, dd []string, dstName string, src, dst locs) error {
	if same, err := replaceable(src, dst, dstName); err != nil || same {
		return err
	}
	var err error
	if isDir(&src[0].st) {
		err = s.renameDirLocked(sd, srcName, dd, dstName, src, dst)
	} else {
		err = s.renameFileLocked(dd, dstName, &src[0], dst)
	}
	if err != nil {
		return err
	}
	// The source's directory changed on each tier that had the source,
	// the target's there and wherever a copy it replaced was.
	for i := range src {
		s.dirChanged(sd, src[i].tier)
		s.dirChanged(dd, src[i].tier)
	}
	for i := range dst {
		s.dirChanged(dd, dst[i].tier)
	}
	return nil
}

// replaceable checks that src may replace dst (dstName's copies; none is
// fine): a directory only an empty directory, anything else anything
// but a directory. same says both are one file (hard links): nothing to
// do.
func replaceable(src, dst locs, dstName string) (same bool, err error) {
	if len(dst) == 0 {
		return false, nil
	}
	srcIsDir, dstIsDir := isDir(&src[0].st), isDir(&dst[0].st)
	switch {
	case srcIsDir && !dstIsDir:
		return false, unix.ENOTDIR
	case !srcIsDir && dstIsDir:
		return false, unix.EISDIR
	case srcIsDir:
		for i := range dst {
			empty, err := dirEmpty(dst[i].dirfd, dstName)
			if err != nil {
				return false, err
			}
			if !empty {
				return false, unix.ENOTEMPTY
			}
		}
	}
	return !srcIsDir && len(src) == 1 && len(dst) == 1 && src[0].tier == dst[0].tier &&
		src[0].st.Ino == dst[0].st.Ino && src[0].st.Dev == dst[0].st.Dev, nil
}

func (s *Store) renameFileLocked(dd []string, dstName string, src *loc, dst locs) error {
	t := src.tier
	// The file keeps its inode and attributes under its new name, but
	// what is known of it goes, as of every file a rename touches.
	s.forgetPlainAt(src)
	pfd, err := t.walk(dd, s.dirMetaFor(dd))
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	// Copies of the destination on other tiers lose: mark them first, so
	// that a crash after the rename resolves the duplicate to ours. A
	// loser that is not a regular file with one name cannot be marked
	// (a fifo, device, socket or symlink cannot be opened to fsync the
	// marker; a marker on a hard-linked file would stay on its other
	// names): the journal names it instead.
	var others []int
	var journal *Tier // where the record naming the loser is, if one is
	for i := range dst {
		if dst[i].tier == t {
			continue
		}
		others = append(others, i)
		if markable(&dst[i].st) {
			if err := markSuperseded(&dst[i], t.Name); err != nil {
				return err
			}
			continue
		}
		if err := s.settleJournal(); err != nil {
			return err
		}
		rec := renameRecord{Replace: append(append([]string(nil), dd...), dstName), Winner: t.Name, Loser: dst[i].tier.Name}
		jt, err := s.writeJournal(&rec)
		if err != nil {
			return err
		}
		journal = jt
	}
	// The replaced file, if on our tier, is gone after renameat: settle
	// its accounting first.
	var replaced *loc
	for i := range dst {
		if dst[i].tier == t {
			replaced = &dst[i]
		}
	}
	var replacedIno uint64
	if replaced != nil && replaced.st.Mode&unix.S_IFMT == unix.S_IFREG {
		replacedIno, _ = getIno(replaced.dirfd, replaced.name)
	}
	if len(others) > 0 {
		failPoint("rename:marked")
	}
	var srcIno uint64
	if src.st.Mode&unix.S_IFMT == unix.S_IFREG {
		srcIno, _ = getIno(src.dirfd, src.name)
	}
	if err := unix.Renameat(src.dirfd, src.name, pfd, dstName); err != nil {
		if journal != nil {
			s.clearJournal(journal)
		}
		return err
	}
	s.renamedOpen(srcIno, dd, dstName)
	if len(others) > 0 {
		failPoint("rename:renamed")
	}
	if replaced != nil && replaced.st.Mode&unix.S_IFMT == unix.S_IFREG {
		s.forgetReplaced(t, replacedIno, &replaced.st)
	}
	if len(others) > 0 {
		if err := fsyncDirAt(pfd); err != nil {
			return err
		}
		for _, i := range others {
			if err := s.removeFileLocked(&dst[i]); err != nil {
				return err
			}
			if err := fsyncDirAt(dst[i].dirfd); err != nil && journal != nil {
				return err // the journal stays: recovery removes the loser
			}
		}
	}
	if journal != nil {
		s.clearJournal(journal)
	}
	return nil
}

// markable reports whether a copy that a rename replaces can carry the
// superseded marker: a regular file with no other name.
func markable(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1
}

// forgetReplaced settles the accounting of a file that a rename replaced.
func (s *Store) forgetReplaced(t *Tier, ino uint64, st *unix.Stat_t) {
	s.forgetPlain(ino)
	if st.Nlink > 1 {
		return
	}
	t.files.Add(-1)
	s.openMu.Lock()
	f := s.open[ino]
	if f != nil && f.tier == t {
		f.unlinked = true
		f.path = nil
		s.openMu.Unlock()
		return
	}
	s.openMu.Unlock()
	t.addUsed(-usedBytes(st))
}

func markSuperseded(l *loc, winner string) error {
	fd, err := unix.Openat(l.dirfd, l.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Dev != l.st.Dev || st.Ino != l.st.Ino {
		return fmt.Errorf("mark %s superseded: the name is another file now: %w", l.name, unix.ESTALE)
	}
	if err := unix.Fsetxattr(fd, xattrSuperseded, []byte(winner), 0); err != nil {
		return fmt.Errorf("mark %s superseded: %w", l.name, err)
	}
	return unix.Fsync(fd)
}

func (s *Store) renameDirLocked(sd []string, srcName string, dd []string, dstName string, src, dst locs) error {
	// A record a failed removal left must go first (journal.go).
	if err := s.settleJournal(); err != nil {
		return err
	}
	rec := renameRecord{From: append(append([]string(nil), sd...), srcName), To: append(append([]string(nil), dd...), dstName)}
	multi := len(src) > 1 || len(dst) > 0
	var jt *Tier // the tier that holds the record
	if multi {
		rec.Ino, _ = getIno(src[0].dirfd, src[0].name)
		var err error
		if jt, err = s.writeJournal(&rec); err != nil {
			return err
		}
	}
	// Empty destination copies on tiers without a source copy would
	// otherwise lend the renamed directory their metadata.
	has := map[*Tier]bool{}
	for i := range src {
		has[src[i].tier] = true
	}
	for i := range dst {
		if !has[dst[i].tier] {
			err := unix.Unlinkat(dst[i].dirfd, dstName, unix.AT_REMOVEDIR)
			dst[i].tier.forgetDir(dd, dstName)
			if err != nil {
				if multi {
					s.clearJournal(jt) // no copy renamed: nothing to roll forward
				}
				return err
			}
		}
	}
	if multi {
		failPoint("rename-dir:journaled")
	}
	for i := range src {
		if renamed, err := s.renameDirOnTier(src[i].tier, &src[i], rec.From, rec.To); err != nil {
			switch {
			case !multi:
			case i == 0 && !renamed:
				s.clearJournal(jt)
			default:
				// Half done: the record stays for the next mount to
				// roll the rename forward, unless another directory
				// rename comes first (which removes it).
				s.journalStale = append(s.journalStale, jt)
			}
			return err
		}
		if multi {
			failPoint("rename-dir:tier")
		}
	}
	if multi {
		// The rename is done and durable: a record that will not go is
		// the next rename's to remove, not this one's error.
		s.clearJournal(jt)
	}
	return nil
}

// renameDirOnTier renames t's copy of a directory (from, src) to to;
// renamed says whether the rename happened (an error after it is from
// making it durable).
func (s *Store) renameDirOnTier(t *Tier, src *loc, from, to []string) (renamed bool, err error) {
	dd := to[:len(to)-1]
	pfd, err := t.walk(dd, s.dirMetaFor(dd))
	if err != nil {
		return false, err
	}
	defer unix.Close(pfd)
	err = unix.Renameat(src.dirfd, src.name, pfd, to[len(to)-1])
	// Both names: the one left, and the one whose empty directory the
	// rename may have replaced.
	t.forgetDir(from[:len(from)-1], from[len(from)-1])
	t.forgetDir(dd, to[len(to)-1])
	if err != nil {
		return false, err
	}
	if err := fsyncDirAt(pfd); err != nil {
		return true, err
	}
	return true, fsyncDirAt(src.dirfd)
}

// replayReplace finishes a rename over a journaled loser: once the new
// file has the name on the winner's tier, the loser's copy goes; before,
// the rename did not happen and the loser stays the file.
func (s *Store) replayReplace(rec renameRecord) error {
	dir, name := rec.Replace[:len(rec.Replace)-1], rec.Replace[len(rec.Replace)-1]
	ls, err := s.locateAll(dir, name)
	if err != nil {
		return err
	}
	defer ls.close()
	var winner, loser *loc
	for i := range ls {
		switch {
		case isDir(&ls[i].st):
		case ls[i].tier.Name == rec.Winner:
			winner = &ls[i]
		case ls[i].tier.Name == rec.Loser:
			loser = &ls[i]
		}
	}
	if winner == nil || loser == nil {
		return nil
	}
	s.log.Info().Str("tier", loser.tier.Name).Strs("path", rec.Replace).Str("winner", rec.Winner).
		Msg("recovery: removing the copy that an interrupted rename replaced")
	if err := unix.Unlinkat(loser.dirfd, loser.name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("recovery: remove the replaced copy on tier %s: %w", loser.tier.Name, err)
	}
	return fsyncDirAt(loser.dirfd)
}

// overPlan is what renameOver found of a rename over a name with copies
// on other tiers, before it held ns exclusively.
type overPlan struct {
	winner   *Tier // the renamed file's tier
	dev, ino uint64
	losers   []overLoser
}

// overLoser is a copy the rename replaces on another tier than the
// winner's, open to be marked.
type overLoser struct {
	t     *Tier
	fd    int
	st    unix.Stat_t
	shown unix.Timespec // the ctime it shows, which its marker must not change
}

func (p *overPlan) close() {
	for _, l := range p.losers {
		unix.Close(l.fd)
	}
}

// renameOver renames a file over a name with copies on other tiers (the
// losers, each a regular file with one name) with no fsync under ns:
// the losers are marked superseded and fsynced before ns is taken, the
// rename made under it (checking that the names are as planned), the
// winner's directory fsynced without it, the losers unlinked under it
// (from the rename to their unlink lookups skip them, as a move's
// source: Store.left) and their directories fsynced without it. The
// names are held (Store.names) throughout, so no unlink, rename or link
// comes between; a move of a loser may (it marks the loser too), which
// the check under ns sees. done false leaves the rename to Rename's path
// under ns: not such a rename (a loser that cannot carry a marker needs
// the journal), or a name that changed between the looks.
func (s *Store) renameOver(srcDir Path, srcName string, dstDir Path, dstName string, commit func()) (done bool, err error) {
	s.names.Lock()
	defer s.names.Unlock()
	p, ok := s.planOver(srcDir, srcName, dstDir, dstName)
	if !ok {
		return false, nil
	}
	defer p.close()
	for _, l := range p.losers {
		// The rename must not be durable before its losers' markers are
		// (two unmarked copies would answer EIO after a crash).
		if err := s.markLoser(l, p.winner.Name); err != nil {
			return false, nil // Rename's path marks under ns, and says why it cannot
		}
	}
	failPoint("rename:marked")

	pfd, left, ok, err := s.renameOverLocked(p, srcDir, srcName, dstDir, dstName, commit)
	if !ok || err != nil {
		return ok, err
	}
	defer unix.Close(pfd)
	failPoint("rename:renamed")
	if err := fsyncDirAt(pfd); err != nil {
		// Not known durable: the losers stay, marked (lookups skip them),
		// and the next mount removes them once the rename is there.
		s.ns.Lock()
		s.left = slices.DeleteFunc(s.left, func(l *leftSource) bool { return slices.Contains(left, l) })
		s.ns.Unlock()
		for _, l := range left {
			unix.Close(l.dirfd)
		}
		return true, err
	}
	for _, l := range left {
		close(l.durable)
	}
	failPoint("rename:durable")
	s.ns.Lock()
	for _, l := range left {
		s.dropSourceLocked(l)
	}
	s.ns.Unlock()
	for _, l := range left {
		// Not durable, the unlink leaves a marked copy that the next
		// mount removes: the rename is done either way.
		_ = fsyncDirAt(l.dirfd)
		unix.Close(l.dirfd)
	}
	return true, nil
}

// planOver looks, under ns shared, whether srcDir/srcName is a file that
// a rename would put over copies of dstDir/dstName on other tiers that
// can each carry a marker (a regular file with one name, that no move
// is marking), and opens those.
func (s *Store) planOver(srcDir Path, srcName string, dstDir Path, dstName string) (*overPlan, bool) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	sd, err1 := s.comps(srcDir)
	dd, err2 := s.comps(dstDir)
	if err1 != nil || err2 != nil || hidden(sd, srcName) || hidden(dd, dstName) {
		return nil, false
	}
	src, err := s.locate(sd, srcName)
	if err != nil {
		return nil, false
	}
	defer src.close()
	dst, err := s.locate(dd, dstName)
	if err != nil {
		return nil, false
	}
	defer dst.close()
	if !s.overAnotherTier(src, dst) {
		return nil, false
	}
	if same, err := replaceable(src, dst, dstName); err != nil || same {
		return nil, false
	}
	p := &overPlan{winner: src[0].tier, dev: src[0].st.Dev, ino: src[0].st.Ino}
	for i := range dst {
		d := &dst[i]
		if d.tier == p.winner {
			continue
		}
		fd, err := unix.Openat(d.dirfd, d.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			p.close()
			return nil, false
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Dev != d.st.Dev || st.Ino != d.st.Ino {
			unix.Close(fd)
			p.close()
			return nil, false
		}
		p.losers = append(p.losers, overLoser{t: d.tier, fd: fd, st: st, shown: s.ct.shown(d.tier, &st)})
	}
	return p, true
}

// moving says whether a move has the file at l open and in progress.
// Caller holds ns.
func (s *Store) moving(l *loc) bool {
	ino, err := getIno(l.dirfd, l.name)
	if err != nil {
		return true // unknown: leave it to the path under ns
	}
	s.openMu.Lock()
	f := s.open[ino]
	s.openMu.Unlock()
	return f != nil && f.moving.Load()
}

// markLoser marks the loser l superseded by winner, durably, keeping the
// ctime it shows (it is still the name's file until the rename).
func (s *Store) markLoser(l overLoser, winner string) error {
	s.ct.hold(l.t, &l.st, l.shown)
	err := unix.Fsetxattr(l.fd, xattrSuperseded, []byte(winner), 0)
	s.ct.keep(l.t, l.fd, l.shown)
	if err != nil {
		return err
	}
	return unix.Fsync(l.fd)
}

// renameOverLocked is renameOver's rename, under ns: the names must be
// as planned (the file on the winner's tier, the same losers, still
// marked for it), else ok is false and nothing changed. It returns the
// winner's directory and the losers, left under their names (Store.left)
// until the rename is durable.
func (s *Store) renameOverLocked(p *overPlan, srcDir Path, srcName string, dstDir Path, dstName string, commit func()) (pfd int, left []*leftSource, ok bool, err error) {
	s.ns.Lock()
	defer s.ns.Unlock()
	s.nameDrops.Add(1)
	sd, dd, src, dst, err := s.renameLocate(srcDir, srcName, dstDir, dstName)
	if err != nil {
		return -1, nil, true, err
	}
	defer src.close()
	defer dst.close()
	if !p.holds(src, dst) {
		return -1, nil, false, nil
	}
	t := src[0].tier
	s.forgetPlainAt(&src[0])
	if pfd, err = t.walk(dd, s.dirMetaFor(dd)); err != nil {
		return -1, nil, true, err
	}
	var replaced *loc
	var replacedIno uint64
	for i := range dst {
		if dst[i].tier == t && dst[i].st.Mode&unix.S_IFMT == unix.S_IFREG {
			replaced = &dst[i]
			replacedIno, _ = getIno(replaced.dirfd, replaced.name)
		}
	}
	srcIno, _ := getIno(src[0].dirfd, src[0].name)
	if err := unix.Renameat(src[0].dirfd, src[0].name, pfd, dstName); err != nil {
		unix.Close(pfd)
		return -1, nil, true, err
	}
	s.renamedOpen(srcIno, dd, dstName)
	if replaced != nil {
		s.forgetReplaced(t, replacedIno, &replaced.st)
	}
	for i := range dst {
		if dst[i].tier == t {
			continue
		}
		l := &leftSource{t: dst[i].tier, name: dstName, dev: dst[i].st.Dev, ino: dst[i].st.Ino,
			replaced: true, st: dst[i].st, durable: make(chan struct{})}
		if l.dirfd, err = unix.Dup(dst[i].dirfd); err != nil {
			l.dirfd = -1
		}
		s.left = append(s.left, l)
		left = append(left, l)
	}
	s.dirChanged(sd, t)
	s.dirChanged(dd, t)
	for i := range dst {
		s.dirChanged(dd, dst[i].tier)
	}
	if commit != nil {
		commit()
	}
	return pfd, left, true, nil
}

// holds says whether src and dst, located under ns, are what p planned
// for: one copy of a file on p's winner tier, and on the other tiers the
// losers p marked, still marked for it.
func (p *overPlan) holds(src, dst locs) bool {
	if len(src) != 1 || src[0].tier != p.winner || src[0].st.Dev != p.dev || src[0].st.Ino != p.ino {
		return false
	}
	if same, err := replaceable(src, dst, ""); err != nil || same {
		return false
	}
	n := 0
	buf := make([]byte, 256)
	for i := range dst {
		if dst[i].tier == p.winner {
			continue
		}
		n++
		if !slices.ContainsFunc(p.losers, func(l overLoser) bool {
			return l.t == dst[i].tier && l.st.Dev == dst[i].st.Dev && l.st.Ino == dst[i].st.Ino
		}) {
			return false
		}
		if w, ok := supersededBy(&dst[i], buf); !ok || w != p.winner.Name {
			return false
		}
	}
	return n == len(p.losers)
}

// renamedOpen has the open file with inode number ino, if any, known by
// its new name dd/name (a spill moves it by that name), unless its name
// is one that follows renames by itself (package fs's nodes, updated in
// Rename's commit). Caller holds ns exclusively.
func (s *Store) renamedOpen(ino uint64, dd []string, name string) {
	s.openMu.Lock()
	if f := s.open[ino]; f != nil && ino != 0 && !f.unlinked {
		switch f.path.(type) {
		case RelPath, childPath:
			f.path = RelPath(strings.Join(append(append([]string(nil), dd...), name), "/"))
		}
	}
	s.openMu.Unlock()
}
