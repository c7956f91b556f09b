package policy

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Hysteresis is the width of the band, as a fraction of a tier's capacity,
// between a tier's low mark (Threshold−Hysteresis) and its high mark
// (Threshold). Demotion starts only above the high mark and stops at the
// low mark; promotion fills a tier only up to its low mark; in between,
// nothing moves.
const Hysteresis = 0.05

// ReadAhead is how many following segments of a partition are promoted
// with a segment that is being read: a consumer catching up reads a
// partition in offset order, so the planner promotes ahead of it.
const ReadAhead = 4

// Plan returns the moves that bring the tiers of s back into their bands,
// in execution order: pin moves, then demotions (tier 0 first), then
// promotions (into tier 0 first). It is pure and deterministic: it reads
// only s and c (s.Now is the clock, c.Interval and c.MinAge the only
// settings used; each Tier carries its effective threshold), does no I/O,
// and the order of s.Files does not matter.
//
// The rules:
//   - Pins. A file with PinTier >= 0 that is elsewhere moves straight to
//     PinTier (reason "pin") when that tier has the capacity, whatever the
//     thresholds (not a hard-linked or transient one). Pinned files
//     (Pinned, or PinTier >= 0) are never moved otherwise.
//   - Marks. Tier i's high mark is Threshold·Capacity, its low mark
//     (Threshold−Hysteresis)·Capacity, at least 0. A negative Threshold
//     (-1) turns the policy off for that tier: nothing is demoted out of it
//     and nothing promoted into it; the tier above still demotes into it
//     and promotes out of it.
//   - Eligibility. Not pinned; at most one link; not a transient Kafka name
//     (final suffix ".deleted", ".cleaned", ".swap") nor inside a partition
//     directory renamed "…-delete"; not a segment companion; not empty
//     (for demotion); and sealed: a segment "<20 digits>.log" inside a
//     directory is sealed when the snapshot has a segment with a larger
//     base offset in the same directory, or when it has not been written
//     for MinAge; any other file when it has not been written for MinAge.
//     A file being read may be promoted unsealed.
//   - Age. Files being read are the youngest: LastRead within 2·Interval
//     of Now, and for a segment also the ReadAhead segments that follow it
//     in its partition, in offset order (the most recent read first, then
//     the nearest). Otherwise Kafka order within a partition and
//     modification time across partitions: the order of a k-way merge of
//     the partitions' eligible segments by base offset that always takes
//     the partition whose next segment has the oldest ModTime (ties by
//     Path); a file that is not a segment is a partition of its own.
//   - Placement. From the snapshot alone, each eligible file gets a
//     target tier: the youngest files fill tier 0 up to its low mark (what
//     cannot move counts as already there: pinned files on their pin tier,
//     companions on tier 0), the next youngest tier 1, and so on; each
//     tier takes the youngest that remain until the first that does not
//     fit; the last tier takes the rest (a tier with the policy off is the
//     last for the tiers above it). A file moves only toward its target,
//     and the target of a file does not depend on where files are, so no
//     file ever moves back and forth.
//   - Demotion. For each tier i with a tier below, from the top: when its
//     planned usage is above the high mark, its eligible files whose target
//     is lower move one tier down, oldest first, until usage is at or under
//     the low mark; a file the next tier has no capacity for is skipped.
//     Planned moves count: a tier pushed over its high mark by the tier
//     above is demoted in the same plan (cascade), and the tiers are gone
//     over again while that makes room. A file moves at most once a plan.
//   - Promotion. For each tier i with a tier below, from the top: when its
//     planned usage is under the low mark, the youngest files of tier i+1
//     whose target is tier i or higher move up while they keep the tier at
//     or under its low mark, stopping at the first that does not fit:
//     files being read and the segments ahead of them, then the newest
//     (Pafka's rule). Into tier 0, Kafka companions found on any lower tier
//     come first, every one that fits (they are never demoted).
func Plan(s Snapshot, c Config) []Move {
	if len(s.Tiers) == 0 {
		return nil
	}
	p := newPlanner(s, c)
	p.place()
	p.planPins()
	p.planDemotions()
	for i := 0; i+1 < len(p.tiers); i++ {
		p.planPromotions(i)
	}
	return p.moves()
}

