package tiering

import (
	"errors"
	"fmt"
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
	s.names.RLock()
	defer s.names.RUnlock()
	s.ns.Lock()
	defer s.ns.Unlock()
	s.nameDrops.Add(1)
	sd, dd, src, dst, err := s.renameLocate(srcDir, srcName, dstDir, dstName)
	if err != nil {
		return err
	}
	defer src.close()
	defer dst.close()
	if flags&RenameNoReplace != 0 && len(dst) > 0 {
		return unix.EEXIST
	}
	if flags&RenameExchange != 0 {
		err = s.renameExchangeLocked(sd, srcName, dd, dstName, src, dst)
	} else {
		err = s.renameReplaceLocked(sd, srcName, dd, dstName, src, dst)
	}
	if err != nil {
		return err
	}
	if commit != nil {
		commit()
	}
	return nil
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
	if err := unix.Renameat2(src[0].dirfd, srcName, dst[0].dirfd, dstName, unix.RENAME_EXCHANGE); err != nil {
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
	// An open file is known by its new name from now on (a spill moves
	// it by that name), unless its name is one that follows renames by
	// itself (package fs's nodes, updated in commit).
	s.openMu.Lock()
	if f := s.open[srcIno]; f != nil && srcIno != 0 && !f.unlinked {
		switch f.path.(type) {
		case RelPath, childPath:
			f.path = RelPath(strings.Join(append(append([]string(nil), dd...), dstName), "/"))
		}
	}
	s.openMu.Unlock()
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
			if err := unix.Unlinkat(dst[i].dirfd, dstName, unix.AT_REMOVEDIR); err != nil {
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
		if renamed, err := s.renameDirOnTier(src[i].tier, &src[i], rec.To); err != nil {
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

// renameDirOnTier renames t's copy of a directory; renamed says whether
// the rename happened (an error after it is from making it durable).
func (s *Store) renameDirOnTier(t *Tier, src *loc, to []string) (renamed bool, err error) {
	dd := to[:len(to)-1]
	pfd, err := t.walk(dd, s.dirMetaFor(dd))
	if err != nil {
		return false, err
	}
	defer unix.Close(pfd)
	if err := unix.Renameat(src.dirfd, src.name, pfd, to[len(to)-1]); err != nil {
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
