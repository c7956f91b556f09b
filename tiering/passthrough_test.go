package tiering

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The rules of passthrough.go, one by one: who may be the first
// passthrough handle, who shares it, and what it keeps out.
func TestPassthroughDecisions(t *testing.T) {
	s := openTest(t, twoTiers(t, TypeNVMe, 0), Options{})
	w, a, err := s.Create(RelPath(""), "f", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("data"), 0); err != nil {
		t.Fatal(err)
	}
	open := func(flags int) *Handle {
		t.Helper()
		h, err := s.Open(RelPath("f"), flags)
		if err != nil {
			t.Fatalf("open %#x: %v", flags, err)
		}
		return h
	}
	// Beside a writer: no.
	r := open(unix.O_RDONLY)
	if _, ok := r.Passthrough("fast"); ok {
		t.Fatal("a reader beside a writer became a passthrough handle")
	}
	r.Release()
	w.Release()

	// A writer never is one; a reader on another tier than the policy's
	// is not either.
	w = open(unix.O_RDWR)
	if _, ok := w.Passthrough("fast"); ok {
		t.Fatal("a read-write handle became a passthrough handle")
	}
	w.Release()
	r = open(unix.O_RDONLY)
	if _, ok := r.Passthrough("slow"); ok {
		t.Fatal("a handle on fast became a passthrough handle for tier slow")
	}
	if _, ok := r.Passthrough(""); ok {
		t.Fatal("the first passthrough handle came with no tier approved")
	}

	// The one reference, read-only, on the approved tier: yes.
	fd, ok := r.Passthrough("fast")
	if !ok || fd < 0 || !r.IsPassthrough() {
		t.Fatalf("the only handle, read-only, on its tier: %d, %v; want a passthrough handle", fd, ok)
	}
	if n := s.PassthroughHandles(a.Ino); n != 1 {
		t.Fatalf("%d passthrough handles, want 1", n)
	}
	// Another reader shares it, approved or not.
	r2 := open(unix.O_RDONLY)
	if fd2, ok := r2.Passthrough(""); !ok || fd2 != fd {
		t.Fatalf("a second reader: %d, %v; want to share fd %d", fd2, ok, fd)
	}
	// Writers, truncating opens and moves are kept out.
	for _, fl := range []int{unix.O_WRONLY, unix.O_RDWR, unix.O_RDONLY | unix.O_TRUNC} {
		if h, err := s.Open(RelPath("f"), fl); !errors.Is(err, ErrPassthroughWriter) || !errors.Is(err, unix.ETXTBSY) {
			if h != nil {
				h.Release()
			}
			t.Fatalf("open %#x beside passthrough handles: %v, want ETXTBSY", fl, err)
		}
	}
	if err := s.Move("f", "slow"); !errors.Is(err, ErrPassthrough) || !errors.Is(err, unix.EBUSY) {
		t.Fatalf("move beside passthrough handles: %v, want EBUSY", err)
	}
	r.Release()
	if err := s.Move("f", "slow"); !errors.Is(err, ErrPassthrough) {
		t.Fatalf("move beside the second passthrough handle: %v, want EBUSY", err)
	}
	r2.Release()
	if n := s.PassthroughHandles(a.Ino); n != 0 {
		t.Fatalf("%d passthrough handles after both released", n)
	}
	if err := s.Move("f", "slow"); err != nil {
		t.Fatalf("move once the passthrough handles are gone: %v", err)
	}
	w = open(unix.O_RDWR)
	w.Release()

	// Undone (the kernel refused its backing): an ordinary handle again.
	r = open(unix.O_RDONLY)
	if _, ok := r.Passthrough("slow"); !ok {
		t.Fatal("no passthrough handle on slow after the move")
	}
	r.Unpassthrough()
	if r.IsPassthrough() || s.PassthroughHandles(a.Ino) != 0 {
		t.Fatal("Unpassthrough left a passthrough handle counted")
	}
	w = open(unix.O_RDWR)
	w.Release()
	r.Release()
	if n := s.OpenRefs(a.Ino); n != 0 {
		t.Fatalf("%d references left", n)
	}
}

