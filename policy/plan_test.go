package policy

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tierfs/tierfs/internal/units"
)

// now is the fake clock of every test.
var now = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func testConfig() Config {
	c := DefaultConfig()
	c.Interval = units.Duration(5 * time.Second)
	c.MinAge = units.Duration(30 * time.Second)
	return c
}

func ino(path string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(path))
	return h.Sum64()
}

// file is a file last written age ago.
func file(path string, tier int, size int64, age time.Duration) File {
	return File{Path: path, Ino: ino(path), Tier: tier, Size: size, ModTime: now.Add(-age), PinTier: -1, Links: 1}
}

func segName(part string, off int64) string { return fmt.Sprintf("%s/%020d.log", part, off) }

func seg(part string, off int64, tier int, size int64, age time.Duration) File {
	return file(segName(part, off), tier, size, age)
}

func read(f File, ago time.Duration) File { f.LastRead = now.Add(-ago); return f }

// tiers makes tiers named fast, slow, cold, … with these capacities and a
// threshold of 0.5.
func tiers(caps ...int64) []Tier {
	names := []string{"fast", "slow", "cold", "tape"}
	var ts []Tier
	for i, c := range caps {
		ts = append(ts, Tier{Name: names[i], Capacity: c, Threshold: 0.5})
	}
	return ts
}

// snap fills in each tier's Used from the files.
func snap(ts []Tier, files ...File) Snapshot {
	ts = append([]Tier(nil), ts...)
	for i := range ts {
		ts[i].Used = 0
	}
	counted := map[uint64]bool{}
	for _, f := range files {
		if counted[f.Ino] {
			continue // another name of a file counted (a hard link)
		}
		counted[f.Ino] = true
		ts[f.Tier].Used += f.Size
	}
	return Snapshot{Now: now, Tiers: ts, Files: files}
}

// apply performs moves on a copy of s, failing on a move that does not
// match the snapshot.
func apply(t testing.TB, s Snapshot, moves []Move) Snapshot {
	t.Helper()
	out := Snapshot{Now: s.Now, Tiers: append([]Tier(nil), s.Tiers...), Files: append([]File(nil), s.Files...)}
	idx := map[string]int{}
	for i, f := range out.Files {
		idx[f.Path] = i
	}
	for _, m := range moves {
		i, ok := idx[m.Path]
		if !ok {
			t.Fatalf("move of unknown file %q", m.Path)
		}
		f := &out.Files[i]
		if f.Ino != m.Ino || f.Tier != m.From || f.Size != m.Bytes {
			t.Fatalf("move %+v does not match file %+v", m, *f)
		}
		f.Tier = m.To
		out.Tiers[m.From].Used -= m.Bytes
		out.Tiers[m.To].Used += m.Bytes
	}
	return out
}

// short writes moves as "path from>to".
func short(moves []Move) []string {
	out := []string{}
	for _, m := range moves {
		out = append(out, fmt.Sprintf("%s %d>%d", m.Path, m.From, m.To))
	}
	return out
}

