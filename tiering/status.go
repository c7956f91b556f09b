package tiering

import (
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// TierStatus is one tier's line in `tierfs status`.
type TierStatus struct {
	Name          string `json:"name"`
	Type          string `json:"type"`
	Path          string `json:"path"`
	CapacityBytes int64  `json:"capacity_bytes"`
	UsedBytes     int64  `json:"used_bytes"`
	FreeBytes     int64  `json:"free_bytes"`
	Files         int64  `json:"files"`
	// What the mount read and wrote on the tier since the mount: read
	// requests, bytes read, bytes written.
	Reads        int64 `json:"reads"`
	ReadBytes    int64 `json:"read_bytes"`
	WrittenBytes int64 `json:"written_bytes"`
	// Pool is the pmem pool of the tier; nil on tiers without one.
	Pool *PoolStatus `json:"pool,omitempty"`
}

// PoolStatus is a pmem pool's state: free slots (bytes) ready for new
// segments, the target it keeps filled, and the bytes of slots taken by
// files since the mount.
type PoolStatus struct {
	SegmentBytes int64 `json:"segment_bytes"`
	FreeSlots    int64 `json:"free_slots"`
	FreeBytes    int64 `json:"free_bytes"`
	TargetSlots  int   `json:"target_slots"`
	UsedBytes    int64 `json:"used_bytes"`
}

// Status is what `tierfs status` shows.
type Status struct {
	Tiers     []TierStatus `json:"tiers"`
	OpenFiles int          `json:"open_files"`
	Moves     MoveStats    `json:"moves"`
}

// Entry is one file in `tierfs ls`.
type Entry struct {
	Path  string `json:"path"` // relative to the mount root, "/"-separated
	Size  int64  `json:"size"`
	Tier  string `json:"tier"`
	IsDir bool   `json:"is_dir,omitempty"`
}

// Status reports every tier's capacity, usage and file count.
func (s *Store) Status() Status {
	var out Status
	for _, t := range s.tiers {
		ts := TierStatus{
			Name: t.Name, Type: t.Type, Path: t.Path,
			CapacityBytes: t.Capacity(), UsedBytes: t.Used(), FreeBytes: t.Free(), Files: t.files.Load(),
			Reads: t.reads.Load(), ReadBytes: t.readBytes.Load(), WrittenBytes: t.writtenBytes.Load(),
		}
		if p := t.pool; p != nil {
			slots, free, used := p.Stats()
			ts.Pool = &PoolStatus{SegmentBytes: p.SegmentSize(), FreeSlots: slots, FreeBytes: free, TargetSlots: p.Target(), UsedBytes: used}
		}
		out.Tiers = append(out.Tiers, ts)
	}
	s.openMu.Lock()
	out.OpenFiles = len(s.open)
	s.openMu.Unlock()
	out.Moves = s.ledger.stats()
	return out
}

// List reports each file at or under rel (relative to the mount root)
// with its size and tier. A directory lists its entries; with recursive,
// its whole subtree.
func (s *Store) List(rel string, recursive bool) ([]Entry, error) {
	c, ok := RelPath(rel).Components()
	if !ok {
		return nil, unix.ENOENT
	}
	a, err := s.Getattr(RelPath(rel))
	if err != nil {
		return nil, err
	}
	if a.Mode&unix.S_IFMT != unix.S_IFDIR {
		return []Entry{{Path: strings.Join(c, "/"), Size: a.Size, Tier: s.tiers[a.Tier].Name}}, nil
	}
	var out []Entry
	err = s.list(c, recursive, &out)
	return out, err
}

func (s *Store) list(c []string, recursive bool, out *[]Entry) error {
	ents, err := s.Readdir(RelPath(strings.Join(c, "/")))
	if err != nil {
		return err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	for _, e := range ents {
		cc := append(append([]string(nil), c...), e.Name)
		rel := strings.Join(cc, "/")
		a, err := s.Getattr(RelPath(rel))
		if err != nil {
			continue // gone since the listing
		}
		if e.Mode == unix.S_IFDIR {
			*out = append(*out, Entry{Path: rel, Tier: s.tiers[a.Tier].Name, IsDir: true})
			if recursive {
				if err := s.list(cc, true, out); err != nil {
					return err
				}
			}
			continue
		}
		*out = append(*out, Entry{Path: rel, Size: a.Size, Tier: s.tiers[a.Tier].Name})
	}
	return nil
}
