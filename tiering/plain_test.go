package tiering

import (
	"encoding/binary"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/pmem"
)

// writeFile creates dir/name through the store with data and closes it.
func writeStoreFile(t *testing.T, s *Store, dir, name string, data []byte) Attr {
	t.Helper()
	h, a, err := s.Create(RelPath(dir), name, unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 {
		if n, err := h.Write(data, 0); err != nil || n != len(data) {
			t.Fatalf("write %s: %d, %v", name, n, err)
		}
	}
	h.Release()
	return a
}

// getattrReads is Getattr of rel and how many times it read the pmem
// size attribute.
func getattrReads(t *testing.T, s *Store, rel string) (Attr, int64) {
	t.Helper()
	before := s.sizeXattrReads.Load()
	a, err := s.Getattr(RelPath(rel))
	if err != nil {
		t.Fatalf("getattr %s: %v", rel, err)
	}
	return a, s.sizeXattrReads.Load() - before
}

// A plain file whose size is whole pages is asked for the pmem size
// attribute once, not at every getattr; a new backing (a move) is asked
// again; a file whose size is not whole pages is never asked.
func TestGetattrRemembersPlainFiles(t *testing.T) {
	s := openTest(t, twoTiers(t, TypeNVMe, 0), Options{})
	writeStoreFile(t, s, "", "pages", make([]byte, 8192))
	writeStoreFile(t, s, "", "odd", make([]byte, 5000))

	if a, n := getattrReads(t, s, "pages"); n != 1 || a.Size != 8192 {
		t.Fatalf("first getattr: size %d, %d attribute reads; want 8192 and 1", a.Size, n)
	}
	for i := 0; i < 3; i++ {
		if a, n := getattrReads(t, s, "pages"); n != 0 || a.Size != 8192 {
			t.Fatalf("getattr again: size %d, %d attribute reads; want 8192 and none", a.Size, n)
		}
	}
	if a, n := getattrReads(t, s, "odd"); n != 0 || a.Size != 5000 {
		t.Fatalf("getattr of a 5000-byte file: size %d, %d attribute reads; want 5000 and none", a.Size, n)
	}
	// The listing for the policy getattrs every file: nothing to ask either.
	before := s.sizeXattrReads.Load()
	if _, err := s.ListFiles(); err != nil {
		t.Fatal(err)
	}
	if n := s.sizeXattrReads.Load() - before; n != 0 {
		t.Errorf("a listing read the attribute %d times, want none", n)
	}
	// Open, the file is known plain too.
	h, err := s.Open(RelPath("pages"), unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if a, n := getattrReads(t, s, "pages"); n != 0 || a.Size != 8192 {
		t.Errorf("getattr while open: size %d, %d attribute reads; want 8192 and none", a.Size, n)
	}
	h.Release()

	// Moved, it is another backing: asked once more.
	if err := s.Move("pages", "slow"); err != nil {
		t.Fatal(err)
	}
	if a, n := getattrReads(t, s, "pages"); n != 1 || a.Size != 8192 || a.Tier != 1 {
		t.Fatalf("getattr after a move: tier %d size %d, %d attribute reads; want tier 1, 8192 and 1", a.Tier, a.Size, n)
	}
	if _, n := getattrReads(t, s, "pages"); n != 0 {
		t.Fatalf("getattr again after the move: %d attribute reads, want none", n)
	}

	// Unlinked, it is forgotten.
	a, _ := getattrReads(t, s, "pages")
	if err := s.Unlink(RelPath(""), "pages", nil); err != nil {
		t.Fatal(err)
	}
	s.openMu.Lock()
	_, kept := s.plain[a.Ino]
	s.openMu.Unlock()
	if kept {
		t.Errorf("inode %d is still remembered as plain after its unlink", a.Ino)
	}
}

// setSizeAttr gives a backing file a pmem logical size, as pmem does.
func setSizeAttr(t *testing.T, path string, size int64) {
	t.Helper()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(size))
	if err := unix.Lsetxattr(path, pmem.SizeXattr, b[:], 0); err != nil {
		t.Fatal(err)
	}
}

// A name or an inode remembered as plain that becomes a pmem file shows
// its logical size: a pool file renamed over the name, a new segment in
// a slot under a name a plain file had, a file that gains the attribute
// and is opened (mapped), and after a remount.
func TestGetattrPlainThenPMem(t *testing.T) {
	s, tiers := openPool(t, 8*testSeg, 0.5)
	if _, err := s.Mkdir(RelPath(""), "t-0", 0o755, Owner{}); err != nil {
		t.Fatal(err)
	}
	const seg = "00000000000000000000.log"
	// A plain file of whole pages, remembered as plain.
	writeStoreFile(t, s, "t-0", "plain.txt", make([]byte, testSeg))
	for i := 0; i < 2; i++ {
		if a, _ := getattrReads(t, s, "t-0/plain.txt"); a.Size != testSeg {
			t.Fatalf("plain file: size %d, want %d", a.Size, testSeg)
		}
	}
	if _, n := getattrReads(t, s, "t-0/plain.txt"); n != 0 {
		t.Fatalf("plain file: %d attribute reads, want none once known", n)
	}

	// A segment in a pool slot, renamed over the plain file's name.
	writeStoreFile(t, s, "t-0", seg, []byte("0123456789"))
	if a, _ := getattrReads(t, s, "t-0/"+seg); a.Size != 10 {
		t.Fatalf("pool segment: size %d, want its logical 10", a.Size)
	}
	if err := s.Rename(RelPath("t-0"), seg, RelPath("t-0"), "plain.txt", 0, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if a, _ := getattrReads(t, s, "t-0/plain.txt"); a.Size != 10 {
			t.Fatalf("getattr %d after the rename over the name: size %d, want the logical 10", i, a.Size)
		}
	}

	// A plain file under a segment's name, remembered; deleted, and a new
	// segment takes a slot under the same name.
	writeStoreFile(t, s, "t-0", "plain2.txt", make([]byte, testSeg))
	if err := s.Rename(RelPath("t-0"), "plain2.txt", RelPath("t-0"), seg, 0, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if a, _ := getattrReads(t, s, "t-0/"+seg); a.Size != testSeg {
			t.Fatalf("plain file renamed to a segment name: size %d, want %d", a.Size, testSeg)
		}
	}
	if err := s.Unlink(RelPath("t-0"), seg, nil); err != nil {
		t.Fatal(err)
	}
	writeStoreFile(t, s, "t-0", seg, []byte("abc"))
	for i := 0; i < 2; i++ {
		if a, _ := getattrReads(t, s, "t-0/"+seg); a.Size != 3 {
			t.Fatalf("new segment in a slot under the name: size %d, want the logical 3", a.Size)
		}
	}

	// A plain file of whole pages, remembered, that gains the attribute
	// (as a pool file has it): once opened it is a pmem file, and stays
	// one for getattr after it is closed.
	writeStoreFile(t, s, "t-0", "grown.txt", make([]byte, testSeg))
	for i := 0; i < 2; i++ {
		getattrReads(t, s, "t-0/grown.txt")
	}
	back := filepath.Join(dataOf(tiers[0]), "t-0", "grown.txt")
	setSizeAttr(t, back, 77)
	h, err := s.Open(RelPath("t-0/grown.txt"), unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := getattrReads(t, s, "t-0/grown.txt"); a.Size != 77 {
		t.Fatalf("open file with a logical size: size %d, want 77", a.Size)
	}
	h.Release()
	if a, _ := getattrReads(t, s, "t-0/grown.txt"); a.Size != 77 {
		t.Fatalf("closed file with a logical size: size %d, want 77", a.Size)
	}

	// Remembered plain, given the attribute while tierfs is down:
	// nothing is remembered across a mount.
	writeStoreFile(t, s, "t-0", "offline.txt", make([]byte, testSeg))
	for i := 0; i < 2; i++ {
		getattrReads(t, s, "t-0/offline.txt")
	}
	s.Close()
	setSizeAttr(t, filepath.Join(dataOf(tiers[0]), "t-0", "offline.txt"), 5)
	s2 := openTest(t, tiers, Options{SegmentSize: testSeg, PMem: s.opts.PMem})
	if a, n := getattrReads(t, s2, "t-0/offline.txt"); a.Size != 5 || n != 1 {
		t.Fatalf("after a remount: size %d, %d attribute reads; want 5 and 1", a.Size, n)
	}
}