func TestPlan(t *testing.T) {
	const minute = time.Minute
	t2 := tiers(1000, 1000) // high 500, low 450
	t3 := tiers(1000, 1000, 10000)
	withTh := func(ts []Tier, th ...float64) []Tier {
		ts = append([]Tier(nil), ts...)
		for i := range th {
			ts[i].Threshold = th[i]
		}
		return ts
	}
	pinned := func(f File) File { f.Pinned = true; return f }
	pinTo := func(f File, tier int) File { f.Pinned = true; f.PinTier = tier; return f }
	// linked is a file with two names, name and alias.
	linked := func(f File, alias string) []File {
		f.Links = 2
		g := f
		g.Path = alias
		return []File{f, g}
	}

	for _, tc := range []struct {
		name string
		s    Snapshot
		cfg  func(*Config)
		want []string
		// reasons, when set, are the wanted Reason of each move.
		reasons []string
	}{
		{
			name: "below threshold: no moves",
			s:    snap(t2, file("a", 0, 200, 60*minute), file("b", 0, 200, 50*minute)),
			want: []string{},
		},
		{
			name: "above threshold: oldest first until under the low mark",
			s: snap(t2,
				file("f3", 0, 100, 40*minute), file("f1", 0, 100, 60*minute), file("f6", 0, 100, 10*minute),
				file("f2", 0, 100, 50*minute), file("f5", 0, 100, 20*minute), file("f4", 0, 100, 30*minute)),
			// 600 > 500: 600 → 500 → 400 <= 450.
			want:    []string{"f1 0>1", "f2 0>1"},
			reasons: []string{"demote: fast above threshold 0.50", "demote: fast above threshold 0.50"},
		},
		{
			name: "exactly at the high mark: no moves",
			s:    snap(t2, file("a", 0, 250, 60*minute), file("b", 0, 250, 50*minute), file("c", 1, 1, minute)),
			want: []string{},
		},
		{
			name: "hysteresis: between low and high, no moves either way",
			s: snap(t2, file("a", 0, 240, 60*minute), file("b", 0, 230, 50*minute),
				file("new", 1, 5, 2*minute), file("newer", 1, 5, minute)),
			want: []string{},
		},
		{
			name: "below the low mark: promote newest first while it stays under the low mark",
			s: snap(t2, file("a", 0, 300, 60*minute),
				file("old", 1, 100, 90*minute), file("newest", 1, 100, 2*minute), file("new", 1, 40, 5*minute),
				file("newer", 1, 100, 3*minute)),
			// 300 + 100 = 400, + 100 = 500 > 450: stop (never skip to a smaller, older one).
			want:    []string{"newest 1>0"},
			reasons: []string{"promote: newest on slow"},
		},
		{
			name: "promotion fills up to the low mark exactly",
			s:    snap(t2, file("a", 0, 350, 60*minute), file("x", 1, 50, 2*minute), file("y", 1, 50, 3*minute), file("z", 1, 50, 4*minute)),
			want: []string{"x 1>0", "y 1>0"},
		},
		{
			name: "threshold -1 on every tier: no moves",
			s:    snap(withTh(t2, -1, -1), file("a", 0, 900, 60*minute), file("b", 1, 1, minute)),
			want: []string{},
		},
		{
			name: "threshold -1 on every tier: pin moves still happen",
			s: snap(withTh(t2, -1, -1), file("a", 0, 900, 60*minute),
				pinTo(file("p", 0, 10, time.Second), 1)),
			want:    []string{"p 0>1"},
			reasons: []string{"pin"},
		},
		{
			name: "threshold -1 on the fast tier: nothing promoted into it",
			s:    snap(withTh(t2, -1, 0.5), file("a", 0, 10, 60*minute), file("b", 1, 10, minute)),
			want: []string{},
		},
		{
			name: "per-tier threshold 0.8: 600 of 1000 is fine",
			s:    snap(withTh(t2, 0.8), file("a", 0, 300, 60*minute), file("b", 0, 300, 50*minute)),
			want: []string{},
		},
		{
			name: "per-tier threshold 0.2: high 200, low 150",
			s: snap(withTh(t2, 0.2), file("a", 0, 100, 60*minute), file("b", 0, 100, 50*minute),
				file("c", 0, 50, 40*minute), file("d", 0, 50, 30*minute)),
			want: []string{"a 0>1", "b 0>1"},
		},
		{
			name: "threshold -1 on the middle tier: demoted into, never out of or into it from below",
			s: snap(withTh(t3, 0.5, -1, 0.5),
				file("a", 0, 300, 60*minute), file("b", 0, 300, 50*minute),
				file("m", 1, 900, 120*minute), file("c", 2, 10, minute)),
			// Fast is above (600), but slow has room for 100 only.
			want: []string{},
		},
		{
			name: "threshold -1 on the middle tier: it takes demotions but is never demoted or filled",
			s: snap(withTh(t3, 0.5, -1, 0.5),
				file("a", 0, 300, 60*minute), file("b", 0, 300, 50*minute),
				file("m", 1, 600, 120*minute), file("c", 2, 10, minute)),
			want: []string{"a 0>1"},
		},
		{
			name: "threshold -1 on the middle tier: the fast tier still promotes from it",
			s: snap(withTh(t3, 0.5, -1, 0.5),
				file("a", 0, 100, 60*minute), file("m", 1, 100, 120*minute), file("c", 2, 10, minute)),
			want: []string{"m 1>0"},
		},
		{
			name: "pinned files are never demoted",
			s: snap(t2, pinned(file("p", 0, 100, 90*minute)), file("a", 0, 100, 60*minute), file("b", 0, 100, 50*minute),
				file("c", 0, 100, 40*minute), file("d", 0, 100, 30*minute), file("e", 0, 100, 20*minute)),
			want: []string{"a 0>1", "b 0>1"},
		},
		{
			name: "pinned files are never promoted",
			s:    snap(t2, pinned(file("p", 1, 10, minute)), file("q", 1, 10, 2*minute)),
			want: []string{"q 1>0"},
		},
		{
			name: "pin tier: moved up first, whatever the thresholds",
			s: snap(t2, file("a", 0, 300, 60*minute), file("b", 0, 300, 50*minute),
				pinTo(file("p", 1, 100, time.Second), 0)),
			// 700 after the pin: a alone brings it to 400.
			want:    []string{"p 1>0", "a 0>1"},
			reasons: []string{"pin", "demote: fast above threshold 0.50"},
		},
		{
			name: "pin tier: moved down, and not promoted by the newest rule",
			s:    snap(t2, pinTo(file("p", 0, 100, 60*minute), 1), file("q", 1, 10, minute)),
			want: []string{"p 0>1", "q 1>0"},
		},
		{
			name: "pin tier: destination capacity respected",
			s:    snap(tiers(1000, 2000), file("a", 0, 950, 60*minute), pinTo(file("p", 1, 100, time.Second), 0)),
			// a alone fills fast; the pin waits for the next plan, a is demoted.
			want: []string{"a 0>1"},
		},
		{
			name: "pin tier: already there, not moved",
			s:    snap(t2, pinTo(file("p", 0, 900, 60*minute), 0)),
			want: []string{},
		},
		{
			name: "a file with several names moves once, with all of them",
			s: snap(t2, append(append(linked(file("l", 0, 300, 90*minute), "l-alias"), file("a", 0, 200, 60*minute), file("b", 0, 200, 50*minute)),
				linked(file("l2", 1, 10, minute), "l2-alias")...)...),
			// 700, counted once per file: l → 400 (under 450); the new l2
			// comes up into the room, once, by one of its names.
			want: []string{"l 0>1", "l2 1>0"},
		},
		{
			name: "transient names and deleted partitions are never moved",
			s: snap(t2,
				file("t-0/00000000000000000000.log.deleted", 0, 100, 90*minute),
				file("t-0/00000000000000000100.log.cleaned", 0, 100, 90*minute),
				file("t-0/00000000000000000200.log.swap", 0, 100, 90*minute),
				file("t-0.0123456789abcdef0123456789abcdef-delete/00000000000000000000.log", 0, 100, 90*minute),
				file("t-0.0123456789abcdef0123456789abcdef-delete/00000000000000000100.log", 0, 100, 90*minute),
				file("a", 0, 100, 60*minute),
				file("u-0/00000000000000000000.log.deleted", 1, 10, minute)),
			// 600: only a may go (→ 500, still above the low mark, nothing else).
			want: []string{"a 0>1"},
		},
		{
			name: "companions are never demoted",
			s: snap(t2,
				file("t-0/00000000000000000000.index", 0, 200, 90*minute),
				file("t-0/00000000000000000000.timeindex", 0, 200, 90*minute),
				file("t-0/00000000000000000000.snapshot", 0, 100, 90*minute),
				file("t-0/00000000000000000000.txnindex", 0, 100, 90*minute),
				seg("t-0", 0, 0, 100, 80*minute), seg("t-0", 100, 0, 10, time.Second)),
			want: []string{"t-0/00000000000000000000.log 0>1"},
		},
		{
			name: "companions found below are promoted to tier 0 first",
			s: snap(t3,
				file("a", 0, 100, 60*minute),
				file("new", 1, 10, time.Minute),
				file("t-0/00000000000000000000.index", 1, 10, 90*minute),
				file("t-0/00000000000000000000.timeindex", 2, 10, 90*minute),
				file("t-0/00000000000000000000.index.deleted", 1, 10, 90*minute)),
			want:    []string{"t-0/00000000000000000000.index 1>0", "t-0/00000000000000000000.timeindex 2>0", "new 1>0"},
			reasons: []string{"promote: companion on slow", "promote: companion on cold", "promote: newest on slow"},
		},
		{
			name: "companions are not promoted above the low mark",
			s: snap(t2, file("a", 0, 445, 60*minute),
				file("t-0/00000000000000000000.index", 1, 10, 90*minute),
				file("t-0/00000000000000000000.timeindex", 1, 5, 90*minute)),
			want: []string{"t-0/00000000000000000000.timeindex 1>0"},
		},
		{
			name: "active segment: young, not demoted",
			s:    snap(t2, seg("t-0", 0, 0, 900, 10*time.Second)),
			want: []string{},
		},
		{
			name: "active segment: older than min_age, demoted",
			s:    snap(t2, seg("t-0", 0, 0, 900, 31*time.Second)),
			want: []string{"t-0/00000000000000000000.log 0>1"},
		},
		{
			name: "segment sealed by a newer one is demoted however young",
			s:    snap(t2, seg("t-0", 0, 0, 500, 10*time.Second), seg("t-0", 500, 0, 400, time.Second)),
			want: []string{"t-0/00000000000000000000.log 0>1"},
		},
		{
			name: "other files: eligible only after min_age",
			s: snap(t2, file("young", 0, 500, 10*time.Second), file("old", 0, 300, 31*time.Second),
				file("t-0/leader-epoch-checkpoint", 0, 100, 20*time.Second)),
			want: []string{"old 0>1"},
		},
		{
			name: "min_age 0 makes everything sealed",
			s:    snap(t2, file("young", 0, 500, 0), seg("t-0", 0, 0, 400, 0)),
			cfg:  func(c *Config) { c.MinAge = 0 },
			want: []string{"t-0/00000000000000000000.log 0>1", "young 0>1"},
		},
		{
			name: "partition order: base offset within a partition, modification time across",
			s: snap(withTh(t2, 0.3), // high 300, low 250
				seg("a-0", 0, 0, 100, 40*minute), seg("a-0", 10, 0, 100, 50*minute), seg("a-0", 20, 0, 100, time.Second),
				seg("b-0", 0, 0, 100, 45*minute), seg("b-0", 10, 0, 100, 20*minute), seg("b-0", 20, 0, 100, time.Second)),
			// merge: b0 (45m) before a0 (40m); then a0; then a10 (50m,
			// but after a0 in its partition) before b10 (20m); actives stay.
			want: []string{
				"b-0/00000000000000000000.log 0>1", "a-0/00000000000000000000.log 0>1",
				"a-0/00000000000000000010.log 0>1", "b-0/00000000000000000010.log 0>1",
			},
		},
		{
			name: "partition order: other files are partitions of their own",
			s: snap(withTh(t2, 0.3),
				seg("a-0", 0, 0, 100, 40*minute), seg("a-0", 10, 0, 100, 50*minute), seg("a-0", 20, 0, 100, time.Second),
				file("x", 0, 100, 45*minute), file("y", 0, 100, 42*minute), file("z", 0, 100, 30*minute)),
			want: []string{"x 0>1", "y 0>1", "a-0/00000000000000000000.log 0>1", "a-0/00000000000000000010.log 0>1"},
		},
		{
			name: "promotion in reverse: newest of a partition first",
			s: snap(withTh(t2, 0.3), // low 250
				seg("a-0", 0, 1, 100, 40*minute), seg("a-0", 10, 1, 100, 50*minute), seg("a-0", 20, 1, 100, 30*minute)),
			want: []string{"a-0/00000000000000000020.log 1>0", "a-0/00000000000000000010.log 1>0"},
		},
		{
			name: "read-triggered promotion with read-ahead of 4",
			s: snap(tiers(200, 1000), // low 90
				seg("t-0", 0, 1, 10, 100*minute), seg("t-0", 1, 1, 10, 99*minute), read(seg("t-0", 2, 1, 10, 98*minute), time.Second),
				seg("t-0", 3, 1, 10, 97*minute), seg("t-0", 4, 0, 10, 96*minute), seg("t-0", 5, 1, 10, 95*minute),
				seg("t-0", 6, 1, 10, 94*minute), seg("t-0", 7, 1, 10, 93*minute), seg("t-0", 8, 1, 10, 92*minute),
				seg("t-0", 9, 1, 10, 91*minute), file("x", 1, 10, 10*minute)),
			// fast holds 10: 2 (read), 3, 5, 6 (ahead: 4 is already
			// fast), then newest: x, 9, 8, 7 → 90; 1 would be 100.
			want: []string{
				"t-0/00000000000000000002.log 1>0", "t-0/00000000000000000003.log 1>0",
				"t-0/00000000000000000005.log 1>0", "t-0/00000000000000000006.log 1>0",
				"x 1>0", "t-0/00000000000000000009.log 1>0", "t-0/00000000000000000008.log 1>0",
				"t-0/00000000000000000007.log 1>0",
			},
			reasons: []string{
				"promote: read on slow", "promote: read-ahead on slow", "promote: read-ahead on slow", "promote: read-ahead on slow",
				"promote: newest on slow", "promote: newest on slow", "promote: newest on slow", "promote: newest on slow",
			},
		},
		{
			name: "read-triggered promotion: a read long ago does not count",
			s: snap(tiers(200, 1000),
				read(seg("t-0", 0, 1, 50, 100*minute), 11*time.Second), seg("t-0", 1, 1, 50, 90*minute), file("x", 1, 50, 10*minute)),
			want: []string{"x 1>0"},
		},
		{
			name: "read-triggered promotion: the most recent reader first",
			s: snap(tiers(200, 1000), // low 90
				read(seg("a-0", 0, 1, 30, 100*minute), 3*time.Second), seg("a-0", 1, 1, 30, 99*minute),
				read(seg("b-0", 0, 1, 30, 100*minute), time.Second), seg("b-0", 1, 1, 30, 99*minute), seg("b-0", 2, 1, 30, time.Second)),
			// b0 then b1 (b2 is the young active segment: not ahead), then a0.
			want: []string{"b-0/00000000000000000000.log 1>0", "b-0/00000000000000000001.log 1>0", "a-0/00000000000000000000.log 1>0"},
		},
		{
			name:    "read-triggered promotion: a read active segment moves up, an unread one does not",
			s:       snap(t2, read(seg("a-0", 0, 1, 10, time.Second), time.Second), seg("b-0", 0, 1, 10, time.Second)),
			want:    []string{"a-0/00000000000000000000.log 1>0"},
			reasons: []string{"promote: read on slow"},
		},
		{
			name: "files being read are demoted last",
			s: snap(t2, read(file("r", 0, 100, 90*minute), time.Second), file("a", 0, 100, 60*minute), file("b", 0, 100, 50*minute),
				file("c", 0, 100, 40*minute), file("d", 0, 100, 30*minute), file("e", 0, 100, 20*minute)),
			want: []string{"a 0>1", "b 0>1"},
		},
		{
			name: "destination capacity respected: a file that does not fit is skipped",
			s: snap(tiers(1000, 250),
				file("big", 0, 300, 90*minute), file("a", 0, 100, 80*minute), file("b", 0, 100, 70*minute),
				file("y1", 0, 200, 20*minute), file("y2", 0, 200, 10*minute)),
			// Placement keeps y2, y1 (400) on fast; big, a, b are to go.
			// 900: big does not fit on slow, a → 800, b → 700.
			want: []string{"a 0>1", "b 0>1"},
		},
		{
			name: "destination capacity: files placed on the tier stay, even above the high mark",
			s: snap(tiers(1000, 250),
				file("big", 0, 300, 90*minute), file("a", 0, 100, 60*minute), file("b", 0, 100, 50*minute), file("c", 0, 100, 40*minute)),
			// Only big is beyond fast's low mark, and it does not fit
			// below: a, b, c would come back up once big is gone.
			want: []string{},
		},
		{
			name: "destination capacity respected: nothing fits",
			s:    snap(tiers(1000, 100), file("a", 0, 300, 90*minute), file("b", 0, 300, 60*minute), file("c", 1, 50, 60*minute)),
			want: []string{},
		},
		{
			name: "three tiers cascade in one plan",
			s: snap(t3,
				file("f1", 0, 100, 60*minute), file("f2", 0, 100, 50*minute), file("f3", 0, 100, 40*minute),
				file("f4", 0, 100, 30*minute), file("f5", 0, 100, 20*minute), file("f6", 0, 100, 10*minute),
				file("s1", 1, 120, 5*time.Hour), file("s2", 1, 120, 4*time.Hour), file("s3", 1, 120, 3*time.Hour),
				file("s4", 1, 120, 2*time.Hour)),
			// fast 600 → 400; slow 480 + 200 = 680 → 560 → 440.
			want: []string{"f1 0>1", "f2 0>1", "s1 1>2", "s2 1>2"},
			reasons: []string{
				"demote: fast above threshold 0.50", "demote: fast above threshold 0.50",
				"demote: slow above threshold 0.50", "demote: slow above threshold 0.50",
			},
		},
		{
			name: "three tiers: promotion climbs one tier per plan",
			s:    snap(t3, file("c1", 2, 100, minute), file("c2", 2, 100, 2*minute)),
			want: []string{"c1 2>1", "c2 2>1"},
		},
		{
			name: "demotion and promotion in one plan never move the same file twice",
			s: snap(t3,
				file("f1", 0, 100, 60*minute), file("f2", 0, 100, 50*minute), file("f3", 0, 100, 40*minute),
				file("f4", 0, 100, 30*minute), file("f5", 0, 100, 20*minute), file("f6", 0, 100, 10*minute),
				file("c1", 2, 100, minute)),
			// slow gets f1, f2 (200 < 450) and could take c1 from cold.
			want: []string{"f1 0>1", "f2 0>1", "c1 2>1"},
		},
		{
			name: "a newer file below swaps with the demoted ones",
			s: snap(t2,
				file("a", 0, 300, 60*minute), file("b", 0, 300, 50*minute), file("n", 1, 40, minute)),
			// 600 → 300; n (newer than everything) fits: 340.
			want: []string{"a 0>1", "n 1>0"},
		},
		{
			name: "space no file accounts for counts",
			s: func() Snapshot {
				s := snap(t2, file("a", 0, 100, 60*minute), file("b", 0, 100, 50*minute), file("c", 0, 100, 40*minute))
				s.Tiers[0].Used += 300
				return s
			}(),
			want: []string{"a 0>1", "b 0>1"},
		},
		{
			name: "the read window is twice the interval",
			s: snap(tiers(200, 1000),
				read(seg("t-0", 0, 1, 50, 100*minute), 15*time.Second), seg("t-0", 1, 1, 50, 90*minute), file("x", 1, 50, 10*minute)),
			cfg:  func(c *Config) { c.Interval = units.Duration(10 * time.Second) },
			want: []string{"t-0/00000000000000000000.log 1>0"},
		},
		{
			name: "zero-size files are not demoted",
			s:    snap(t2, file("empty", 0, 0, 90*minute), file("a", 0, 300, 60*minute), file("b", 0, 300, 50*minute)),
			want: []string{"a 0>1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			if tc.cfg != nil {
				tc.cfg(&c)
			}
			moves := Plan(tc.s, c)
			if got := short(moves); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("plan:\n got %q\nwant %q", got, tc.want)
			}
			if tc.reasons != nil {
				var got []string
				for _, m := range moves {
					got = append(got, m.Reason)
				}
				if !reflect.DeepEqual(got, tc.reasons) {
					t.Errorf("reasons:\n got %q\nwant %q", got, tc.reasons)
				}
			}
			for _, m := range moves {
				if m.Bytes < 0 || m.Ino != ino(m.Path) {
					t.Errorf("bad move %+v", m)
				}
			}
			// Applying the plan reaches a fixed point: the next plan on
			// the result moves nothing back.
			s := apply(t, tc.s, moves)
			for round := 0; round < 5; round++ {
				next := Plan(s, c)
				if len(next) == 0 {
					break
				}
				for _, m := range next {
					for _, prev := range moves {
						if m.Path == prev.Path && m.To == prev.From {
							t.Fatalf("round %d moves %s back: %+v after %+v", round+2, m.Path, m, prev)
						}
					}
				}
				s = apply(t, s, next)
			}
		})
	}
}

