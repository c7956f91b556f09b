package tiering

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/units"

	"github.com/tierfs/tierfs/internal/testenv"
)

func openTest(t *testing.T, tiers []TierConfig, o Options) *Store {
	t.Helper()
	o.Log = zerolog.Nop()
	s, err := Open(tiers, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dataOf is a tier's copy of the mount's root, where tests look at and
// plant backing files.
func dataOf(tc TierConfig) string { return filepath.Join(tc.Path, dataDir) }

func twoTiers(t *testing.T, fastType string, fastCap units.ByteSize) []TierConfig {
	base := t.TempDir()
	var out []TierConfig
	for i, n := range []string{"fast", "slow"} {
		d := filepath.Join(base, n)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		c := TierConfig{Name: n, Type: TypeHDD, Path: d}
		if i == 0 {
			c.Type = fastType
			c.Capacity = fastCap
		}
		out = append(out, c)
	}
	return out
}

// A pmem tier takes a new file only with room for a whole segment.
func TestPlacementExpectsSegmentOnPMem(t *testing.T) {
	tiers := twoTiers(t, TypePMem, 64<<20)
	s := openTest(t, tiers, Options{SegmentSize: 128 << 20})
	h, a, err := s.Create(RelPath(""), "00000000000000000000.log", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if a.Tier != 1 {
		t.Fatalf("segment placed on tier %d, want 1: the pmem tier has no room for a 128 MiB segment", a.Tier)
	}
	s2 := openTest(t, twoTiers(t, TypePMem, 64<<20), Options{SegmentSize: 32 << 20})
	h, a, err = s2.Create(RelPath(""), "x.log", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if a.Tier != 0 {
		t.Fatalf("segment placed on tier %d, want 0", a.Tier)
	}
}

// Inode numbers survive a restart and are never handed out twice, even
// when the counter file is lost (a wiped fast tier).
func TestInodeNumbersPersist(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	h, a, err := s.Create(RelPath(""), "a", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if err := s.Move("a", "slow"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A file made behind tierfs's back gets a number at first sight.
	if err := os.WriteFile(filepath.Join(dataOf(tiers[1]), "outside"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(tiers[0].Path, metaDir, inoFile)); err != nil {
		t.Fatal(err)
	}
	s2 := openTest(t, tiers, Options{})
	a2, err := s2.Getattr(RelPath("a"))
	if err != nil {
		t.Fatal(err)
	}
	if a2.Ino != a.Ino {
		t.Fatalf("inode %d became %d across a move and a restart", a.Ino, a2.Ino)
	}
	o, err := s2.Getattr(RelPath("outside"))
	if err != nil {
		t.Fatal(err)
	}
	h, b, err := s2.Create(RelPath(""), "b", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	seen := map[uint64]string{a.Ino: "a", o.Ino: "outside"}
	if prev, dup := seen[b.Ino]; dup || o.Ino == a.Ino {
		t.Fatalf("inode number handed out twice: b=%d a=%d outside=%d (%s)", b.Ino, a.Ino, o.Ino, prev)
	}
	if b.Ino <= a.Ino {
		t.Fatalf("counter went backwards: %d after %d", b.Ino, a.Ino)
	}
}

// Recovery: a staged copy is dropped; of two copies the one marked
// superseded goes; a lone marked copy keeps its data and loses the mark.
func TestRecoveryResolvesLeftovers(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	fast, slow := dataOf(tiers[0]), dataOf(tiers[1])
	s := openTest(t, tiers, Options{})
	s.Close()
	write := func(p, data string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(tiers[1].Path, metaDir, "staging", "1234"), "partial copy")
	write(filepath.Join(fast, "p/dup"), "old")
	write(filepath.Join(slow, "p/dup"), "new")
	if err := unix.Lsetxattr(filepath.Join(fast, "p/dup"), xattrSuperseded, []byte("slow"), 0); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(fast, "p/lone"), "only copy")
	if err := unix.Lsetxattr(filepath.Join(fast, "p/lone"), xattrSuperseded, []byte("slow"), 0); err != nil {
		t.Fatal(err)
	}
	s2 := openTest(t, tiers, Options{})
	if _, err := os.Stat(filepath.Join(tiers[1].Path, metaDir, "staging", "1234")); !os.IsNotExist(err) {
		t.Fatalf("staged copy survived recovery: %v", err)
	}
	if _, err := os.Stat(filepath.Join(fast, "p/dup")); !os.IsNotExist(err) {
		t.Fatalf("superseded copy survived recovery: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(slow, "p/dup")); string(b) != "new" {
		t.Fatalf("winning copy = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(fast, "p/lone")); string(b) != "only copy" {
		t.Fatalf("lone copy = %q", b)
	}
	if _, err := unix.Lgetxattr(filepath.Join(fast, "p/lone"), xattrSuperseded, make([]byte, 16)); err == nil {
		t.Fatalf("lone copy still marked")
	}
	st := s2.Status()
	if st.Tiers[0].Files != 1 || st.Tiers[1].Files != 1 {
		t.Fatalf("file counts after recovery: %+v", st.Tiers)
	}
}

// Creating under a directory that no tier has fails; it does not make
// the directory.
func TestCreateNeedsParent(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	if _, _, err := s.Create(RelPath("gone"), "f", unix.O_RDWR, 0o644, Owner{}); err != unix.ENOENT {
		t.Fatalf("create under a missing directory: %v, want ENOENT", err)
	}
	for _, tc := range tiers {
		if _, err := os.Stat(filepath.Join(dataOf(tc), "gone")); !os.IsNotExist(err) {
			t.Fatalf("directory made on %s: %v", tc.Name, err)
		}
	}
}

// Blocks a filesystem allocates past a file's end while it is open (xfs's
// speculative preallocation) and gives back later must not leak into the
// tier's usage: counted at a write, they are gone at the unlink.
func TestUsageIgnoresBlocksPastEOF(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	base := s.tiers[0].Used()
	h, _, err := s.Create(RelPath(""), "seg.log", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write(make([]byte, 8192), 0); err != nil {
		t.Fatal(err)
	}
	// The filesystem's own look-ahead, as xfs does it.
	fd, err := unix.Open(filepath.Join(dataOf(tiers[0]), "seg.log"), unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	err = unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 8192, 4<<20)
	testenv.Require(t, err == nil, fmt.Sprintf("the test directory's filesystem cannot allocate past EOF: %v", err))
	if _, err := h.Write(make([]byte, 4096), 8192); err != nil {
		t.Fatal(err)
	}
	if got := s.tiers[0].Used() - base; got > 64<<10 {
		t.Fatalf("a 12 KiB file counts %d bytes: blocks past its end were counted", got)
	}
	h.Release()
	// The look-ahead given back, then the file removed.
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 12288, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlink(RelPath(""), "seg.log", nil); err != nil {
		t.Fatal(err)
	}
	if got := s.tiers[0].Used(); got != base {
		t.Fatalf("tier usage %d after the file went, want %d: %d bytes leaked", got, base, got-base)
	}
}

// The inode counter's bound may be on any tier (written on the first with
// room): the largest found counts.
func TestInodeCounterOnEveryTier(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	openTest(t, tiers, Options{}).Close()
	const high = 50 << 20
	mustWrite(t, filepath.Join(tiers[0].Path, metaDir, inoFile), "3000000\n")
	mustWrite(t, filepath.Join(tiers[1].Path, metaDir, inoFile), "52428800\n")
	s := openTest(t, tiers, Options{})
	h, a, err := s.Create(RelPath(""), "a", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if a.Ino < high {
		t.Fatalf("inode number %d below the bound %d kept on the second tier", a.Ino, high)
	}
}
