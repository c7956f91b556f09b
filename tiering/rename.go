package tiering

import (
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Rename flags, as renameat2(2).
const (
	RenameNoReplace = unix.RENAME_NOREPLACE
	RenameExchange  = unix.RENAME_EXCHANGE
)

const renameJournal = "rename"

// renameRecord is the rename journal's one record: a directory rename
// (From, To), or a file renamed over a name on another tier whose copy
// there cannot carry a superseded marker (Replace: the name; Winner and
// Loser: the tiers of the new file and of the copy it replaces).
type renameRecord struct {
	From    []string `json:"from,omitempty"`
	To      []string `json:"to,omitempty"`
	Replace []string `json:"replace,omitempty"`
	Winner  string   `json:"winner,omitempty"`
	Loser   string   `json:"loser,omitempty"`
}

// Rename moves srcDir/srcName to dstDir/dstName. A file is renamed on its
// tier; a name it replaces on another tier is first marked superseded (or,
// when it cannot carry a durable marker, named in the journal) and removed
// after the rename is durable. A directory is renamed on every tier
// that has a copy, under a journal record that recovery rolls forward.
// commit runs under the namespace lock once the rename is done.
func (s *Store) Rename(srcDir Path, srcName string, dstDir Path, dstName string, flags uint32, commit func()) error {
	if err := validName(dstName); err != nil {
		return err
	}
	if flags&^uint32(RenameNoReplace|RenameExchange) != 0 || flags == RenameNoReplace|RenameExchange {
		return unix.EINVAL
	}
	s.ns.Lock()
	defer s.ns.Unlock()
	s.nameDrops.Add(1)
	sd, err := s.comps(srcDir)
	if err != nil {
		return err
	}
	dd, err := s.comps(dstDir)
	if err != nil {
		return err
	}
	if hidden(sd, srcName) || hidden(dd, dstName) {
		return unix.EPERM
	}
	src, err := s.locate(sd, srcName)
	if err != nil {
		return err
	}
	defer src.close()
	if len(src) == 0 {
		return unix.ENOENT
	}
	dst, err := s.locate(dd, dstName)
	if err != nil {
		return err
	}
	defer dst.close()
	if flags&RenameNoReplace != 0 && len(dst) > 0 {
		return unix.EEXIST
	}
	if flags&RenameExchange != 0 {
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
		if commit != nil {
			commit()
		}
		return nil
	}
	srcIsDir := isDir(&src[0].st)
	if len(dst) > 0 {
		dstIsDir := isDir(&dst[0].st)
		switch {
		case srcIsDir && !dstIsDir:
			return unix.ENOTDIR
		case !srcIsDir && dstIsDir:
			return unix.EISDIR
		case srcIsDir:
			for i := range dst {
				empty, err := dirEmpty(dst[i].dirfd, dstName)
				if err != nil {
					return err
				}
				if !empty {
					return unix.ENOTEMPTY
				}
			}
		}
		// Same inode under both names (hard links): nothing to do.
		if !srcIsDir && len(src) == 1 && len(dst) == 1 && src[0].tier == dst[0].tier &&
			src[0].st.Ino == dst[0].st.Ino && src[0].st.Dev == dst[0].st.Dev {
			if commit != nil {
				commit()
			}
			return nil
		}
	}
	if srcIsDir {
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
	if commit != nil {
		commit()
	}
	return nil
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
	journaled := false
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
		rec := renameRecord{Replace: append(append([]string(nil), dd...), dstName), Winner: t.Name, Loser: dst[i].tier.Name}
		if err := s.writeJournal(rec); err != nil {
			return err
		}
		journaled = true
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
	if err := unix.Renameat(src.dirfd, src.name, pfd, dstName); err != nil {
		if journaled {
			_ = s.clearJournal()
		}
		return err
	}
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
			if err := fsyncDirAt(dst[i].dirfd); err != nil && journaled {
				return err // the journal stays: recovery removes the loser
			}
		}
	}
	if journaled {
		return s.clearJournal()
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
	rec := renameRecord{From: append(append([]string(nil), sd...), srcName), To: append(append([]string(nil), dd...), dstName)}
	multi := len(src) > 1 || len(dst) > 0
	if multi {
		if err := s.writeJournal(rec); err != nil {
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
				return err
			}
		}
	}
	if multi {
		failPoint("rename-dir:journaled")
	}
	for i := range src {
		if err := s.renameDirOnTier(src[i].tier, &src[i], rec.To); err != nil {
			return err
		}
		if multi {
			failPoint("rename-dir:tier")
		}
	}
	if multi {
		return s.clearJournal()
	}
	return nil
}

func (s *Store) renameDirOnTier(t *Tier, src *loc, to []string) error {
	dd := to[:len(to)-1]
	pfd, err := t.walk(dd, s.dirMetaFor(dd))
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := unix.Renameat(src.dirfd, src.name, pfd, to[len(to)-1]); err != nil {
		return err
	}
	if err := fsyncDirAt(pfd); err != nil {
		return err
	}
	return fsyncDirAt(src.dirfd)
}

func (s *Store) writeJournal(rec renameRecord) error {
	t0 := s.tiers[0]
	b, _ := json.Marshal(rec)
	tmp := renameJournal + ".tmp"
	jfd, err := unix.Openat(t0.meta, "journal", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(jfd)
	fd, err := unix.Openat(jfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	_, err = unix.Write(fd, b)
	if err == nil {
		err = unix.Fsync(fd)
	}
	unix.Close(fd)
	if err == nil {
		err = unix.Renameat(jfd, tmp, jfd, renameJournal)
	}
	if err == nil {
		err = fsyncDirAt(jfd)
	}
	return err
}

func (s *Store) clearJournal() error {
	t0 := s.tiers[0]
	jfd, err := unix.Openat(t0.meta, "journal", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(jfd)
	if err := unix.Unlinkat(jfd, renameJournal, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return fsyncDirAt(jfd)
}

// replayJournal rolls an interrupted directory rename forward.
func (s *Store) replayJournal() error {
	t0 := s.tiers[0]
	jfd, err := unix.Openat(t0.meta, "journal", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(jfd)
	fd, err := unix.Openat(jfd, renameJournal, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	n, err := unix.Read(fd, buf)
	unix.Close(fd)
	if err != nil {
		return err
	}
	var rec renameRecord
	err = json.Unmarshal(buf[:n], &rec)
	if err == nil && len(rec.Replace) > 0 && rec.Winner != "" && rec.Loser != "" {
		if err := s.replayReplace(rec); err != nil {
			return err
		}
		return s.clearJournal()
	}
	if err != nil || len(rec.From) == 0 || len(rec.To) == 0 {
		s.log.Warn().Msg("discarding unreadable rename journal")
		return s.clearJournal()
	}
	src, err := s.locate(rec.From[:len(rec.From)-1], rec.From[len(rec.From)-1])
	if err != nil {
		return err
	}
	defer src.close()
	for i := range src {
		if !isDir(&src[i].st) {
			continue
		}
		s.log.Info().Str("tier", src[i].tier.Name).Strs("from", rec.From).Strs("to", rec.To).Msg("recovery: finishing interrupted directory rename")
		if err := s.renameDirOnTier(src[i].tier, &src[i], rec.To); err != nil {
			return fmt.Errorf("recovery: rename on tier %s: %w", src[i].tier.Name, err)
		}
	}
	return s.clearJournal()
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