// A file just demoted is not promoted by the next plan, even when the
// demotion overshot the low mark by a lot.
func TestPlanDemotedNotPromotedNext(t *testing.T) {
	c := testConfig()
	s := snap(tiers(1000, 1000),
		file("small", 0, 20, 90*time.Minute), file("big", 0, 300, 80*time.Minute), file("rest", 0, 300, 10*time.Minute))
	// 620: small → 600, big → 300. small would fit back (320 <= 450).
	moves := Plan(s, c)
	if got, want := short(moves), []string{"small 0>1", "big 0>1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("plan %q, want %q", got, want)
	}
	if next := Plan(apply(t, s, moves), c); len(next) != 0 {
		t.Fatalf("next plan %q, want none", short(next))
	}
}

// A tier whose oldest file does not fit below waits for the tier below to
// make room in the same plan, and files placed on the tier are not
// demoted in its stead.
func TestPlanSecondPassUsesRoomMadeBelow(t *testing.T) {
	c := testConfig()
	s := snap([]Tier{
		{Name: "fast", Capacity: 1000, Threshold: 0.5},
		{Name: "slow", Capacity: 400, Threshold: 0.5}, // high 200, low 180
		{Name: "cold", Capacity: 10000, Threshold: 0.5},
	},
		file("big", 0, 200, 90*time.Minute), file("x", 0, 20, 60*time.Minute), file("y", 0, 300, 50*time.Minute),
		file("z", 0, 80, 40*time.Minute),
		file("old", 1, 230, 5*time.Hour))
	// fast keeps z, y, x (400 <= 450); big does not fit on slow (230 +
	// 200 > 400) until old has gone to cold.
	moves := Plan(s, c)
	if got, want := short(moves), []string{"old 1>2", "big 0>1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("plan %q, want %q", got, want)
	}
	if next := Plan(apply(t, s, moves), c); len(next) != 0 {
		t.Errorf("then %q; want a fixed point", short(next))
	}
}

