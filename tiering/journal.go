package tiering

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// The rename journal. A directory with copies on several tiers is renamed
// on one tier after another, under a record that recovery rolls forward
// (docs/design.md has the crash analysis):
//
//   - The record goes to .tierfs/journal/rename on the first tier, in tier
//     order, whose filesystem takes it: a full (or read-only) tier passes
//     it on, so that a full fast tier never fails a rename (Kafka deletes
//     a topic by renaming its partition directories). It is written to
//     rename.tmp, fsynced, renamed into place and its directory fsynced;
//     a rename.tmp that failed is removed at once, and any left by a
//     crash at the next mount.
//   - It names the directory by its tierfs inode number, so that a replay
//     renames only copies of that directory, and carries a sequence
//     number (above every record seen at mount and the clock), so that
//     the newest wins should records be found on several tiers.
//   - Done, the record is removed from its tier. A removal that fails is
//     retried before the next directory rename, which fails until it
//     works: a record left behind a rename that went through would, after
//     the directory was renamed back, roll it forward once more. A rename
//     that failed half way (an error, not a crash) leaves its record for
//     the next mount to roll forward, unless another directory rename
//     comes first and removes it. So at most one record exists at a time
//     on all tiers, but for a crash in the narrow window where one that
//     could not be made durable on one tier is written again on the next
//     (the same record twice).
//
// Guarded by Store.ns, held exclusively by every rename and by recovery.

const (
	renameJournal = "rename"
	journalTmp    = renameJournal + ".tmp"
	// maxRecord bounds what a replay reads of a record.
	maxRecord = 1 << 20
)

// renameRecord is the journal's one record: a directory rename (From,
// To), or a file renamed over a name on another tier whose copy there
// cannot carry a superseded marker (Replace: the name; Winner and Loser:
// the tiers of the new file and of the copy it replaces).
type renameRecord struct {
	Seq uint64 `json:"seq,omitempty"`
	// Ino is the directory's tierfs inode number (0: not known, from a
	// record written before it was kept).
	Ino     uint64   `json:"ino,omitempty"`
	From    []string `json:"from,omitempty"`
	To      []string `json:"to,omitempty"`
	Replace []string `json:"replace,omitempty"`
	Winner  string   `json:"winner,omitempty"`
	Loser   string   `json:"loser,omitempty"`
	// LinkMove is a move of a file with several names (linkmove.go).
	LinkMove *linkMoveRecord `json:"link_move,omitempty"`
}

func (r *renameRecord) valid() bool {
	if r.LinkMove != nil {
		return r.LinkMove.valid()
	}
	return (len(r.From) > 0 && len(r.To) > 0) || (len(r.Replace) > 0 && r.Winner != "" && r.Loser != "")
}

