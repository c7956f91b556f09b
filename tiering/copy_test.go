package tiering

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Tiers on different filesystems (a tmpfs fast tier, an ext4 or xfs slow
// one) cannot copy_file_range: a move copies through a pipe with splice,
// once, instead of through a buffer, twice. The copy must be exact at any
// offset, stop at the source's end, and be what copyChunk does there.
func TestCopyAcrossFilesystems(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (tests run as root in CI)")
	}
	fast := t.TempDir()
	if err := unix.Mount("tierfs-test", fast, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(fast, unix.MNT_DETACH) })
	slow := t.TempDir() // the test machine's disk, not that tmpfs

	want := make([]byte, 5<<20+123)
	x := uint32(99)
	for i := range want {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		want[i] = byte(x)
	}
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
	if _, err := unix.CopyFileRange(src, &roff, dst, &woff, 1, 0); !errors.Is(err, unix.EXDEV) {
		t.Skipf("copy_file_range between these filesystems does not fail with EXDEV (%v): the splice path is not taken", err)
	}

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