func TestPlanDeterministic(t *testing.T) {
	c := testConfig()
	for seed := int64(0); seed < 50; seed++ {
		s := randomSnapshot(rand.New(rand.NewSource(seed)))
		want := Plan(s, c)
		r := rand.New(rand.NewSource(seed + 1000))
		for k := 0; k < 3; k++ {
			sh := s
			sh.Files = append([]File(nil), s.Files...)
			r.Shuffle(len(sh.Files), func(i, j int) { sh.Files[i], sh.Files[j] = sh.Files[j], sh.Files[i] })
			if got := Plan(sh, c); !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d: plan depends on the order of Files:\n%q\n%q", seed, short(got), short(want))
			}
		}
	}
}

// The demotion order is the k-way merge the design asks for: partitions'
// eligible segments by base offset, the partition whose next segment is
// oldest first (ties by Path), other files as partitions of one.
func TestPlanOrderIsKWayMerge(t *testing.T) {
	c := testConfig()
	c.MinAge = 0
	for seed := int64(0); seed < 200; seed++ {
		r := rand.New(rand.NewSource(seed))
		var files []File
		nparts := 1 + r.Intn(5)
		for p := 0; p < nparts; p++ {
			part := fmt.Sprintf("topic%d-%d", r.Intn(3), p)
			nseg := 1 + r.Intn(6)
			for k := 0; k < nseg; k++ {
				// Coarse times so that ties happen.
				files = append(files, seg(part, int64(k*100+r.Intn(50)), 0, 1, time.Duration(1+r.Intn(8))*time.Minute))
			}
		}
		for k := r.Intn(4); k > 0; k-- {
			files = append(files, file(fmt.Sprintf("f%d", r.Intn(100)), 0, 1, time.Duration(1+r.Intn(8))*time.Minute))
		}
		files = dedup(files)
		// Threshold 0.05: low mark 0, everything eligible goes.
		s := snap([]Tier{{Name: "fast", Capacity: 1000, Threshold: 0.05}, {Name: "slow", Capacity: 1 << 40, Threshold: 0.5}}, files...)
		s.Tiers[0].Used = 1000
		var got []string
		for _, m := range Plan(s, c) {
			got = append(got, m.Path)
		}
		if want := kwayMerge(files); !reflect.DeepEqual(got, want) {
			t.Fatalf("seed %d:\n got %q\nwant %q", seed, got, want)
		}
	}
}

