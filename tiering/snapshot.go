package tiering

import (
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/policy"
)

// PolicySnapshot describes every regular file and every tier for the
// planner. Thresholds and pins are the engine's to fill in.
func (s *Store) PolicySnapshot(now time.Time) (policy.Snapshot, error) {
	snap := policy.Snapshot{Now: now}
	for _, t := range s.tiers {
		snap.Tiers = append(snap.Tiers, policy.Tier{Name: t.Name, Capacity: t.Capacity(), Used: t.Used()})
	}
	s.openMu.Lock()
	reads := make(map[uint64]int64, len(s.reads)+len(s.open))
	for k, v := range s.reads {
		reads[k] = v
	}
	for k, f := range s.open {
		if r := f.lastRead.Load(); r > reads[k] {
			reads[k] = r
		}
	}
	s.openMu.Unlock()
	drops := s.nameDrops.Load()
	err := s.snapshotDir(nil, reads, &snap)
	snap.Complete = err == nil && s.nameDrops.Load() == drops
	return snap, err
}

// FileIno is the inode number of the regular file at rel (relative to the
// mount root), as PolicySnapshot names it: what a pin binds to.
func (s *Store) FileIno(rel string) (uint64, error) {
	a, err := s.Getattr(RelPath(rel))
	if err != nil {
		return 0, err
	}
	switch a.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return a.Ino, nil
	case unix.S_IFDIR:
		return 0, unix.EISDIR
	}
	return 0, unix.EINVAL
}

func (s *Store) snapshotDir(c []string, reads map[uint64]int64, snap *policy.Snapshot) error {
	ents, err := s.readdir(RelPath(strings.Join(c, "/")), readNamesQuiet)
	if err != nil {
		if err == unix.ENOENT {
			return nil // removed while we walked
		}
		return err
	}
	for _, e := range ents {
		cc := append(append([]string(nil), c...), e.Name)
		rel := strings.Join(cc, "/")
		switch e.Mode {
		case unix.S_IFDIR:
			if err := s.snapshotDir(cc, reads, snap); err != nil {
				return err
			}
		case unix.S_IFREG:
			a, err := s.Getattr(RelPath(rel))
			if err != nil {
				continue // gone since the listing
			}
			f := policy.File{
				Path:    rel,
				Ino:     a.Ino,
				Tier:    a.Tier,
				Size:    a.Blocks * 512,
				ModTime: time.Unix(a.Mtim.Sec, a.Mtim.Nsec),
				PinTier: -1,
				Links:   int(a.Nlink),
			}
			if r := reads[a.Ino]; r != 0 {
				f.LastRead = time.Unix(0, r)
			}
			snap.Files = append(snap.Files, f)
		}
	}
	return nil
}
