//go:build linux

package pmem

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
)

const mib = 1 << 20

func poolFiles(t *testing.T, p *Pool) []string {
	t.Helper()
	ents, err := os.ReadDir(p.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func checkSlot(t *testing.T, path string, seg int64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != seg {
		t.Errorf("%s: size %d, want %d", path, st.Size, seg)
	}
	if st.Blocks*512 < seg {
		t.Errorf("%s: %d bytes allocated, want %d (fallocate)", path, st.Blocks*512, seg)
	}
	var b [8]byte
	if n, err := unix.Getxattr(path, SizeXattr, b[:]); err != nil || n != 8 || b != [8]byte{} {
		t.Errorf("%s: %s = %v (%d bytes, %v), want 8 zero bytes", path, SizeXattr, b, n, err)
	}
}

func TestPoolFill(t *testing.T) {
	root := pmemDir(t, 64)
	dir := filepath.Join(root, ".tierfs", "pool")
	cfg := Config{PoolRatio: 0.8, SegmentSize: mib}
	if got := cfg.Slots(10*mib + 512*1024); got != 8 {
		t.Fatalf("Slots = %d, want 8", got)
	}
	p, err := OpenPool(dir, cfg, 10*mib+512*1024, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if n, free, used := p.Stats(); n != 0 || free != 0 || used != 0 {
		t.Fatalf("Stats before Fill = %d, %d, %d", n, free, used)
	}
	if err := p.Fill(context.Background()); err != nil {
		t.Fatal(err)
	}
	names := poolFiles(t, p)
	if len(names) != 8 {
		t.Fatalf("pool holds %v, want 8 slots", names)
	}
	for _, name := range names {
		if !strings.HasPrefix(name, slotPrefix) {
			t.Errorf("unexpected %s in the pool", name)
		}
		checkSlot(t, filepath.Join(dir, name), mib)
	}
	if n, free, used := p.Stats(); n != 8 || free != 8*mib || used != 0 {
		t.Fatalf("Stats = %d, %d, %d; want 8, 8 MiB, 0", n, free, used)
	}
	if err := p.Fill(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := poolFiles(t, p); len(got) != 8 {
		t.Fatalf("a second Fill made more slots: %v", got)
	}
	// Reopening finds them.
	p.Close()
	p2, err := OpenPool(dir, cfg, 10*mib, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if n, _, _ := p2.Stats(); n != 8 {
		t.Fatalf("reopened pool has %d slots, want 8", n)
	}
}

func TestPoolFillRespectsContextAndENOSPC(t *testing.T) {
	root := pmemDir(t, 64)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p, err := OpenPool(filepath.Join(root, "pool"), Config{PoolRatio: 1, SegmentSize: mib}, 4*mib, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Fill(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Fill(canceled) = %v", err)
	}
	var fs unix.Statfs_t
	err = unix.Statfs(root, &fs)
	testenv.Require(t, err == nil && fs.Type == unix.TMPFS_MAGIC && fs.Blocks*uint64(fs.Bsize) <= 64*mib, "ENOSPC needs the private 64 MiB tmpfs (root)")
	// Ask for more than the 64 MiB tmpfs holds.
	big, err := OpenPool(filepath.Join(root, "big"), Config{PoolRatio: 1, SegmentSize: 16 * mib}, 1<<30, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	err = big.Fill(context.Background())
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("Fill past the tier = %v, want ENOSPC", err)
	}
	n, _, _ := big.Stats()
	if n < 2 || n > 4 {
		t.Errorf("%d slots of 16 MiB on a 64 MiB tmpfs", n)
	}
	for _, name := range poolFiles(t, big) {
		if !strings.HasPrefix(name, slotPrefix) {
			t.Errorf("ENOSPC left %s behind", name)
		}
	}
}

func TestPoolTakeReturn(t *testing.T) {
	root := pmemDir(t, 64)
	p, data, datafd := testPool(t, root, mib, 4)
	if err := p.Take(datafd, "00000000000000000000.log"); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(data, "00000000000000000000.log")
	checkSlot(t, seg, mib)
	if n, free, used := p.Stats(); n != 3 || free != 3*mib || used != mib {
		t.Fatalf("Stats after Take = %d, %d, %d", n, free, used)
	}
	f, fd := openAt(t, datafd, "00000000000000000000.log")
	if f.Size() != 0 || f.Allocated() != mib {
		t.Fatalf("taken slot: size %d, allocated %d; want 0, 1 MiB", f.Size(), f.Allocated())
	}
	f.Close()
	unix.Close(fd)

	// Taking onto an existing name fails and keeps the slot.
	if err := p.Take(datafd, "00000000000000000000.log"); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("Take onto an existing file = %v, want EEXIST", err)
	}
	if n, _, _ := p.Stats(); n != 3 {
		t.Fatalf("failed Take lost a slot: %d left", n)
	}

	if err := p.Return(datafd, "00000000000000000000.log"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(seg); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("returned file still there: %v", err)
	}
	if n, free, used := p.Stats(); n != 4 || free != 4*mib || used != 0 {
		t.Fatalf("Stats after Return = %d, %d, %d", n, free, used)
	}
	// The returned file is a cold slot under a fresh number until a
	// Fill (or Run) warms it.
	if got := strings.Join(poolFiles(t, p), " "); got != "cold-4 slot-0 slot-1 slot-2" || p.Cold() != 1 {
		t.Fatalf("pool after Return = %s, %d cold", got, p.Cold())
	}
	for _, name := range poolFiles(t, p) {
		checkSlot(t, filepath.Join(p.Dir(), name), mib)
	}
	// Warm slots go first.
	if err := p.Take(datafd, "b.log"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(poolFiles(t, p), " "); got != "cold-4 slot-0 slot-1" {
		t.Fatalf("pool after Take = %s", got)
	}
	if err := p.Fill(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(poolFiles(t, p), " "); got != "slot-0 slot-1 slot-4 slot-5" || p.Cold() != 0 {
		t.Fatalf("pool after Fill = %s, %d cold", got, p.Cold())
	}
	for _, name := range poolFiles(t, p) {
		checkSlot(t, filepath.Join(p.Dir(), name), mib)
	}
	if err := p.Return(datafd, "b.log"); err != nil { // at the target
		t.Fatal(err)
	}
	if err := p.Take(datafd, "b.log"); err != nil {
		t.Fatal(err)
	}

	// Return of a file at the target just removes it.
	if err := p.Return(datafd, "b.log"); err != nil {
		t.Fatal(err)
	}
	if p.Cold() != 1 {
		t.Fatalf("%d cold slots", p.Cold())
	}
	if err := os.WriteFile(filepath.Join(data, "other"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Return(datafd, "other"); err != nil {
		t.Fatal(err)
	}
	if got := poolFiles(t, p); len(got) != 4 {
		t.Fatalf("Return past the target kept the file: %v", got)
	}
	if _, err := os.Stat(filepath.Join(data, "other")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Return past the target left the file: %v", err)
	}
	// Not a regular file.
	if err := os.Mkdir(filepath.Join(data, "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := p.Return(datafd, "d"); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("Return(dir) = %v, want EINVAL", err)
	}
}

func TestPoolReturnZeroes(t *testing.T) {
	root := pmemDir(t, 64)
	const slots = 4
	p, data, datafd := testPool(t, root, mib, slots)
	secret := bytes.Repeat([]byte{0xEE}, 64<<10)
	names := []string{"a.log", "b.log", "c.log", "d.log"}
	for i, name := range names {
		if err := p.Take(datafd, name); err != nil {
			t.Fatal(err)
		}
		f, fd := openAt(t, datafd, name)
		// Fill the slot with the secret; the last one grows past it, one
		// is left short (truncated down) before its return.
		n := int64(mib)
		if i == 3 {
			n = mib + mib/2
		}
		for off := int64(0); off < n; off += int64(len(secret)) {
			if _, err := f.WriteAt(secret, off); err != nil {
				t.Fatal(err)
			}
		}
		if i == 2 {
			if err := f.Truncate(1000); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		// Metadata of its life: user xattrs (forwarded from the mount),
		// tierfs's inode number, a mode.
		if err := unix.Fsetxattr(fd, "user.secret", []byte("password"), 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Fsetxattr(fd, "trusted.tierfs.ino", make([]byte, 8), 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Fchmod(fd, 0o644); err != nil {
			t.Fatal(err)
		}
		// Write through the fd too, past the logical size.
		if _, err := unix.Pwrite(fd, secret, n-int64(len(secret))); err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	if n, _, _ := p.Stats(); n != 0 {
		t.Fatalf("%d slots left after taking all", n)
	}
	if err := p.Take(datafd, "e.log"); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Take from an empty pool = %v, want ErrEmpty", err)
	}
	for _, name := range names {
		if err := p.Return(datafd, name); err != nil {
			t.Fatal(err)
		}
	}
	if n, _, _ := p.Stats(); n != slots {
		t.Fatalf("%d slots after returning all, want %d", n, slots)
	}
	for _, name := range names {
		if err := p.Take(datafd, name); err != nil {
			t.Fatal(err)
		}
		checkSlot(t, filepath.Join(data, name), mib)
		f, fd := openAt(t, datafd, name)
		if f.Size() != 0 || f.Allocated() != mib {
			t.Errorf("%s: size %d, allocated %d", name, f.Size(), f.Allocated())
		}
		// Everything in the mapping, past the logical size too, is zero.
		var st unix.Stat_t
		unix.Fstat(fd, &st)
		if st.Mode&0o7777 != 0o600 {
			t.Errorf("%s: recycled slot has mode %o", name, st.Mode&0o7777)
		}
		buf := make([]byte, 1024)
		if n, err := unix.Flistxattr(fd, buf); err != nil || string(buf[:n]) != SizeXattr+"\x00" {
			t.Errorf("%s: recycled slot has xattrs %q (%v)", name, buf[:n], err)
		}
		if i := firstNonZero(f.m); i >= 0 {
			t.Errorf("%s: recycled slot shows old data at %d: %#x", name, i, f.m[i])
		}
		if err := f.Truncate(mib); err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, f); !bytes.Equal(got, make([]byte, mib)) {
			t.Errorf("%s: truncated up, reads non-zero", name)
		}
		f.Close()
		unix.Close(fd)
	}
}

func TestPoolEmpty(t *testing.T) {
	root := pmemDir(t, 16)
	p, _, datafd := testPool(t, root, 64<<10, 2)
	for _, n := range []string{"a", "b"} {
		if err := p.Take(datafd, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Take(datafd, "c"); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Take = %v, want ErrEmpty", err)
	}
	// A pool with no capacity is always empty.
	z, err := OpenPool(filepath.Join(root, "zero"), Config{PoolRatio: 0.8, SegmentSize: mib}, 0, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	if err := z.Fill(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := z.Take(datafd, "c"); !errors.Is(err, ErrEmpty) {
		t.Fatalf("Take from a zero pool = %v, want ErrEmpty", err)
	}
	z.Close()
	if err := z.Take(datafd, "c"); !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("Take from a closed pool = %v", err)
	}
}

func TestPoolOpenRemovesLeftovers(t *testing.T) {
	root := pmemDir(t, 64)
	dir := filepath.Join(root, "pool")
	cfg := Config{PoolRatio: 1, SegmentSize: mib}
	p, err := OpenPool(dir, cfg, 3*mib, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Fill(context.Background()); err != nil {
		t.Fatal(err)
	}
	// An interrupted fill: tmp-7 half allocated, with data (a return
	// interrupted before its zeroing looks the same).
	tmp := filepath.Join(dir, "tmp-7")
	if err := os.WriteFile(tmp, bytes.Repeat([]byte{0xEE}, mib/2), 0o600); err != nil {
		t.Fatal(err)
	}
	// A cold slot (a returned file, zeroed, not yet warmed).
	if err := p.Take(-1, filepath.Join(root, "r")); err != nil {
		t.Fatal(err)
	}
	if err := p.Return(-1, filepath.Join(root, "r")); err != nil {
		t.Fatal(err)
	}
	p.Close()
	// A slot of an earlier segment_size, and a stranger.
	if err := os.WriteFile(filepath.Join(dir, "slot-9"), make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "README"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err = OpenPool(dir, cfg, 3*mib, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got := poolFiles(t, p)
	want := []string{"README", "cold-3", "slot-0", "slot-1"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("after reopen the pool holds %v, want %v", got, want)
	}
	if n, _, _ := p.Stats(); n != 3 || p.Cold() != 1 {
		t.Fatalf("Stats = %d slots, %d cold; want 3, 1", n, p.Cold())
	}
	// New slots are numbered past every name seen.
	if err := p.Take(-1, filepath.Join(root, "x")); err != nil {
		t.Fatal(err)
	}
	if err := p.Fill(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "slot-10")); err != nil {
		t.Fatalf("refill: %v (pool %v)", err, poolFiles(t, p))
	}

	// Lowering the ratio trims the pool at open.
	p.Close()
	p, err = OpenPool(dir, Config{PoolRatio: 0.5, SegmentSize: mib}, 3*mib, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if n, _, _ := p.Stats(); n != 1 {
		t.Fatalf("lowered ratio: %d slots, want 1", n)
	}
	if got := poolFiles(t, p); len(got) != 2 {
		t.Fatalf("lowered ratio: pool holds %v", got)
	}
	if removed, err := p.SetTarget(0); err != nil || removed != 1 {
		t.Fatalf("SetTarget(0) = %d, %v", removed, err)
	}
	if n, _, _ := p.Stats(); n != 0 {
		t.Fatalf("SetTarget(0) left %d slots", n)
	}
}

func TestPoolRun(t *testing.T) {
	root := pmemDir(t, 64)
	p, err := OpenPool(filepath.Join(root, "pool"), Config{PoolRatio: 1, SegmentSize: 256 << 10}, 8*256<<10, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	datafd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(datafd)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
	}()
	waitSlots := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, _, _ := p.Stats()
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("pool stuck at %d slots, want %d", n, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitSlots(8)
	for _, n := range []string{"a", "b", "c"} {
		if err := p.Take(datafd, n); err != nil {
			t.Fatal(err)
		}
	}
	waitSlots(8)
	if _, _, used := p.Stats(); used != 3*256<<10 {
		t.Fatalf("used = %d", used)
	}
	// Returns past the target are removed; under it they come back cold
	// and Run warms them.
	if _, err := p.SetTarget(9); err != nil {
		t.Fatal(err)
	}
	waitSlots(9)
	for _, n := range []string{"a", "b"} {
		if err := p.Return(datafd, n); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); p.Cold() > 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d slots stay cold", p.Cold())
		}
	}
	if n, _, _ := p.Stats(); n != 9 {
		t.Fatalf("%d slots after the returns, want 9", n)
	}
	if got := len(poolFiles(t, p)); got != 9 {
		t.Fatalf("pool holds %d files, want 9", got)
	}
	// Raising the target wakes it too; it never overshoots.
	if _, err := p.SetTarget(10); err != nil {
		t.Fatal(err)
	}
	waitSlots(10)
	time.Sleep(20 * time.Millisecond)
	if got := len(poolFiles(t, p)); got != 10 {
		t.Fatalf("pool holds %d files, want 10", got)
	}
}

func firstNonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}