// fstate is one file as the planner tracks it.
type fstate struct {
	f    File
	idx  int   // index in Path order
	size int64 // f.Size, at least 0
	tier int   // planned tier
	// moved is set once this plan moves the file.
	moved bool
	// target is the tier the placement wants an eligible (promotable)
	// file on, once placed.
	target int
	placed bool

	seg    bool // a Kafka segment inside a directory
	off    int64
	part   string
	segIdx int // index in its partition's segment list

	companion bool
	// movable: not pinned, not hard-linked, not transient.
	movable    bool
	demotable  bool
	promotable bool

	// hot: being read (hotDist 0) or up to ReadAhead segments after one
	// being read (hotDist 1..ReadAhead); hotTime is that read's LastRead.
	hot     bool
	hotTime time.Time
	hotDist int

	// age is the merge key: for a segment, the latest ModTime among the
	// demotable segments of its partition up to its own offset, and its
	// own; for any other file, its ModTime.
	age time.Time
}

type planner struct {
	now   time.Time
	tiers []Tier

	byPath []*fstate // sorted by Path
	byAge  []*fstate // sorted by rank, oldest first

	used    []int64 // planned usage of each tier
	high    []int64
	low     []int64
	enabled []bool
	// group is the first tier of each tier's group: the tiers between
	// two tiers with the policy off, which files cannot leave by policy
	// moves.
	group []int

	pins, demotions, promotions []Move
}

func newPlanner(s Snapshot, c Config) *planner {
	n := len(s.Tiers)
	p := &planner{
		now:     s.Now,
		tiers:   s.Tiers,
		used:    make([]int64, n),
		group:   make([]int, n),
		high:    make([]int64, n),
		low:     make([]int64, n),
		enabled: make([]bool, n),
	}
	for i, t := range s.Tiers {
		p.used[i] = t.Used
		if t.Threshold < 0 || t.Capacity <= 0 {
			continue
		}
		p.enabled[i] = true
		p.high[i] = int64(math.Round(t.Threshold * float64(t.Capacity)))
		p.low[i] = min(int64(math.Round(max(t.Threshold-Hysteresis, 0)*float64(t.Capacity))), t.Capacity)
	}
	for i := 1; i < n; i++ {
		p.group[i] = p.group[i-1]
		if !p.enabled[i-1] {
			p.group[i] = i // nothing moves from i-1 down, or up into i-1
		}
	}

	minAge := time.Duration(c.MinAge)
	window := 2 * time.Duration(c.Interval)

	linked := map[uint64]bool{}
	for _, f := range s.Files {
		if f.Tier < 0 || f.Tier >= n {
			continue // not on a tier the planner knows
		}
		if f.Links > 1 {
			// One file under several names: planned once, by the name
			// seen first, and it moves with all of them.
			if linked[f.Ino] {
				continue
			}
			linked[f.Ino] = true
		}
		fs := &fstate{f: f, size: max(f.Size, 0), tier: f.Tier}
		fs.companion = IsCompanion(f.Path)
		pinned := f.Pinned || f.PinTier >= 0
		transient := IsTransient(f.Path) || inDeletedPartition(f.Path)
		fs.movable = !pinned && !transient
		if off, ok := ParseSegment(f.Path); ok {
			if part := PartitionOf(f.Path); part != "" {
				fs.seg, fs.off, fs.part = true, off, part
			}
		}
		p.byPath = append(p.byPath, fs)
	}
	for i, fs := range p.byPath {
		fs.idx = i
	}
	slices.SortFunc(p.byPath, func(x, y *fstate) int {
		return cmp.Or(strings.Compare(x.f.Path, y.f.Path), cmp.Compare(x.f.Ino, y.f.Ino), cmp.Compare(x.idx, y.idx))
	})
	for i, fs := range p.byPath {
		fs.idx = i
	}

	// Partitions: their segments in offset order.
	parts := map[string][]*fstate{}
	var partNames []string
	for _, fs := range p.byPath {
		if !fs.seg {
			continue
		}
		if _, ok := parts[fs.part]; !ok {
			partNames = append(partNames, fs.part)
		}
		parts[fs.part] = append(parts[fs.part], fs)
	}
	for _, name := range partNames {
		list := parts[name]
		slices.SortFunc(list, func(x, y *fstate) int { return cmp.Or(cmp.Compare(x.off, y.off), cmp.Compare(x.idx, y.idx)) })
		for i, fs := range list {
			fs.segIdx = i
		}
	}

	// Eligibility.
	for _, fs := range p.byPath {
		old := p.now.Sub(fs.f.ModTime) >= minAge
		sealed := old
		if fs.seg && fs.segIdx < len(parts[fs.part])-1 {
			sealed = true
		}
		read := !fs.f.LastRead.IsZero() && p.now.Sub(fs.f.LastRead) <= window
		fs.demotable = fs.movable && !fs.companion && fs.size > 0 && sealed
		fs.promotable = fs.movable && !fs.companion && (sealed || read)
	}

	// Reads, and the read-ahead of segments being read.
	for _, fs := range p.byPath {
		if fs.f.LastRead.IsZero() || p.now.Sub(fs.f.LastRead) > window || IsTransient(fs.f.Path) {
			continue
		}
		fs.heat(fs.f.LastRead, 0)
		if fs.seg {
			list := parts[fs.part]
			for j := 1; j <= ReadAhead && fs.segIdx+j < len(list); j++ {
				list[fs.segIdx+j].heat(fs.f.LastRead, j)
			}
		}
	}

	// Ages: the k-way merge of partitions by the ModTime of their next
	// eligible segment is the order of this key (the running maximum),
	// with ties by Path (a partition's paths are contiguous in Path order
	// and sort like its offsets, the names being zero-padded).
	for _, fs := range p.byPath {
		fs.age = fs.f.ModTime
	}
	for _, name := range partNames {
		var run time.Time
		for _, fs := range parts[name] {
			if fs.demotable && fs.f.ModTime.After(run) {
				run = fs.f.ModTime
			}
			if run.After(fs.age) {
				fs.age = run
			}
		}
	}

	p.byAge = append([]*fstate(nil), p.byPath...)
	slices.SortFunc(p.byAge, func(x, y *fstate) int {
		switch {
		case older(x, y):
			return -1
		case older(y, x):
			return 1
		}
		return 0
	})
	return p
}