func dedup(files []File) []File {
	seen := map[string]bool{}
	var out []File
	for _, f := range files {
		if !seen[f.Path] {
			seen[f.Path] = true
			out = append(out, f)
		}
	}
	return out
}

// kwayMerge is the reference order: a literal k-way merge.
func kwayMerge(files []File) []string {
	parts := map[string][]File{}
	var keys []string
	for _, f := range files {
		key := "\x00" + f.Path // a file of its own
		if _, ok := ParseSegment(f.Path); ok && PartitionOf(f.Path) != "" {
			key = PartitionOf(f.Path)
		}
		if _, ok := parts[key]; !ok {
			keys = append(keys, key)
		}
		parts[key] = append(parts[key], f)
	}
	for _, k := range keys {
		l := parts[k]
		sort.Slice(l, func(i, j int) bool {
			a, _ := ParseSegment(l[i].Path)
			b, _ := ParseSegment(l[j].Path)
			return a < b
		})
	}
	var out []string
	for {
		best := ""
		for _, k := range keys {
			l := parts[k]
			if len(l) == 0 {
				continue
			}
			if best == "" {
				best = k
				continue
			}
			h, b := l[0], parts[best][0]
			if h.ModTime.Before(b.ModTime) || (h.ModTime.Equal(b.ModTime) && h.Path < b.Path) {
				best = k
			}
		}
		if best == "" {
			return out
		}
		out = append(out, parts[best][0].Path)
		parts[best] = parts[best][1:]
	}
}