func openJournalDir(t *Tier) (int, error) {
	return unix.Openat(t.meta, "journal", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// noRoomFor reports whether err says that a tier cannot take a record
// that another tier may: it is full, over quota, or read-only.
func noRoomFor(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.Is(err, unix.EROFS)
}

// writeJournal makes rec durable on the first tier that takes it and
// returns that tier. With no tier taking it the error is the first tier's.
func (s *Store) writeJournal(rec *renameRecord) (*Tier, error) {
	rec.Seq = max(s.journalSeq+1, uint64(time.Now().UnixNano()))
	s.journalSeq = rec.Seq
	b, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	if len(b) > maxRecord {
		// A replay would not read it whole.
		return nil, fmt.Errorf("journal record of %d bytes, more than %d: %w", len(b), maxRecord, unix.E2BIG)
	}
	var first error
	for _, t := range s.tiers {
		err := writeRecord(t, b)
		if err == nil {
			if t != s.tiers[0] {
				s.log.Debug().Str("tier", t.Name).Msg("rename journal record written on a later tier: the first has no room")
			}
			return t, nil
		}
		if !noRoomFor(err) {
			return nil, fmt.Errorf("tier %s: rename journal: %w", t.Name, err)
		}
		if first == nil {
			first = fmt.Errorf("tier %s: rename journal: %w", t.Name, err)
		}
	}
	s.log.Warn().Err(first).Strs("from", rec.From).Strs("to", rec.To).Msg("no tier has room for the journal record: the rename or move is refused")
	return nil, first
}

// writeRecord publishes b as the record on t, or leaves nothing there.
func writeRecord(t *Tier, b []byte) error {
	jfd, err := openJournalDir(t)
	if err != nil {
		return err
	}
	defer unix.Close(jfd)
	return publishFile(jfd, renameJournal, b, "rename-dir:record-unpublished")
}

// publishFile makes dirfd/name hold b durably, whole or not at all: it
// writes name.tmp, fsyncs it, renames it to name and fsyncs dirfd. On
// failure it leaves neither name.tmp nor a name it could not make durable.
// step names the crash point before the rename.
func publishFile(dirfd int, name string, b []byte, step string) error {
	tmp := name + ".tmp"
	fd, err := unix.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	for off := 0; err == nil && off < len(b); {
		var n int
		n, err = unix.Write(fd, b[off:])
		if errors.Is(err, unix.EINTR) {
			err = nil
		} else if err == nil && n == 0 {
			err = io.ErrShortWrite
		}
		off += max(n, 0)
	}
	if err == nil {
		err = unix.Fsync(fd)
	}
	unix.Close(fd)
	if err == nil {
		if step != "" {
			failPoint(step)
		}
		err = unix.Renameat(dirfd, tmp, dirfd, name)
		if err == nil {
			if err = fsyncDirAt(dirfd); err != nil {
				// Not known durable: the caller tries elsewhere.
				_ = unix.Unlinkat(dirfd, name, 0)
			}
			return err
		}
	}
	_ = unix.Unlinkat(dirfd, tmp, 0)
	return err
}

// clearJournal removes the record of a rename that is done (or that
// failed before any copy was renamed) from t. A record that will not go
// is kept in mind, and the next directory rename removes it first.
func (s *Store) clearJournal(t *Tier) {
	if err := removeRecord(t); err != nil {
		s.log.Error().Err(err).Str("tier", t.Name).Msg("rename journal record not removed: the next directory rename retries")
		s.journalStale = append(s.journalStale, t)
	}
}

// settleJournal removes the records that clearJournal could not, after
// removing the copies that a move of a file with several names could not
// (journalPending).
func (s *Store) settleJournal() error {
	if p := s.journalPending; p != nil {
		if err := s.replayLinkMove(p); err != nil {
			return fmt.Errorf("remove the copies the last move of a file with several names left: %w", err)
		}
		s.journalPending = nil
	}
	for len(s.journalStale) > 0 {
		t := s.journalStale[0]
		if err := removeRecord(t); err != nil {
			return fmt.Errorf("tier %s: remove the last rename's journal record: %w", t.Name, err)
		}
		s.journalStale = s.journalStale[1:]
	}
	return nil
}

func removeRecord(t *Tier) error {
	jfd, err := openJournalDir(t)
	if err != nil {
		return err
	}
	defer unix.Close(jfd)
	if err := unix.Unlinkat(jfd, renameJournal, 0); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	return fsyncDirAt(jfd)
}

// foundRecord is a record recovery found on a tier.
type foundRecord struct {
	tier *Tier
	rec  renameRecord
}

// replayJournal rolls an interrupted directory rename forward: it reads
// every tier's journal, replays the newest record (should there be two,
// the older was superseded), and removes them all.
func (s *Store) replayJournal() error {
	var found []foundRecord
	var bad []*Tier
	for _, t := range s.tiers {
		rec, ok, err := readRecord(t)
		if err != nil {
			return fmt.Errorf("tier %s: rename journal: %w", t.Name, err)
		}
		if !ok {
			continue
		}
		if rec == nil {
			s.log.Warn().Str("tier", t.Name).Msg("discarding unreadable rename journal record")
			bad = append(bad, t)
			continue
		}
		found = append(found, foundRecord{t, *rec})
		s.journalSeq = max(s.journalSeq, rec.Seq)
	}
	sort.SliceStable(found, func(i, j int) bool { return found[i].rec.Seq > found[j].rec.Seq })
	for i, f := range found {
		if i == 0 {
			if err := s.replayRecord(f.tier, &f.rec); err != nil {
				return err
			}
		} else if f.rec.Seq != found[0].rec.Seq {
			s.log.Warn().Str("tier", f.tier.Name).Strs("from", f.rec.From).Strs("to", f.rec.To).
				Msg("discarding a rename journal record that a newer one superseded")
		}
	}
	for _, f := range found {
		bad = append(bad, f.tier)
	}
	for _, t := range bad {
		if err := removeRecord(t); err != nil {
			return fmt.Errorf("tier %s: remove rename journal record: %w", t.Name, err)
		}
	}
	return nil
}

// readRecord reads t's record: ok is false when there is none, rec nil
// when it cannot be decoded. A rename.tmp (a record never published) goes.
func readRecord(t *Tier) (rec *renameRecord, ok bool, err error) {
	jfd, err := openJournalDir(t)
	if err != nil {
		return nil, false, err
	}
	defer unix.Close(jfd)
	if err := unix.Unlinkat(jfd, journalTmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, false, err
	}
	fd, err := unix.Openat(jfd, renameJournal, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer unix.Close(fd)
	buf := make([]byte, maxRecord)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	var r renameRecord
	if err := json.Unmarshal(buf[:n], &r); err != nil || !r.valid() {
		return nil, true, nil
	}
	return &r, true, nil
}

// replayRecord renames every copy of rec.From that is still the
// directory the record names to rec.To, or finishes a rename over a
// journaled loser (replayReplace).
func (s *Store) replayRecord(on *Tier, rec *renameRecord) error {
	if rec.LinkMove != nil {
		return s.replayLinkMove(rec.LinkMove)
	}
	if len(rec.Replace) > 0 {
		return s.replayReplace(*rec)
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
		if rec.Ino != 0 {
			// A copy without a number (made behind tierfs's back) cannot
			// tell: it goes with the others.
			ino, err := getIno(src[i].dirfd, src[i].name)
			if err != nil && !errors.Is(err, unix.ENODATA) {
				return fmt.Errorf("recovery: rename on tier %s: %w", src[i].tier.Name, err)
			}
			if err == nil && ino != rec.Ino {
				continue // another directory under the old name
			}
		}
		s.log.Info().Str("tier", src[i].tier.Name).Str("journal", on.Name).Strs("from", rec.From).Strs("to", rec.To).Msg("recovery: finishing interrupted directory rename")
		if _, err := s.renameDirOnTier(src[i].tier, &src[i], rec.From, rec.To); err != nil {
			return fmt.Errorf("recovery: rename on tier %s: %w", src[i].tier.Name, err)
		}
	}
	return nil
}
