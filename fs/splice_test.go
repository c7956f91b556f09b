package fs

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/tierfs/tierfs/internal/fusedev"
)

// A supervised mount, the default, takes large WRITEs' data from a pipe
// (internal/fusedev splices requests; tiering.Handle.WritePipe): writes
// of every size and alignment land intact, through a spill to the slow
// tier in the middle of a WRITE (the fast tier's tmpfs fills up part way
// through a splice, and the rest of the data waits in the pipe) and across
// a move of the open file.
func TestSplicedWrites(t *testing.T) {
	fast := tmpfsTier(t, "6m")
	slowDir := filepath.Join(t.TempDir(), "slow")
	if err := os.Mkdir(slowDir, 0o700); err != nil {
		t.Fatal(err)
	}
	m := mount(t, mountOpt{supervised: true, devFuse: true, tierDirs: []string{fast.dir, slowDir}})
	before := m.call(t, request{Op: "spliced"}).Spliced
	f, err := os.OpenFile(m.path("seg"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const span = 12 << 20 // twice the fast tier's capacity
	want := make([]byte, span)
	rng := rand.New(rand.NewPCG(3, 4))
	writes, big := 0, 0
	write := func(off, size int) {
		t.Helper()
		p := make([]byte, size)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if n, err := f.WriteAt(p, int64(off)); err != nil || n != size {
			t.Fatalf("write of %d bytes at %d: %d, %v", size, off, n, err)
		}
		copy(want[off:], p)
		writes++
		if size >= fusedev.SpliceMin {
			big++
		}
	}
	// Appends of 1 MiB and odd sizes to 8 MiB: the file leaves the fast
	// tier (a tmpfs of 6 MiB) during one of them.
	for off := 0; off < 8<<20; {
		size := 1 << 20
		if writes%3 == 1 {
			size = 1 + rng.IntN(300<<10)
		}
		size = min(size, 8<<20-off)
		write(off, size)
		off += size
	}
	if tier := m.tierOf(t, "seg"); tier != 1 {
		t.Fatalf("seg on tier %d after 8 MiB written; want it spilled to the slow tier (1)", tier)
	}
	if err := m.move(t, "seg", "fast"); err == nil {
		t.Fatalf("moving 8 MiB onto a 6 MiB tmpfs succeeded")
	}
	// Over-writes at random places, and a move back and forth of the
	// open file between them.
	for i := range 40 {
		size := 1 + rng.IntN(1<<20)
		write(rng.IntN(span-size), size)
		if i == 20 {
			if err := f.Truncate(4 << 20); err != nil {
				t.Fatal(err)
			}
			clear(want[4<<20:])
			if err := m.move(t, "seg", "fast"); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := os.ReadFile(filepath.Join(m.tiers[m.tierOf(t, "seg")], "seg"))
	if err != nil {
		t.Fatal(err)
	}
	size, _ := f.Seek(0, 2)
	if int64(len(got)) != size || !bytes.Equal(got, want[:size]) {
		t.Fatalf("the backing (%d bytes) differs from what was written (%d bytes)", len(got), size)
	}
	spliced := m.call(t, request{Op: "spliced"}).Spliced - before
	t.Logf("%d writes, %d of them of %d bytes or more: %d WRITEs from a pipe", writes, big, fusedev.SpliceMin, spliced)
	// A reader splices after a large WRITE (fusedev.SpliceMin): all but
	// the first large write each reader takes come from a pipe, and
	// readers come and go with the load.
	if spliced < uint64(big)/2 {
		t.Errorf("%d WRITEs from a pipe for %d large writes: the supervised mount read the data into memory", spliced, big)
	}
}
