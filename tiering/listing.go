package tiering

import (
	"errors"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Listing is every regular file and every tier of the store, in terms of
// its own: what a planner outside tiering reads to decide on moves.
type Listing struct {
	Tiers []ListedTier
	Files []ListedFile
	// Complete is set when no name was removed or renamed while the walk
	// ran: a file that existed before it and is not in it is gone.
	// Without it, a file may be missing because it was renamed into a
	// directory already walked.
	Complete bool
}

// ListedTier is one tier, fastest first.
type ListedTier struct {
	Name     string
	Capacity int64 // bytes
	Used     int64 // bytes
}

// ListedFile is one name of a regular file. A file with several names is
// listed under each, with one Ino.
type ListedFile struct {
	Path      string // relative to the mount root, "/"-separated
	Ino       uint64 // tierfs inode number, never reused
	Tier      int    // index into Listing.Tiers
	Allocated int64  // bytes the file takes on its tier
	ModTime   time.Time
	// LastRead is the last read through the mount; zero if none since
	// the store opened.
	LastRead time.Time
	Links    int
}

// listBatch is how many names of one directory the walk looks up under
// one hold of the namespace lock: a directory of thousands of segments
// must not keep every create and rename of the mount waiting.
const listBatch = 64

// ListFiles walks the whole namespace. It takes the namespace lock for
// one batch of names at a time, never for the walk.
func (s *Store) ListFiles() (Listing, error) {
	var out Listing
	for _, t := range s.tiers {
		out.Tiers = append(out.Tiers, ListedTier{Name: t.Name, Capacity: t.Capacity(), Used: t.Used()})
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
	err := s.listDir(nil, reads, &out)
	out.Complete = err == nil && s.nameDrops.Load() == drops
	return out, err
}

// FileIno is the inode number of the regular file at rel (relative to the
// mount root), as ListFiles names it: what a pin binds to. EISDIR for a
// directory, EINVAL for anything else that is not a regular file.
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

// dirNames is the union of the names of directory c on every tier, read
// under the namespace lock (the names only: no stat of each).
func (s *Store) dirNames(c []string) ([]string, error) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	var out []string
	err := s.unionDir(c, readNamesQuiet, func(_ *Tier, _ int, n string) bool {
		out = append(out, n)
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Store) listDir(c []string, reads map[uint64]int64, out *Listing) error {
	names, err := s.dirNames(c)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // removed while we walked
		}
		return err
	}
	var subdirs []string
	for start := 0; start < len(names); start += listBatch {
		// Between batches the lock is free: the namespace changes under
		// the walk, and Complete says whether a name went meanwhile.
		failPoint("list:batch")
		s.listBatch(c, names[start:min(start+listBatch, len(names))], reads, out, &subdirs)
	}
	for _, n := range subdirs {
		if err := s.listDir(append(append([]string(nil), c...), n), reads, out); err != nil {
			return err
		}
	}
	return nil
}

// listBatch looks up names of directory c under one hold of the lock;
// those gone since dirNames read them are left out.
func (s *Store) listBatch(c, names []string, reads map[uint64]int64, out *Listing, subdirs *[]string) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	for _, n := range names {
		ls, err := s.locate(c, n)
		if err != nil || len(ls) == 0 {
			continue
		}
		switch ls[0].st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			*subdirs = append(*subdirs, n)
		case unix.S_IFREG:
			a, err := s.attrOf(&ls[0])
			if err == nil {
				f := ListedFile{
					Path:      strings.Join(append(append([]string(nil), c...), n), "/"),
					Ino:       a.Ino,
					Tier:      a.Tier,
					Allocated: a.Blocks * 512,
					ModTime:   time.Unix(a.Mtim.Sec, a.Mtim.Nsec),
					Links:     int(a.Nlink),
				}
				if r := reads[a.Ino]; r != 0 {
					f.LastRead = time.Unix(0, r)
				}
				out.Files = append(out.Files, f)
			}
		}
		ls.close()
	}
}