// heat records a read at t, dist segments behind fs; the most recent read,
// then the nearest, wins.
func (fs *fstate) heat(t time.Time, dist int) {
	if !fs.hot || t.After(fs.hotTime) || (t.Equal(fs.hotTime) && dist < fs.hotDist) {
		fs.hot, fs.hotTime, fs.hotDist = true, t, dist
	}
}

// older is the planner's one order, oldest first: demotion walks it
// forwards; placement and promotion walk it backwards.
func older(a, b *fstate) bool {
	if a.hot != b.hot {
		return !a.hot
	}
	if a.hot {
		if !a.hotTime.Equal(b.hotTime) {
			return a.hotTime.Before(b.hotTime)
		}
		if a.hotDist != b.hotDist {
			return a.hotDist > b.hotDist
		}
	}
	if !a.age.Equal(b.age) {
		return a.age.Before(b.age)
	}
	return a.idx < b.idx // Path order
}

func (p *planner) name(i int) string {
	if n := p.tiers[i].Name; n != "" {
		return n
	}
	return fmt.Sprintf("tier%d", i)
}

func (p *planner) move(fs *fstate, to int, reason string) Move {
	m := Move{Path: fs.f.Path, Ino: fs.f.Ino, From: fs.tier, To: to, Bytes: fs.f.Size, Reason: reason}
	p.used[fs.tier] -= fs.size
	p.used[to] += fs.size
	fs.tier = to
	fs.moved = true
	return m
}

// pinTier is the tier a pin moves fs to, or -1.
func (p *planner) pinTier(fs *fstate) int {
	to := fs.f.PinTier
	if to < 0 || to >= len(p.tiers) || to == fs.tier || IsTransient(fs.f.Path) || inDeletedPartition(fs.f.Path) {
		return -1
	}
	return to
}

// companionGoesUp reports whether fs is a companion that promotion takes
// to tier 0.
func (p *planner) companionGoesUp(fs *fstate) bool {
	return fs.companion && fs.movable && fs.tier > 0 && p.enabled[0] && p.group[fs.tier] == 0
}