// randomSnapshot makes a Kafka-shaped snapshot with every kind of file the
// planner knows, on 2 to 4 tiers, with usage consistent with the files.
func randomSnapshot(r *rand.Rand) Snapshot {
	ntiers := 2 + r.Intn(3)
	var ts []Tier
	for i := 0; i < ntiers; i++ {
		th := []float64{0.3, 0.5, 0.5, 0.7, 0.9, 1, -1}[r.Intn(7)]
		ts = append(ts, Tier{Name: fmt.Sprintf("t%d", i), Capacity: int64(500 + r.Intn(3000)), Threshold: th})
	}
	free := make([]int64, ntiers)
	for i, t := range ts {
		free[i] = t.Capacity
	}
	var files []File
	add := func(f File) {
		// Anywhere there is room, mostly high up.
		for try := 0; try < 4; try++ {
			tier := r.Intn(ntiers)
			if r.Intn(2) == 0 {
				tier = 0
			}
			if f.Size <= free[tier] {
				f.Tier = tier
				free[tier] -= f.Size
				files = append(files, f)
				return
			}
		}
	}
	decorate := func(f File) File {
		switch r.Intn(20) {
		case 0:
			f.Pinned = true
		case 1:
			f.Pinned = true
			f.PinTier = r.Intn(ntiers)
		case 2:
			f.Links = 2
		case 3, 4, 5:
			f.LastRead = now.Add(-time.Duration(r.Intn(20)) * time.Second)
		}
		return f
	}
	size := func() int64 {
		if r.Intn(4) == 0 {
			return int64(r.Intn(10))
		}
		return int64(20 + r.Intn(300))
	}
	age := func() time.Duration { return time.Duration(r.Intn(120)) * time.Second * time.Duration(1+r.Intn(60)) }
	nparts := r.Intn(6)
	for p := 0; p < nparts; p++ {
		part := fmt.Sprintf("topic-%d", p)
		nseg := 1 + r.Intn(8)
		for k := 0; k < nseg; k++ {
			off := int64(k * 1000)
			add(decorate(seg(part, off, 0, size(), age())))
			if r.Intn(2) == 0 {
				add(decorate(file(fmt.Sprintf("%s/%020d.index", part, off), 0, int64(r.Intn(20)), age())))
			}
			if r.Intn(8) == 0 {
				add(decorate(file(fmt.Sprintf("%s/%020d.log.deleted", part, off+1), 0, size(), age())))
			}
		}
		add(decorate(file(part+"/leader-epoch-checkpoint", 0, 1, age())))
	}
	for k := r.Intn(8); k > 0; k-- {
		add(decorate(file(fmt.Sprintf("other/f%d", k), 0, size(), age())))
	}
	out := Snapshot{Now: now, Tiers: ts, Files: files}
	for i := range out.Tiers {
		out.Tiers[i].Used = out.Tiers[i].Capacity - free[i]
		if r.Intn(5) == 0 && free[i] > 10 { // space taken by something else
			out.Tiers[i].Used += int64(r.Intn(int(free[i] / 2)))
		}
	}
	return out
}

