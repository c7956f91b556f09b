package tiering

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Recovery reads every tier's rename journal: of the records it finds it
// replays the newest, only on copies that are still the directory the
// record names, and removes them all, with any unpublished rename.tmp.
func TestReplayJournalOnEveryTier(t *testing.T) {
	type planted struct {
		tier int
		rec  renameRecord
	}
	cases := []struct {
		name string
		// plant gets the inode numbers of "old" and "cur".
		plant        func(oldIno, curIno uint64) []planted
		renamed      []string // directories expected gone, each to its name+"2"
		kept         []string
		notRenamedTo []string
	}{
		{
			name: "newest-on-second-tier-wins",
			plant: func(oldIno, curIno uint64) []planted {
				return []planted{
					{0, renameRecord{Seq: 3, Ino: oldIno, From: []string{"old"}, To: []string{"old2"}}},
					{1, renameRecord{Seq: 5, Ino: curIno, From: []string{"cur"}, To: []string{"cur2"}}},
				}
			},
			renamed:      []string{"cur"},
			kept:         []string{"old"},
			notRenamedTo: []string{"old2"},
		},
		{
			name: "newest-on-first-tier-wins",
			plant: func(oldIno, curIno uint64) []planted {
				return []planted{
					{0, renameRecord{Seq: 9, Ino: oldIno, From: []string{"old"}, To: []string{"old2"}}},
					{1, renameRecord{Seq: 5, Ino: curIno, From: []string{"cur"}, To: []string{"cur2"}}},
				}
			},
			renamed:      []string{"old"},
			kept:         []string{"cur"},
			notRenamedTo: []string{"cur2"},
		},
		{
			// The old name holds another directory (made anew since):
			// it is not the one the record renames.
			name: "other-directory-under-the-old-name",
			plant: func(oldIno, curIno uint64) []planted {
				return []planted{{1, renameRecord{Seq: 5, Ino: curIno, From: []string{"old"}, To: []string{"old2"}}}}
			},
			kept:         []string{"old", "cur"},
			notRenamedTo: []string{"old2"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			needRoot(t)
			tiers := twoTiers(t, TypeNVMe, 0)
			s := openTest(t, tiers, Options{})
			inos := map[string]uint64{}
			for _, d := range []string{"old", "cur"} {
				a, err := s.Mkdir(RelPath(""), d, 0o755, Owner{})
				if err != nil {
					t.Fatal(err)
				}
				inos[d] = a.Ino
				h, _, err := s.Create(RelPath(d), "f", unix.O_RDWR, 0o644, Owner{})
				if err != nil {
					t.Fatal(err)
				}
				h.Release()
				if err := s.Move(d+"/f", "slow"); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			for _, p := range c.plant(inos["old"], inos["cur"]) {
				b, _ := json.Marshal(p.rec)
				j := filepath.Join(tiers[p.tier].Path, metaDir, "journal")
				mustWrite(t, filepath.Join(j, renameJournal), string(b))
				mustWrite(t, filepath.Join(j, journalTmp), "")
			}

			s2 := openTest(t, tiers, Options{})
			for _, d := range c.renamed {
				if _, err := s2.Getattr(RelPath(d)); err != unix.ENOENT {
					t.Errorf("%s after replay: %v, want ENOENT", d, err)
				}
				a, err := s2.Getattr(RelPath(d + "2"))
				if err != nil || a.Ino != inos[d] {
					t.Errorf("%s2 after replay: ino %d, %v; want %d", d, a.Ino, err, inos[d])
				}
				if _, err := s2.Getattr(RelPath(d + "2/f")); err != nil {
					t.Errorf("%s2/f after replay: %v", d, err)
				}
			}
			for _, d := range c.kept {
				if a, err := s2.Getattr(RelPath(d + "/f")); err != nil || a.Tier != 1 {
					t.Errorf("%s/f after replay: %+v, %v; want it untouched on tier 1", d, a, err)
				}
			}
			for _, d := range c.notRenamedTo {
				for _, tc := range tiers {
					if _, err := os.Lstat(filepath.Join(dataOf(tc), d)); !os.IsNotExist(err) {
						t.Errorf("%s made on %s by a record that must not be replayed: %v", d, tc.Name, err)
					}
				}
			}
			for _, tc := range tiers {
				ents, err := os.ReadDir(filepath.Join(tc.Path, metaDir, "journal"))
				if err != nil || len(ents) != 0 {
					t.Errorf("journal of %s after recovery: %v, %v", tc.Name, ents, err)
				}
			}
		})
	}
}