// place sets the target tier of every promotable file. It depends on the
// snapshot only, never on the moves planned: a file only ever moves toward
// its target, so no sequence of plans moves a file back where it came from
// (as long as the snapshot does not change otherwise).
func (p *planner) place() {
	n := len(p.tiers)
	// fixed is what the placement does not place, where it will be:
	// space no file accounts for, files that do not move, pinned files on
	// their pin tier, companions on tier 0.
	fixed := make([]int64, n)
	for i, t := range p.tiers {
		fixed[i] = t.Used
	}
	for _, fs := range p.byPath {
		fixed[fs.tier] -= fs.size
		switch {
		case fs.promotable:
		case p.pinTier(fs) >= 0:
			fixed[fs.f.PinTier] += fs.size
		case p.companionGoesUp(fs):
			fixed[0] += fs.size
		default:
			fixed[fs.tier] += fs.size
		}
	}
	for a := 0; a < n; {
		b := a // the group is a..b
		for b+1 < n && p.group[b+1] == a {
			b++
		}
		for t := a; t <= b; t++ {
			if t == b {
				for _, fs := range p.byAge {
					if fs.promotable && !fs.placed && p.group[fs.tier] == a {
						fs.target, fs.placed = b, true
					}
				}
				break
			}
			room := p.low[t] - fixed[t]
			// Files that may go up but not down stay at least here.
			for _, fs := range p.byAge {
				if fs.promotable && !fs.demotable && !fs.placed && fs.tier == t {
					fs.target, fs.placed = t, true
					room -= fs.size
				}
			}
			for k := len(p.byAge) - 1; k >= 0; k-- {
				fs := p.byAge[k]
				if !fs.promotable || fs.placed || p.group[fs.tier] != a {
					continue
				}
				if fs.size > room {
					break
				}
				fs.target, fs.placed = t, true
				room -= fs.size
			}
		}
		a = b + 1
	}
}

// planPins moves files pinned to a tier onto it, where it has room.
func (p *planner) planPins() {
	for _, fs := range p.byPath {
		to := p.pinTier(fs)
		if to < 0 || p.used[to]+fs.size > p.tiers[to].Capacity {
			continue
		}
		p.pins = append(p.pins, p.move(fs, to, "pin"))
	}
}

// planDemotions demotes from every tier above its high mark, from the top,
// and goes over the tiers again while a pass made room below.
func (p *planner) planDemotions() {
	n := len(p.tiers)
	started := make([]bool, n)
	for pass := 0; pass <= n; pass++ {
		changed := false
		for i := 0; i+1 < n; i++ {
			if !p.enabled[i] {
				continue
			}
			if !started[i] {
				if p.used[i] <= p.high[i] {
					continue
				}
				started[i] = true
			}
			if p.demote(i) {
				changed = true
			}
		}
		if !changed {
			return
		}
	}
}

func (p *planner) demote(i int) bool {
	changed := false
	reason := fmt.Sprintf("demote: %s above threshold %.2f", p.name(i), p.tiers[i].Threshold)
	for _, fs := range p.byAge {
		if p.used[i] <= p.low[i] {
			break
		}
		if fs.tier != i || fs.moved || !fs.demotable || fs.target <= i {
			continue
		}
		if p.used[i+1]+fs.size > p.tiers[i+1].Capacity {
			continue
		}
		p.demotions = append(p.demotions, p.move(fs, i+1, reason))
		changed = true
	}
	return changed
}

// planPromotions fills tier i up to its low mark from tier i+1 (and, into
// tier 0, with companions from any tier).
func (p *planner) planPromotions(i int) {
	if !p.enabled[i] || p.used[i] >= p.low[i] {
		return
	}
	if i == 0 {
		p.promoteCompanions()
	}
	below := p.name(i + 1)
	for k := len(p.byAge) - 1; k >= 0; k-- {
		fs := p.byAge[k]
		if fs.tier != i+1 || fs.moved || !fs.promotable || fs.target > i {
			continue
		}
		if p.used[i]+fs.size > p.low[i] {
			return
		}
		reason := "promote: newest on " + below
		if fs.hot {
			reason = "promote: read on " + below
			if fs.hotDist > 0 {
				reason = "promote: read-ahead on " + below
			}
		}
		p.promotions = append(p.promotions, p.move(fs, i, reason))
	}
}

func (p *planner) promoteCompanions() {
	var list []*fstate
	for _, fs := range p.byPath {
		if !fs.moved && p.companionGoesUp(fs) {
			list = append(list, fs)
		}
	}
	slices.SortFunc(list, func(x, y *fstate) int { // newest first, then Path order
		return cmp.Or(y.f.ModTime.Compare(x.f.ModTime), cmp.Compare(x.idx, y.idx))
	})
	for _, fs := range list {
		if p.used[0]+fs.size > p.low[0] {
			continue
		}
		p.promotions = append(p.promotions, p.move(fs, 0, "promote: companion on "+p.name(fs.tier)))
	}
}

func (p *planner) moves() []Move {
	var out []Move
	out = append(out, p.pins...)
	out = append(out, p.demotions...)
	return append(out, p.promotions...)
}