// A pmem file's size lives apart from its backing's, so the kernel must
// never read its backing itself.
func TestPassthroughNeverForPMem(t *testing.T) {
	s, tiers := openPool(t, 8*testSeg, 0.5)
	if _, err := s.Mkdir(RelPath(""), "topic-0", 0o755, Owner{}); err != nil {
		t.Fatal(err)
	}
	w, _, err := s.Create(RelPath("topic-0"), "00000000000000000000.log", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("record"), 0); err != nil {
		t.Fatal(err)
	}
	w.Release()
	r, err := s.Open(RelPath("topic-0/00000000000000000000.log"), unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	if r.f.pm == nil {
		t.Fatal("the segment is not a pmem file: the test tests nothing")
	}
	if _, ok := r.Passthrough(tiers[0].Name); ok {
		t.Fatal("a pmem file got a passthrough handle")
	}
}

// The registry as a successor finds it: the handles recorded, inherited;
// a slot left closing, its id to take back; a release counted once; a
// file of someone else's not trusted.
func TestPassthroughRegistryAcrossDaemons(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	if _, err := s.OpenPassthroughRegistry(false); err != nil {
		t.Fatal(err)
	}
	// Two handles on inode 10 (id 3), one on inode 11 (id 4), whose id
	// the first daemon was taking back when it died.
	for _, r := range []struct {
		ino, kfh, unique uint64
		id               int32
	}{{10, 100, 1000, 3}, {10, 101, 1001, 3}, {11, 110, 1100, 4}} {
		if err := s.RecordPassthrough(r.ino, r.kfh, r.unique, r.id, true); err != nil {
			t.Fatal(err)
		}
	}
	if !s.ptHeld(10) || s.PassthroughRecorded() != 3 {
		t.Fatalf("held %v, %d recorded; want inode 10 held and 3", s.ptHeld(10), s.PassthroughRecorded())
	}
	if _, ok := s.PassthroughInherited(10); ok {
		t.Fatal("a daemon's own handles counted as inherited")
	}
	s.MarkClosing(4)
	s.Close()

	s = openTest(t, tiers, Options{TakingOver: true})
	closing, err := s.OpenPassthroughRegistry(true)
	if err != nil {
		t.Fatal(err)
	}
	if len(closing) != 1 || closing[0] != 4 {
		t.Fatalf("ids left closing: %v, want [4]", closing)
	}
	s.FinishClose(4)
	if s.ptHeld(11) || s.PassthroughRecorded() != 2 {
		t.Fatalf("after the closing id: inode 11 held %v, %d recorded; want false and 2", s.ptHeld(11), s.PassthroughRecorded())
	}
	if id, ok := s.PassthroughInherited(10); !ok || id != 3 {
		t.Fatalf("inode 10 inherited: %d, %v; want id 3", id, ok)
	}
	if kfh, id, ok := s.PassthroughByUnique(1001); !ok || kfh != 101 || id != 3 {
		t.Fatalf("by unique 1001: %d, %d, %v", kfh, id, ok)
	}
	// A successor's open shares it, then every handle goes; the last
	// says to take id 3 back.
	if id, ok := s.AcquireInherited(10); !ok || id != 3 {
		t.Fatal("AcquireInherited")
	}
	if err := s.RecordPassthrough(10, 200, 2000, 3, false); err != nil {
		t.Fatal(err)
	}
	for _, kfh := range []uint64{100, 100, 101} {
		if _, last := s.ReleasePassthrough(kfh); last {
			t.Fatalf("release of %d: the last, with handle 200 open", kfh)
		}
	}
	id, last := s.ReleasePassthrough(200)
	if !last || id != 3 {
		t.Fatalf("the last release: %d, %v; want id 3 to take back", id, last)
	}
	s.FinishClose(3)
	if s.ptHeld(10) || s.PassthroughRecorded() != 0 {
		t.Fatal("inode 10 still held after its last handle")
	}
	s.Close()

	// Another owner's file in its place is not read.
	meta := filepath.Join(tiers[0].Path, ".tierfs", ptFile)
	if err := os.Chown(meta, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, tiers, Options{TakingOver: true})
	if _, err := s.OpenPassthroughRegistry(true); err != nil {
		t.Fatal(err)
	}
	if s.PassthroughRecorded() != 0 {
		t.Fatal("a registry owned by another user was read")
	}
	var st unix.Stat_t
	if err := unix.Stat(meta, &st); err != nil || st.Uid != 0 {
		t.Fatalf("the untrusted registry was not replaced by one of ours: %v, uid %d", err, st.Uid)
	}
}