// checkPlan checks one plan against the rules that hold for every plan.
func checkPlan(t *testing.T, seed int64, round int, s Snapshot, moves []Move) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d round %d: %s\nplan %q", seed, round, fmt.Sprintf(format, args...), short(moves))
	}
	files := map[string]File{}
	for _, f := range s.Files {
		files[f.Path] = f
	}
	used := make([]int64, len(s.Tiers))
	for i, t := range s.Tiers {
		used[i] = t.Used
	}
	seen := map[string]bool{}
	var movedIno map[uint64]bool
	phase := 0 // 0 pins, 1 demotions, 2 promotions
	for _, m := range moves {
		f, ok := files[m.Path]
		if !ok {
			fail("unknown file %q", m.Path)
		}
		if seen[m.Path] {
			fail("%s moved twice", m.Path)
		}
		if movedIno == nil {
			movedIno = map[uint64]bool{}
		}
		seen[m.Path] = true
		if m.From != f.Tier || m.Bytes != f.Size || m.Ino != f.Ino {
			fail("move %+v does not match %+v", m, f)
		}
		if IsTransient(f.Path) {
			fail("moved %+v", f)
		}
		if movedIno[m.Ino] {
			fail("inode %d moved twice (%s)", m.Ino, m.Path)
		}
		movedIno[m.Ino] = true
		used[m.From] -= m.Bytes
		used[m.To] += m.Bytes
		if used[m.To] > s.Tiers[m.To].Capacity {
			fail("%s overfills tier %d: %d > %d", m.Path, m.To, used[m.To], s.Tiers[m.To].Capacity)
		}
		switch {
		case m.Reason == "pin":
			if phase > 0 || m.To != f.PinTier {
				fail("bad pin move %+v", m)
			}
		case strings.HasPrefix(m.Reason, "demote"):
			if phase > 1 || m.To != m.From+1 || f.Pinned || f.PinTier >= 0 || IsCompanion(f.Path) {
				fail("bad demotion %+v of %+v", m, f)
			}
			if s.Tiers[m.From].Threshold < 0 {
				fail("demotion out of a disabled tier: %+v", m)
			}
			phase = 1
		case strings.HasPrefix(m.Reason, "promote"):
			if f.Pinned || f.PinTier >= 0 || s.Tiers[m.To].Threshold < 0 {
				fail("bad promotion %+v of %+v", m, f)
			}
			if IsCompanion(f.Path) {
				if m.To != 0 {
					fail("companion promoted to %d", m.To)
				}
			} else if m.To != m.From-1 {
				fail("promotion skips a tier: %+v", m)
			}
			to := s.Tiers[m.To]
			if low := int64(math.Round((to.Threshold - Hysteresis) * float64(to.Capacity))); used[m.To] > low {
				fail("promotion of %s takes tier %d to %d, above its low mark %d", m.Path, m.To, used[m.To], low)
			}
			phase = 2
		default:
			fail("reason %q", m.Reason)
		}
	}
}

