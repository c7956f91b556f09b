package tiering

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/pmem"
)

const testSeg = 256 << 10

// openPool opens a store whose first tier is pmem with a pool of
// testSeg slots (ratio of a fastCap tier), and fills the pool.
func openPool(t *testing.T, fastCap units.ByteSize, ratio float64) (*Store, []TierConfig) {
	t.Helper()
	tiers := twoTiers(t, TypePMem, fastCap)
	cfg := pmem.Config{PoolRatio: ratio, SegmentSize: testSeg, PoolFiles: pmem.DefaultPoolFiles}
	s := openTest(t, tiers, Options{SegmentSize: testSeg, PMem: &cfg})
	if err := s.tiers[0].pool.Fill(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, tiers
}

func backingStat(t *testing.T, path string) (unix.Stat_t, int64, bool) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	size, ok, err := pmem.SizeAt(path)
	if err != nil {
		t.Fatal(err)
	}
	return st, size, ok
}

func readAll(t *testing.T, h *Handle) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 64<<10)
	for off := int64(0); ; {
		n, err := h.Read(buf, off)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return out
		}
		out = append(out, buf[:n]...)
		off += int64(n)
	}
}

// A segment-shaped file on a pmem tier takes a pool slot and shows its
// logical size; other files are plain; the size survives a remount.
func TestPoolSegmentTakesSlot(t *testing.T) {
	s, tiers := openPool(t, 8*testSeg, 0.5)
	if st := s.Status().Tiers[0].Pool; st == nil || st.FreeSlots != 4 || st.TargetSlots != 4 {
		t.Fatalf("pool status %+v, want 4 free slots of a target of 4", st)
	}
	if _, err := s.Mkdir(RelPath(""), "topic-0", 0o755, Owner{}); err != nil {
		t.Fatal(err)
	}
	h, a, err := s.Create(RelPath("topic-0"), "00000000000000000000.log", unix.O_RDWR, 0o640, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Tier != 0 || a.Size != 0 || a.Mode&0o7777 != 0o640 {
		t.Fatalf("new segment: tier %d size %d mode %o, want tier 0, size 0, mode 640", a.Tier, a.Size, a.Mode&0o7777)
	}
	back := filepath.Join(dataOf(tiers[0]), "topic-0", "00000000000000000000.log")
	st, _, ok := backingStat(t, back)
	if !ok || st.Size != testSeg {
		t.Fatalf("backing: size %d, logical size attribute %v; want a %d-byte pool slot with one", st.Size, ok, testSeg)
	}
	if p := s.Status().Tiers[0].Pool; p.UsedBytes != testSeg {
		t.Fatalf("pool used %d bytes, want %d", p.UsedBytes, testSeg)
	}
	data := bytes.Repeat([]byte("kafka record "), 1000)
	if n, err := h.Write(data, 0); err != nil || n != len(data) {
		t.Fatalf("write: %d, %v", n, err)
	}
	if ga, err := s.Getattr(RelPath("topic-0/00000000000000000000.log")); err != nil || ga.Size != int64(len(data)) || ga.Ino != a.Ino {
		t.Fatalf("getattr while open: %+v, %v; want size %d ino %d", ga.Size, err, len(data), a.Ino)
	}
	if got := readAll(t, h); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, want %d", len(got), len(data))
	}
	if off, err := h.Lseek(0, unix.SEEK_HOLE); err != nil || off != int64(len(data)) {
		t.Fatalf("SEEK_HOLE: %d, %v; want the logical size %d", off, err, len(data))
	}
	if err := h.Fsync(true); err != nil {
		t.Fatal(err)
	}
	h.Release()

	// Other shapes: plain files.
	for _, name := range []string{"topic-0/00000000000000000000.index", "notes.log"} {
		dir, base := filepath.Split(name)
		h, _, err := s.Create(RelPath(dir), base, unix.O_RDWR, 0o644, Owner{})
		if err != nil {
			t.Fatal(err)
		}
		h.Release()
		if st, _, ok := backingStat(t, filepath.Join(dataOf(tiers[0]), name)); ok || st.Size != 0 {
			t.Fatalf("%s: size %d, pmem attribute %v; want a plain empty file", name, st.Size, ok)
		}
	}

	// Closed, reopened, remounted: the logical size holds.
	s.Close()
	s2 := openTest(t, tiers, Options{SegmentSize: testSeg, PMem: &pmem.Config{PoolRatio: 0.5, SegmentSize: testSeg}})
	ga, err := s2.Getattr(RelPath("topic-0/00000000000000000000.log"))
	if err != nil || ga.Size != int64(len(data)) || ga.Ino != a.Ino {
		t.Fatalf("after remount: size %d ino %d (%v), want %d and %d", ga.Size, ga.Ino, err, len(data), a.Ino)
	}
	h, err = s2.Open(RelPath("topic-0/00000000000000000000.log"), unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if got := readAll(t, h); !bytes.Equal(got, data) {
		t.Fatalf("after remount read %d bytes, want %d", len(got), len(data))
	}
}

// No byte of a deleted segment ever shows in a later one, through reads
// past the end, a truncate up or the backing itself, and deleted segments
// go back to the pool.
func TestPoolRecycledSlotShowsNoOldData(t *testing.T) {
	s, tiers := openPool(t, 16*testSeg, 0.25) // 4 slots
	if _, err := s.Mkdir(RelPath(""), "t-1", 0o755, Owner{}); err != nil {
		t.Fatal(err)
	}
	secret := bytes.Repeat([]byte{0xA5}, testSeg)
	names := []string{"00000000000000000000.log", "00000000000000000100.log", "00000000000000000200.log"}
	var open *Handle
	for i, n := range names {
		h, _, err := s.Create(RelPath("t-1"), n, unix.O_RDWR, 0o644, Owner{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Write(secret, 0); err != nil {
			t.Fatal(err)
		}
		if err := h.Fsync(false); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			open = h // unlinked while open: recycled on release
		} else {
			h.Release()
		}
	}
	for _, n := range names {
		if err := s.Unlink(RelPath("t-1"), n, nil); err != nil {
			t.Fatal(err)
		}
	}
	// The open one still reads its data.
	if got := readAll(t, open); !bytes.Equal(got, secret) {
		t.Fatalf("unlinked open segment reads %d bytes, want its %d", len(got), len(secret))
	}
	open.Release()
	s.recycleWG.Wait()
	if p := s.Status().Tiers[0].Pool; p.UsedBytes != 0 {
		t.Fatalf("pool used %d bytes after every segment went, want 0", p.UsedBytes)
	}
	if err := s.tiers[0].pool.Fill(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Take every slot there is, then some.
	for i := 0; i < 6; i++ {
		n := []string{"00000000000000001000.log", "00000000000000002000.log", "00000000000000003000.log",
			"00000000000000004000.log", "00000000000000005000.log", "00000000000000006000.log"}[i]
		h, _, err := s.Create(RelPath("t-1"), n, unix.O_RDWR, 0o644, Owner{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Write([]byte("new"), 0); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		if n, err := h.Read(buf, 3); err != nil || n != 0 {
			t.Fatalf("read past the end: %d bytes (%v), want 0", n, err)
		}
		if err := h.Truncate(testSeg / 2); err != nil {
			t.Fatal(err)
		}
		got := readAll(t, h)
		if len(got) != testSeg/2 || !bytes.Equal(got[:3], []byte("new")) || bytes.ContainsFunc(got[3:], func(r rune) bool { return r != 0 }) {
			t.Fatalf("after truncate up: %d bytes, want %q then zeros up to %d", len(got), "new", testSeg/2)
		}
		h.Release()
	}
	// Nothing on the tier holds the secret: not the files, not the pool.
	// The pool's fill stops first: it renames the files it makes, and a
	// walk beside it read a name it had just renamed.
	s.closePools()
	filepath.WalkDir(tiers[0].Path, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, secret[:64]) {
			t.Errorf("%s holds a deleted segment's bytes", p)
		}
		return nil
	})
}

// A pool file outgrows its slot and keeps working.
func TestPoolFileGrowsPastSlot(t *testing.T) {
	s, tiers := openPool(t, 64*testSeg, 0.1)
	if _, err := s.Mkdir(RelPath(""), "t-0", 0o755, Owner{}); err != nil {
		t.Fatal(err)
	}
	h, _, err := s.Create(RelPath("t-0"), "00000000000000000000.log", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for i := 0; len(want) < 3*testSeg+777; i++ {
		rec := bytes.Repeat([]byte{byte(i)}, 16<<10+i%7)
		if _, err := h.Write(rec, int64(len(want))); err != nil {
			t.Fatal(err)
		}
		want = append(want, rec...)
	}
	if err := h.Fsync(false); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, h); !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want %d", len(got), len(want))
	}
	h.Release()
	st, size, ok := backingStat(t, filepath.Join(dataOf(tiers[0]), "t-0", "00000000000000000000.log"))
	if !ok || size != int64(len(want)) || st.Size < size {
		t.Fatalf("backing %d bytes with logical size %d (%v), want logical %d", st.Size, size, ok, len(want))
	}
	if a, err := s.Getattr(RelPath("t-0/00000000000000000000.log")); err != nil || a.Size != int64(len(want)) {
		t.Fatalf("getattr size %d (%v), want %d", a.Size, err, len(want))
	}
}

// A pool file moves down with a handle open (the copy has the logical size
// and no pmem attribute; the slot goes back), and up again as a plain file.
func TestPoolFileMovesWithOpenHandle(t *testing.T) {
	s, tiers := openPool(t, 16*testSeg, 0.25)
	if _, err := s.Mkdir(RelPath(""), "t-0", 0o755, Owner{}); err != nil {
		t.Fatal(err)
	}
	const rel = "t-0/00000000000000000000.log"
	h, a, err := s.Create(RelPath("t-0"), "00000000000000000000.log", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	want := bytes.Repeat([]byte("0123456789abcdef"), 5000)
	if _, err := h.Write(want, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Move(rel, "slow"); err != nil {
		t.Fatal(err)
	}
	s.recycleWG.Wait()
	st, _, ok := backingStat(t, filepath.Join(dataOf(tiers[1]), rel))
	if ok || st.Size != int64(len(want)) {
		t.Fatalf("moved copy: %d bytes, pmem attribute %v; want a plain %d-byte file", st.Size, ok, len(want))
	}
	if _, err := os.Lstat(filepath.Join(dataOf(tiers[0]), rel)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("source still on the pmem tier: %v", err)
	}
	if p := s.Status().Tiers[0].Pool; p.UsedBytes != 0 {
		t.Fatalf("pool used %d bytes after the move, want 0", p.UsedBytes)
	}
	if got := readAll(t, h); !bytes.Equal(got, want) {
		t.Fatalf("read through the old handle: %d bytes, want %d", len(got), len(want))
	}
	more := []byte("appended after the move")
	if _, err := h.Write(more, int64(len(want))); err != nil {
		t.Fatal(err)
	}
	want = append(want, more...)
	if err := s.Move(rel, "fast"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, h); !bytes.Equal(got, want) {
		t.Fatalf("after moving back: %d bytes, want %d", len(got), len(want))
	}
	ga, err := s.Getattr(RelPath(rel))
	if err != nil || ga.Tier != 0 || ga.Size != int64(len(want)) || ga.Ino != a.Ino {
		t.Fatalf("after moving back: %+v (%v)", ga, err)
	}
}

// waitPool polls the pmem tier's pool until cond holds.
func waitPool(t *testing.T, s *Store, what string, cond func(target int, slots int64) bool) {
	t.Helper()
	p := s.tiers[0].pool
	deadline := time.Now().Add(10 * time.Second)
	for {
		slots, _, _ := p.Stats()
		if cond(p.Target(), slots) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: target %d, %d free slots", what, p.Target(), slots)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The pool gives way as the tier's files grow (target and free slots
// shrink to what the capacity leaves) and grows back as files leave,
// with no policy snapshot or anything else reading the store.
func TestPoolFollowsUsage(t *testing.T) {
	s, _ := openPool(t, 8*testSeg, 0.5)
	waitPool(t, s, "the pool to fill", func(target int, slots int64) bool { return target == 4 && slots == 4 })
	// A plain file (not segment-shaped) on the pmem tier.
	h, a, err := s.Create(RelPath(""), "big.bin", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Tier != 0 {
		t.Fatalf("big.bin on tier %d, want the pmem tier", a.Tier)
	}
	chunk := bytes.Repeat([]byte{1}, testSeg)
	for i := 0; i < 6; i++ {
		if _, err := h.Write(chunk, int64(i)*testSeg); err != nil {
			t.Fatal(err)
		}
	}
	// 6 of 8 segments used: room for 2 slots.
	waitPool(t, s, "the pool to shrink", func(target int, slots int64) bool { return target == 2 && slots <= 2 })
	if err := h.Truncate(testSeg); err != nil {
		t.Fatal(err)
	}
	h.Release()
	waitPool(t, s, "the pool to grow back after a truncate", func(target int, slots int64) bool { return target == 4 && slots == 4 })
	h, err = s.Open(RelPath("big.bin"), unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 7; i++ {
		if _, err := h.Write(chunk, int64(i)*testSeg); err != nil {
			t.Fatal(err)
		}
	}
	h.Release()
	waitPool(t, s, "the pool to shrink again", func(target int, slots int64) bool { return target == 1 && slots <= 1 })
	if err := s.Unlink(RelPath(""), "big.bin", nil); err != nil {
		t.Fatal(err)
	}
	waitPool(t, s, "the pool to grow back after an unlink", func(target int, slots int64) bool { return target == 4 && slots == 4 })
	// A move onto the tier fills it too, and one off it empties it.
	h, _, err = s.Create(RelPath(""), "moved.bin", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write(bytes.Repeat([]byte{2}, 5*testSeg), 0); err != nil {
		t.Fatal(err)
	}
	h.Release()
	waitPool(t, s, "the pool to shrink for moved.bin", func(target int, slots int64) bool { return target == 3 && slots <= 3 })
	if err := s.Move("moved.bin", "slow"); err != nil {
		t.Fatal(err)
	}
	waitPool(t, s, "the pool to grow back after a move off", func(target int, slots int64) bool { return target == 4 && slots == 4 })
	if err := s.Move("moved.bin", "fast"); err != nil {
		t.Fatal(err)
	}
	waitPool(t, s, "the pool to shrink after a move onto the tier", func(target int, slots int64) bool { return target == 3 && slots <= 3 })
}

// BenchmarkSegmentRoll: create a segment, append 16 KiB, fsync, close, on
// a pmem tier with a full, idle pool against a plain tier, on a tmpfs when
// root (else the test directory's filesystem). The pool's refill after
// each roll is not timed (it runs between rolls in the background).
//
//	go test -run '^$' -bench SegmentRoll ./tiering/
func BenchmarkSegmentRoll(b *testing.B) {
	for _, typ := range []string{TypePMem, TypeNVMe} {
		b.Run(typ, func(b *testing.B) {
			base := b.TempDir()
			if os.Geteuid() == 0 {
				if err := unix.Mount("bench", base, "tmpfs", 0, "size=4g"); err == nil {
					b.Cleanup(func() { unix.Unmount(base, unix.MNT_DETACH) })
				}
			}
			var tiers []TierConfig
			for _, n := range []string{"fast", "slow"} {
				d := filepath.Join(base, n)
				if err := os.Mkdir(d, 0o755); err != nil {
					b.Fatal(err)
				}
				tiers = append(tiers, TierConfig{Name: n, Type: TypeHDD, Path: d})
			}
			tiers[0].Type, tiers[0].Capacity = typ, 2<<30
			cfg := pmem.Config{PoolRatio: 0.8, SegmentSize: 16 << 20}
			s, err := Open(tiers, Options{SegmentSize: 16 << 20, PMem: &cfg})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Mkdir(RelPath(""), "t-0", 0o755, Owner{}); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 16<<10)
			for i := 0; i < b.N; i++ {
				// Rolls are seconds apart in a broker: the pool is full
				// and idle at each one.
				b.StopTimer()
				if err := s.SettlePools(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				name := fmt.Sprintf("%020d.log", i)
				h, _, err := s.Create(RelPath("t-0"), name, unix.O_RDWR, 0o644, Owner{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := h.Write(buf, 0); err != nil {
					b.Fatal(err)
				}
				if err := h.Fsync(false); err != nil {
					b.Fatal(err)
				}
				h.Release()
				b.StopTimer()
				if err := s.Unlink(RelPath("t-0"), name, nil); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
