//go:build linux

package pmem

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// slotFile takes a slot of seg bytes from a fresh pool and opens it.
func slotFile(t *testing.T, seg int64) (*File, int) {
	t.Helper()
	root := pmemDir(t, 256)
	p, _, datafd := testPool(t, root, seg, 1)
	if err := p.Take(datafd, "seg.log"); err != nil {
		t.Fatal(err)
	}
	f, fd := openAt(t, datafd, "seg.log")
	t.Cleanup(func() {
		f.Close()
		unix.Close(fd)
	})
	return f, fd
}

func mustWrite(t *testing.T, f *File, p []byte, off int64) {
	t.Helper()
	if n, err := f.WriteAt(p, off); err != nil || n != len(p) {
		t.Fatalf("WriteAt(%d bytes, %d) = %d, %v", len(p), off, n, err)
	}
}

func mustTruncate(t *testing.T, f *File, size int64) {
	t.Helper()
	if err := f.Truncate(size); err != nil {
		t.Fatalf("Truncate(%d) = %v", size, err)
	}
}

func TestFileTable(t *testing.T) {
	f, fd := slotFile(t, 64<<10)
	type step struct {
		name  string
		do    func()
		size  int64
		check string // the logical content, "" = not checked; zeros as \x00
	}
	zeros := func(n int) string { return string(make([]byte, n)) }
	steps := []step{
		{"fresh", func() {}, 0, ""},
		{"write", func() { mustWrite(t, f, []byte("hello"), 0) }, 5, "hello"},
		{"overwrite", func() { mustWrite(t, f, []byte("J"), 0) }, 5, "Jello"},
		{"gap", func() { mustWrite(t, f, []byte("x"), 10) }, 11, "Jello" + zeros(5) + "x"},
		{"empty write far away", func() { mustWrite(t, f, nil, 1000) }, 11, "Jello" + zeros(5) + "x"},
		{"shrink", func() { mustTruncate(t, f, 3) }, 3, "Jel"},
		{"grow zeros", func() { mustTruncate(t, f, 12) }, 12, "Jel" + zeros(9)},
		{"same size", func() { mustTruncate(t, f, 12) }, 12, "Jel" + zeros(9)},
		{"write across end", func() { mustWrite(t, f, []byte("abcdef"), 9) }, 15, "Jel" + zeros(6) + "abcdef"},
		{"to zero", func() { mustTruncate(t, f, 0) }, 0, ""},
		{"write after zero", func() { mustWrite(t, f, []byte("z"), 2) }, 3, zeros(2) + "z"},
	}
	for _, s := range steps {
		s.do()
		if got := f.Size(); got != s.size {
			t.Fatalf("%s: Size = %d, want %d", s.name, got, s.size)
		}
		if s.check != "" || s.size == 0 {
			if got := string(readAll(t, f)); got != s.check {
				t.Fatalf("%s: content %q, want %q", s.name, got, s.check)
			}
		}
		// Nothing past the logical size in the mapping.
		if i := firstNonZero(f.m[f.Size():]); i >= 0 {
			t.Fatalf("%s: byte %d past the end is %#x", s.name, f.Size()+int64(i), f.m[f.Size()+int64(i)])
		}
	}

	// ReadAt at and past the end.
	buf := make([]byte, 10)
	if n, err := f.ReadAt(buf, 3); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at end = %d, %v", n, err)
	}
	if n, err := f.ReadAt(buf, 1); n != 2 || err != io.EOF {
		t.Errorf("short ReadAt = %d, %v", n, err)
	}
	if n, err := f.ReadAt(buf[:2], 1); n != 2 || err != nil {
		t.Errorf("exact ReadAt = %d, %v", n, err)
	}
	if _, err := f.ReadAt(buf, -1); !errors.Is(err, unix.EINVAL) {
		t.Errorf("ReadAt(-1) = %v", err)
	}
	if _, err := f.WriteAt(buf, -1); !errors.Is(err, unix.EINVAL) {
		t.Errorf("WriteAt(-1) = %v", err)
	}
	if err := f.Truncate(-1); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Truncate(-1) = %v", err)
	}

	// Growth past the slot: the backing grows to a multiple of 1 MiB and
	// is remapped; the old content stays.
	mustWrite(t, f, []byte("far"), 100000)
	if a := f.Allocated(); a != mib {
		t.Errorf("Allocated after growth = %d, want 1 MiB", a)
	}
	var st unix.Stat_t
	unix.Fstat(fd, &st)
	if st.Size != mib || st.Blocks*512 < mib {
		t.Errorf("backing after growth: size %d, %d allocated", st.Size, st.Blocks*512)
	}
	got := readAll(t, f)
	if len(got) != 100003 || string(got[:3]) != zeros(2)+"z" || string(got[100000:]) != "far" || firstNonZero(got[3:100000]) >= 0 {
		t.Errorf("after growth: %d bytes, head %q, tail %q", len(got), got[:3], got[len(got)-3:])
	}
	mustTruncate(t, f, 5*mib+1)
	if a := f.Allocated(); a != 6*mib {
		t.Errorf("Allocated after Truncate(5 MiB+1) = %d, want 6 MiB", a)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if s, ok, err := getSizeXattr(fd); err != nil || !ok || s != 5*mib+1 {
		t.Errorf("%s after Sync = %d, %v, %v", SizeXattr, s, ok, err)
	}
}