// Applying plans over and over reaches a fixed point within a few rounds,
// and no file ever moves back the way it came.
func TestPlanConvergesWithoutPingPong(t *testing.T) {
	c := testConfig()
	var totalMoves, maxRounds int
	for seed := int64(0); seed < 500; seed++ {
		r := rand.New(rand.NewSource(seed))
		s := randomSnapshot(r)
		if r.Intn(3) == 0 {
			c.MinAge = 0
		} else {
			c.MinAge = units.Duration(30 * time.Second)
		}
		dir := map[string]int{} // +1 went down, -1 went up (pins excluded)
		rounds := 0
		for ; ; rounds++ {
			if rounds == 12 {
				t.Fatalf("seed %d: no fixed point after %d rounds", seed, rounds)
			}
			moves := Plan(s, c)
			checkPlan(t, seed, rounds, s, moves)
			if len(moves) == 0 {
				break
			}
			totalMoves += len(moves)
			for _, m := range moves {
				if m.Reason == "pin" {
					continue
				}
				d := 1
				if m.To < m.From {
					d = -1
				}
				if dir[m.Path] == -d {
					t.Fatalf("seed %d round %d: %s moves back (%+v)", seed, rounds, m.Path, m)
				}
				dir[m.Path] = d
			}
			s = apply(t, s, moves)
		}
		maxRounds = max(maxRounds, rounds)
	}
	t.Logf("%d moves in all; at most %d rounds to a fixed point", totalMoves, maxRounds)
}

func BenchmarkPlan(b *testing.B) {
	// 500 partitions of 100 segments with their indexes on 3 tiers.
	var files []File
	for p := 0; p < 500; p++ {
		part := fmt.Sprintf("topic-%d", p)
		for k := int64(0); k < 100; k++ {
			age := time.Duration(100-k)*time.Minute + time.Duration(p)*time.Second
			tier := int(k*3/100+2) % 3
			files = append(files, seg(part, k*1000, tier, 1<<20, age))
			files = append(files, file(fmt.Sprintf("%s/%020d.index", part, k*1000), 0, 1<<10, age))
		}
	}
	s := snap(tiers(40<<30, 40<<30, 100<<30), files...)
	c := testConfig()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Plan(s, c)
	}
}
