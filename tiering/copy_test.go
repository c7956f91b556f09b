package tiering

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
)

// Tiers on different filesystems (a tmpfs fast tier, an ext4 or xfs slow
// one) cannot copy_file_range: a move copies through a pipe with splice,
// once, instead of through a buffer, twice. The copy must be exact at any
// offset, stop at the source's end, and be what copyChunk does there.
func TestCopyAcrossFilesystems(t *testing.T) {
	testenv.Root(t, "mounting a tmpfs")
	fast := t.TempDir()
	if err := unix.Mount("tierfs-test", fast, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(fast, unix.MNT_DETACH) })
	slow := t.TempDir() // the test machine's disk, not that tmpfs

	want := noise(5<<20+123, 99)
	srcPath := filepath.Join(fast, "src")
	if err := os.WriteFile(srcPath, want, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := unix.Open(srcPath, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(src)
	dst, err := unix.Open(filepath.Join(slow, "dst"), unix.O_RDWR|unix.O_CREAT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dst)

	roff, woff := int64(0), int64(0)
	_, err = unix.CopyFileRange(src, &roff, dst, &woff, 1, 0)
	testenv.Require(t, errors.Is(err, unix.EXDEV), fmt.Sprintf("copy_file_range between these filesystems does not fail with EXDEV (%v): the splice path is not taken", err))

	// Pieces at odd offsets, out of order, the last one past the end.
	for _, r := range [][2]int64{{3 << 20, 1 << 20}, {0, 1}, {1, 4096}, {4097, 3<<20 - 4097}, {4 << 20, 2 << 20}} {
		m, err := copySplice(dst, src, r[0], r[1])
		if err != nil {
			t.Fatalf("copySplice at %d, %d bytes: %v", r[0], r[1], err)
		}
		if wantN := min(r[1], int64(len(want))-r[0]); m != wantN {
			t.Fatalf("copySplice at %d: %d bytes, want %d", r[0], m, wantN)
		}
	}
	got := make([]byte, len(want)+10)
	n, err := unix.Pread(dst, got, 0)
	if err != nil || n != len(want) || !bytes.Equal(got[:n], want) {
		t.Fatalf("copy differs: %d bytes read (want %d), err %v", n, len(want), err)
	}

	// copyChunk, as a move calls it, ends up in the same place.
	dst2, err := unix.Open(filepath.Join(slow, "dst2"), unix.O_RDWR|unix.O_CREAT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dst2)
	if err := copySparse(dst2, src, int64(len(want))); err != nil {
		t.Fatal(err)
	}
	n, err = unix.Pread(dst2, got, 0)
	if err != nil || n != len(want) || !bytes.Equal(got[:n], want) {
		t.Fatalf("copySparse across filesystems differs: %d bytes, err %v", n, err)
	}
}

// A move's bulk copy writes behind itself: what lies more than a window
// behind the copy is on the disk, not dirty in the page cache, when the
// copy ends (cachestat(2) counts a range's dirty and writeback pages).
// Left to the kernel's flusher, a lone copy to a slow disk went out in
// bursts with the disk idle between. The copy without write-behind
// leaves its pages dirty: the check sees what it means to.
func TestCopyWritesBehind(t *testing.T) {
	dir := t.TempDir() // on the test machine's disk: pages get dirty
	size := int64(3*writeBehindWindow + 5<<20 + 77)
	data := noise(int(size), 7)
	srcPath := filepath.Join(dir, "src")
	if err := os.WriteFile(srcPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := unix.Open(srcPath, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(src)
	dirty := func(fd int, upTo int64) uint64 {
		t.Helper()
		var cs unix.Cachestat_t
		err := unix.Cachestat(uint(fd), &unix.CachestatRange{Off: 0, Len: uint64(upTo)}, &cs, 0)
		testenv.Require(t, err == nil, fmt.Sprintf("cachestat: %v (Linux 6.5 or later counts dirty pages)", err))
		return cs.Dirty + cs.Writeback
	}
	for _, behind := range []bool{false, true} {
		dst, err := unix.Open(filepath.Join(dir, fmt.Sprintf("dst-%v", behind)), unix.O_RDWR|unix.O_CREAT, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(dst)
		c := &copier{writeBehind: behind, total: size}
		if err := c.sparse(dst, src, size); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, size)
		if n, err := unix.Pread(dst, got, 0); err != nil || int64(n) != size || !bytes.Equal(got, data) {
			t.Fatalf("write-behind %v: copy differs (%d bytes, %v)", behind, n, err)
		}
		upTo := size - writeBehindWindow - chunk
		n := dirty(dst, upTo)
		switch {
		case behind && (c.synced < upTo || n != 0):
			t.Errorf("with write-behind: synced to %d (want at least %d), %d pages before it dirty or in writeback", c.synced, upTo, n)
		case !behind && n == 0:
			t.Errorf("without write-behind no page of the copy is dirty: the check would pass whatever the copier does")
		}
	}
}

// noise is n bytes of xorshift from seed: data no copy can get right by
// accident.
func noise(n int, seed uint32) []byte {
	b := make([]byte, n)
	x := seed
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// A file truncated under the copy between SEEK_DATA and SEEK_HOLE ends
// the sparse copy (the commit settles the size), not the move: SEEK_HOLE
// at an offset past the new end is ENXIO (the stress test met it).
func TestSparseCopyOfAShrinkingFile(t *testing.T) {
	dir := t.TempDir()
	src, err := unix.Open(dir+"/src", unix.O_RDWR|unix.O_CREAT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(src)
	dst, err := unix.Open(dir+"/dst", unix.O_RDWR|unix.O_CREAT, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dst)
	if _, err := unix.Pwrite(src, make([]byte, 1<<20), 0); err != nil {
		t.Fatal(err)
	}
	truncated := false
	FailPoint = func(step string) {
		if step == "copy:data" && !truncated {
			truncated = true
			if err := unix.Ftruncate(src, 0); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(func() { FailPoint = nil })
	if err := copySparse(dst, src, 1<<20); err != nil {
		t.Fatalf("sparse copy of a file truncated between SEEK_DATA and SEEK_HOLE: %v", err)
	}
	if !truncated {
		t.Fatal("the copy never got between its seeks")
	}
}