func TestGrowTarget(t *testing.T) {
	for _, c := range []struct{ cur, need, want int64 }{
		{0, 1, mib},
		{64 << 10, 64<<10 + 1, mib},
		{mib, mib + 1, 2 * mib},
		{3 * mib, 3*mib + 1, 6 * mib},
		{mib, 10*mib + 1, 11 * mib},
		{1 << 30, 1<<30 + 1, 1<<30 + 64*mib},
		{1<<30 + 5, 1<<30 + 6, 1<<30 + 65*mib},
	} {
		if got := growTarget(c.cur, c.need); got != c.want {
			t.Errorf("growTarget(%d, %d) = %d, want %d", c.cur, c.need, got, c.want)
		}
	}
}

// TestFileModel runs random writes, truncates, syncs and reopens against a
// byte-slice model, on a slot small enough that the file grows out of it
// and with truncates big enough to take the punch-hole path.
func TestFileModel(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 99))
			f, fd := slotFile(t, 256<<10)
			var model []byte
			const span = 6 * mib
			for i := 0; i < 400; i++ {
				switch op := r.IntN(20); {
				case op < 10:
					off := r.Int64N(span)
					if r.IntN(3) == 0 { // an append
						off = int64(len(model))
					}
					p := make([]byte, 1+r.IntN(200<<10))
					for j := range p {
						p[j] = byte(r.Uint32()) | 1
					}
					mustWrite(t, f, p, off)
					if end := off + int64(len(p)); end > int64(len(model)) {
						model = append(model, make([]byte, end-int64(len(model)))...)
					}
					copy(model[off:], p)
				case op < 13:
					size := r.Int64N(span)
					if r.IntN(4) == 0 {
						size = int64(len(model)) / 2
					}
					mustTruncate(t, f, size)
					if size < int64(len(model)) {
						model = model[:size]
					} else {
						model = append(model, make([]byte, size-int64(len(model)))...)
					}
				case op < 17:
					if len(model) == 0 {
						continue
					}
					off := r.Int64N(int64(len(model)) + 10)
					buf := make([]byte, r.IntN(300<<10))
					n, err := f.ReadAt(buf, off)
					want := []byte{}
					if off < int64(len(model)) {
						want = model[off:min(int64(len(model)), off+int64(len(buf)))]
					}
					if n != len(want) || (n < len(buf)) != (err == io.EOF) || (err != nil && err != io.EOF) {
						t.Fatalf("op %d: ReadAt(%d, %d) = %d, %v; want %d bytes", i, len(buf), off, n, err, len(want))
					}
					if !bytes.Equal(buf[:n], want) {
						t.Fatalf("op %d: ReadAt(%d, %d) differs from the model", i, len(buf), off)
					}
				case op < 19:
					if err := f.Sync(); err != nil {
						t.Fatal(err)
					}
				default:
					if err := f.Close(); err != nil {
						t.Fatal(err)
					}
					var err error
					if f, err = OpenFile(fd); err != nil {
						t.Fatal(err)
					}
				}
				if f.Size() != int64(len(model)) {
					t.Fatalf("op %d: Size = %d, model %d", i, f.Size(), len(model))
				}
			}
			if got := readAll(t, f); !bytes.Equal(got, model) {
				t.Fatal("final content differs from the model")
			}
			if i := firstNonZero(f.m[f.Size():]); i >= 0 {
				t.Fatalf("byte %d past the end is not zero", f.Size()+int64(i))
			}
			f.Close()
			var err error
			if f, err = OpenFile(fd); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, f); !bytes.Equal(got, model) {
				t.Fatal("content after reopen differs from the model")
			}
		})
	}
}

// TestFilePlain: a file that did not come from the pool keeps plain-file
// semantics (st_size is its size) until it has to diverge.
func TestFilePlain(t *testing.T) {
	dir := pmemDir(t, 64)
	path := filepath.Join(dir, "plain")
	if err := os.WriteFile(path, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	f, err := OpenFile(fd)
	if err != nil {
		t.Fatal(err)
	}
	if f.Size() != 10 || string(readAll(t, f)) != "0123456789" {
		t.Fatalf("plain file: size %d", f.Size())
	}
	mustWrite(t, f, []byte("AB"), 8)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := getSizeXattr(fd); ok {
		t.Fatal("an overwrite in place gave a plain file the size attribute")
	}
	if b, _ := os.ReadFile(path); string(b) != "01234567AB" {
		t.Fatalf("through the fs: %q", b)
	}
	// Growing makes st_size the allocated size: the attribute holds the
	// logical one from then on, and the durable size before the growth
	// is set first.
	if f, err = OpenFile(fd); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, []byte("CD"), 10)
	if s, ok, _ := getSizeXattr(fd); !ok || s != 10 {
		t.Fatalf("after growth: %s = %d, %v; want the old durable 10", SizeXattr, s, ok)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if s, ok, _ := getSizeXattr(fd); !ok || s != 12 {
		t.Fatalf("after Close: %s = %d, %v; want 12", SizeXattr, s, ok)
	}
	if f, err = OpenFile(fd); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if string(readAll(t, f)) != "01234567ABCD" || f.Allocated() != mib {
		t.Fatalf("reopened: %q, allocated %d", readAll(t, f), f.Allocated())
	}

	// An empty plain file maps nothing and grows on the first write.
	fd2, err := unix.Open(filepath.Join(dir, "empty"), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd2)
	e, err := OpenFile(fd2)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Allocated() != 0 || e.Size() != 0 {
		t.Fatalf("empty: allocated %d, size %d", e.Allocated(), e.Size())
	}
	if n, err := e.ReadAt(make([]byte, 1), 0); n != 0 || err != io.EOF {
		t.Fatalf("empty ReadAt = %d, %v", n, err)
	}
	mustWrite(t, e, []byte("x"), 0)
	if string(readAll(t, e)) != "x" {
		t.Fatal("empty file: write lost")
	}
}

func TestFileReadOnlyAndClosed(t *testing.T) {
	f, fd := slotFile(t, 64<<10)
	mustWrite(t, f, []byte("data"), 0)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	rfd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	r, err := OpenFile(rfd)
	if err != nil {
		t.Fatal(err)
	}
	if string(readAll(t, r)) != "data" {
		t.Fatal("read-only File reads wrong")
	}
	if _, err := r.WriteAt([]byte("x"), 0); !errors.Is(err, unix.EBADF) {
		t.Fatalf("read-only WriteAt = %v", err)
	}
	if err := r.Truncate(0); !errors.Is(err, unix.EBADF) {
		t.Fatalf("read-only Truncate = %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if r.Fd() != rfd {
		t.Fatal("Fd")
	}
	if _, err := r.ReadAt(make([]byte, 1), 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("ReadAt after Close = %v", err)
	}
	if err := r.Close(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
	// Close does not close the fd.
	var st unix.Stat_t
	if err := unix.Fstat(rfd, &st); err != nil {
		t.Fatalf("fd closed by Close: %v", err)
	}
	if _, err := OpenFile(rfd); err != nil {
		t.Fatal(err)
	}
}

// TestFileConcurrent: readers, an in-place writer and an appender that
// keeps growing (and remapping) the file, all at once, with Syncs.
func TestFileConcurrent(t *testing.T) {
	f, _ := slotFile(t, 256<<10)
	const region = 128 << 10
	pat := func(off int64) byte { return byte(off*7 + off>>11) }
	head := make([]byte, region)
	for i := range head {
		head[i] = pat(int64(i))
	}
	mustWrite(t, f, head, 0)
	mustWrite(t, f, make([]byte, region), region) // the in-place writer's range
	const chunk = 48 << 10
	const chunks = 200 // ~9.6 MiB: several remaps
	chunkByte := func(k int64) byte { return byte(k%250) + 1 }
	base := int64(2 * region)

	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
		stop.Store(true)
	}
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, 1))
			buf := make([]byte, 16<<10)
			for !stop.Load() {
				off := rng.Int64N(region - int64(len(buf)))
				if _, err := f.ReadAt(buf, off); err != nil {
					fail(err)
					return
				}
				for i, c := range buf {
					if c != pat(off+int64(i)) {
						fail(fmt.Errorf("reader: byte %d is %#x", off+int64(i), c))
						return
					}
				}
				// Appended chunks below the size are whole.
				size := f.Size()
				if size <= base {
					continue
				}
				k := rng.Int64N((size - base) / chunk)
				if _, err := f.ReadAt(buf[:1024], base+k*chunk+chunk-1024); err != nil {
					fail(fmt.Errorf("reader: chunk %d: %v", k, err))
					return
				}
				for _, c := range buf[:1024] {
					if c != chunkByte(k) {
						fail(fmt.Errorf("reader: chunk %d holds %#x", k, c))
						return
					}
				}
			}
		}(uint64(r))
	}
	wg.Add(2)
	go func() { // in place
		defer wg.Done()
		buf := make([]byte, 8<<10)
		for i := 0; !stop.Load(); i++ {
			for j := range buf {
				buf[j] = byte(i)
			}
			if _, err := f.WriteAt(buf, region+int64(i%16)*int64(len(buf))); err != nil {
				fail(err)
				return
			}
		}
	}()
	go func() { // syncs
		defer wg.Done()
		for !stop.Load() {
			if err := f.Sync(); err != nil {
				fail(err)
				return
			}
		}
	}()
	buf := make([]byte, chunk)
	for k := int64(0); k < chunks && !stop.Load(); k++ {
		for j := range buf {
			buf[j] = chunkByte(k)
		}
		if _, err := f.WriteAt(buf, base+k*chunk); err != nil {
			fail(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if want := base + chunks*chunk; f.Size() != want {
		t.Fatalf("Size = %d, want %d", f.Size(), want)
	}
	if f.Allocated() < f.Size() {
		t.Fatal("mapped less than the size")
	}
}

// TestFileConcurrentExtend: writers that each extend the file at once,
// with gaps between them: no writer's gap zeroing may eat another's data.
func TestFileConcurrentExtend(t *testing.T) {
	f, _ := slotFile(t, 64<<10)
	const writers, per, chunk = 4, 64, 5000
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			buf := make([]byte, chunk)
			for i := 0; i < per; i++ {
				k := i*writers + (writers - 1 - w) // later chunks first, gaps behind
				for j := range buf {
					buf[j] = byte(k%255) + 1
				}
				if _, err := f.WriteAt(buf, int64(k)*chunk); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	got := readAll(t, f)
	if len(got) != writers*per*chunk {
		t.Fatalf("size %d", len(got))
	}
	for k := 0; k < writers*per; k++ {
		for _, c := range got[k*chunk : (k+1)*chunk] {
			if c != byte(k%255)+1 {
				t.Fatalf("chunk %d holds %#x", k, c)
			}
		}
	}
}

func TestFileTruncateBig(t *testing.T) {
	f, fd := slotFile(t, 8*mib)
	data := bytes.Repeat([]byte{0xAB}, 7*mib+123)
	mustWrite(t, f, data, 0)
	mustTruncate(t, f, 4097) // takes the punch path for the tail
	var st unix.Stat_t
	unix.Fstat(fd, &st)
	if st.Blocks*512 < 8*mib {
		t.Errorf("zeroing lost the allocation: %d bytes", st.Blocks*512)
	}
	mustTruncate(t, f, 7*mib)
	got := readAll(t, f)
	if firstNonZero(got[4097:]) >= 0 || got[4096] != 0xAB {
		t.Fatalf("shrunk then grown: old bytes reappear at %d", 4097+firstNonZero(got[4097:]))
	}
	// Through the fd too.
	if raw := rawBytes(t, fd, 4097, 8*mib); firstNonZero(raw) >= 0 {
		t.Fatal("old bytes in the backing past the truncation")
	}
}
