//go:build linux

package pmem

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"
)

// File is a pmem-backed file: reads and writes are copies out of and into
// a shared mapping of the whole allocated backing, and the logical size
// (what readers see) is kept apart from the allocated size, in memory and,
// once made durable by Sync, in the SizeXattr attribute.
//
// Invariants: the logical size never exceeds the mapped length; bytes of
// the mapping past the logical size are never returned, and whenever the
// logical size grows the bytes between the old size and the new data are
// zeroed first, so nothing that lay past the end (an earlier life of a
// pool slot, writes lost in a crash, a truncated tail) ever reappears.
//
// Concurrency: ReadAt, WriteAt, Size, Allocated and Sync may be called
// concurrently with each other from any number of goroutines (overlapping
// concurrent writes and reads may see each other torn, as with pwrite).
// Truncate and Close may too: they take an internal lock exclusively. The
// mapping is only ever replaced (growth) under that lock, so a reader never
// copies out of an unmapped slice. Size is a plain atomic load.
type File struct {
	fd       int
	writable bool

	// mu guards m: shared by copies in and out, exclusive to replace it.
	mu     sync.RWMutex
	m      mmap.MMap
	closed bool

	size atomic.Int64 // logical size
	// extMu serialises writes that extend the logical size, so that the
	// zeroing of one's gap never overwrites another's data.
	extMu sync.Mutex
	// populated is how far the page tables of m are known to be
	// populated for writing (see populate). Guarded by extMu, reset
	// under mu held exclusively.
	populated  int64
	window     int64 // the next populate's look-ahead; grows to populateWindow
	noPopulate bool

	dmu              sync.Mutex
	dirtyLo, dirtyHi int64 // range written since the last msync; empty when lo >= hi

	// syncMu serialises Sync. durable, hasXattr and needFsync are guarded
	// by syncMu or by mu held exclusively.
	syncMu    sync.Mutex
	durable   int64 // logical size last written to SizeXattr (or st_size)
	hasXattr  bool  // the backing carries SizeXattr
	needFsync bool  // an fsync failed and must be retried
}

// OpenFile maps the whole allocated length of fd and reads the logical
// size from SizeXattr (absent: st_size, a file that did not come from the
// pool, which keeps plain-file semantics until it first needs the
// attribute). fd stays the caller's: Close does not close it. An fd opened
// O_RDONLY gives a read-only File whose writes fail with EBADF.
func OpenFile(fd int) (*File, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, fmt.Errorf("pmem: fcntl: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("pmem: fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("pmem: not a regular file: %w", unix.EINVAL)
	}
	size, ok, err := getSizeXattr(fd)
	if err != nil {
		return nil, err
	}
	if !ok || size > st.Size {
		// A logical size past the end can only come from someone
		// truncating the backing behind our back: what is there is all
		// there is.
		size = st.Size
	}
	f := &File{fd: fd, writable: fl&unix.O_ACCMODE != unix.O_RDONLY, durable: size, hasXattr: ok}
	f.m, err = mapFd(fd, st.Size, f.writable)
	if err != nil {
		return nil, err
	}
	f.size.Store(size)
	return f, nil
}

// Fd returns the backing fd.
func (f *File) Fd() int { return f.fd }

// Size returns the logical size.
func (f *File) Size() int64 { return f.size.Load() }

// Allocated returns the mapped (allocated) length of the backing.
func (f *File) Allocated() int64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return int64(len(f.m))
}

// ReadAt copies out of the mapping, up to the logical size; io.EOF at or
// past it, as io.ReaderAt.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("pmem: negative offset: %w", unix.EINVAL)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return 0, os.ErrClosed
	}
	size := f.size.Load()
	if off >= size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), size-off))
	if err := guard(func() { copy(p[:n], f.m[off:]) }); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt copies p into the mapping at off, growing the logical size. A
// write past the allocated length first grows the backing (see grow).
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("pmem: negative offset: %w", unix.EINVAL)
	}
	if !f.writable {
		return 0, unix.EBADF
	}
	if len(p) == 0 {
		return 0, nil
	}
	end := off + int64(len(p))
	if end < off {
		return 0, unix.EFBIG
	}
	for {
		f.mu.RLock()
		if f.closed {
			f.mu.RUnlock()
			return 0, os.ErrClosed
		}
		if end <= int64(len(f.m)) {
			break
		}
		f.mu.RUnlock()
		if err := f.grow(end); err != nil {
			return 0, err
		}
	}
	defer f.mu.RUnlock()
	if end <= f.size.Load() {
		// An overwrite inside the logical size. Extending writes only
		// zero from the current size up, and the size only shrinks under
		// mu held exclusively, so nothing here races with a zeroing.
		if err := guard(func() { copy(f.m[off:], p) }); err != nil {
			return 0, err
		}
		f.markDirty(off, end)
		return len(p), nil
	}
	f.extMu.Lock()
	defer f.extMu.Unlock()
	cur := f.size.Load()
	f.populate(off, end)
	if off > cur {
		if err := f.zero(cur, off); err != nil {
			return 0, err
		}
		f.markDirty(cur, off)
	}
	if err := guard(func() { copy(f.m[off:], p) }); err != nil {
		return 0, err
	}
	f.markDirty(off, end)
	if end > cur {
		// Published after the copy: a reader that sees the new size
		// sees the data.
		f.size.Store(end)
	}
	return len(p), nil
}

// Truncate sets the logical size. The bytes between the old and the new
// size are zeroed in the mapping either way, so growing reads back zeros
// and no shrunk-away byte reappears. Growing past the allocated length
// grows the backing. It is not durable until Sync.
func (f *File) Truncate(size int64) error {
	if size < 0 {
		return fmt.Errorf("pmem: negative size: %w", unix.EINVAL)
	}
	if !f.writable {
		return unix.EBADF
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return os.ErrClosed
	}
	if size > int64(len(f.m)) {
		if err := f.growLocked(size); err != nil {
			return err
		}
	}
	cur := f.size.Load()
	if size == cur {
		return nil
	}
	if !f.hasXattr {
		if err := f.ensureXattr(); err != nil {
			return err
		}
	}
	lo, hi := min(cur, size), max(cur, size)
	if err := f.zero(lo, hi); err != nil {
		return err
	}
	f.markDirty(lo, hi)
	f.size.Store(size)
	return nil
}

// Sync makes the file durable up to its current logical size: first the
// mapping is msynced (if anything was written since the last Sync), then
// the logical size is written to SizeXattr and the fd fsynced, in that
// order, so after a crash the logical size never points past durable
// data. (fsync rather than fdatasync: an xattr is metadata that fdatasync
// need not write.)
//
// Writes that complete before Sync starts are covered; writes concurrent
// with it may or may not be.
func (f *File) Sync() error {
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return os.ErrClosed
	}
	return f.syncLocked()
}

// syncLocked is Sync with syncMu and mu (either mode) held.
func (f *File) syncLocked() error {
	// The size is read before the dirty range is taken: every write that
	// made it this large marked its range dirty before publishing it.
	size := f.size.Load()
	lo, hi := f.takeDirty()
	if hi > lo {
		// mmap-go's Flush msyncs the whole mapping, not only [lo, hi):
		// the fsync below writes back the whole file anyway, and msync
		// passes over the pages nothing dirtied.
		if err := f.m.Flush(); err != nil {
			f.markDirty(lo, hi)
			return fmt.Errorf("pmem: msync: %w", err)
		}
		f.needFsync = true
	}
	if size != f.durable && (f.hasXattr || size != int64(len(f.m))) {
		if err := setSizeXattr(f.fd, size); err != nil {
			return err
		}
		f.hasXattr = true
		f.durable = size
		f.needFsync = true
	}
	if !f.needFsync {
		return nil
	}
	if err := unix.Fsync(f.fd); err != nil {
		return fmt.Errorf("pmem: fsync: %w", err)
	}
	f.needFsync = false
	return nil
}

// Close makes the file durable as Sync does (so that the logical size,
// which lives in memory until then, survives a reopen), then unmaps it. It
// does not close the fd. The File is unusable afterwards, even on error.
func (f *File) Close() error {
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return os.ErrClosed
	}
	var err error
	if f.writable {
		err = f.syncLocked()
	}
	f.closed = true
	if f.m != nil {
		if uerr := f.m.Unmap(); uerr != nil && err == nil {
			err = fmt.Errorf("pmem: munmap: %w", uerr)
		}
	}
	f.m = nil
	return err
}

// grow makes the backing at least need bytes long and remaps it.
func (f *File) grow(need int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return os.ErrClosed
	}
	return f.growLocked(need)
}

// growStep is the granularity of growth, and maxGrowStep the most a
// growth adds beyond what is needed.
const (
	growStep    = 1 << 20
	maxGrowStep = 64 << 20
)

// growTarget is the new allocated length for a file of cur bytes that
// needs need: double (adding at most 64 MiB), at least need, rounded up to
// a multiple of 1 MiB.
func growTarget(cur, need int64) int64 {
	n := cur + min(cur, maxGrowStep)
	n = max(n, need)
	return (n + growStep - 1) / growStep * growStep
}

// growLocked is grow with mu held exclusively.
func (f *File) growLocked(need int64) error {
	cur := int64(len(f.m))
	if need <= cur {
		return nil
	}
	// From here on st_size is no longer the logical size: a reopen must
	// find the attribute (holding the durable size) first.
	if !f.hasXattr {
		if err := f.ensureXattr(); err != nil {
			return err
		}
	}
	n := growTarget(cur, need)
	if err := allocate(f.fd, cur, n-cur); err != nil {
		// ENOSPC and the like: a sparse extension would only turn into
		// a fault on the first write to it.
		return fmt.Errorf("pmem: grow to %d: %w", n, err)
	}
	m, err := mapFd(f.fd, n, true)
	if err != nil {
		return err
	}
	if f.m != nil {
		if err := f.m.Unmap(); err != nil {
			m.Unmap()
			return fmt.Errorf("pmem: munmap: %w", err)
		}
	}
	f.m = m
	f.populated = 0
	return nil
}

// populateWindow is how far ahead of an appending write populate maps at
// most; the look-ahead starts at firstWindow and doubles with every
// populate, as readahead does, so that a new file that gets one small
// write (a segment roll) does not pay for mapping megabytes.
var (
	populateWindow int64 = 4 << 20
	firstWindow    int64 = 128 << 10
)

// populate makes sure the page tables of the mapping are populated for
// writing from off to populateWindow past end, with one
// madvise(MADV_POPULATE_WRITE) per window instead of one page fault per
// 4 KiB page as the copies reach them: on the tmpfs here a write fault
// costs more than copying the page (BenchmarkAppend, mmap against
// mmap-faults). With 2 MiB pages (tmpfs huge=, a DAX namespace aligned
// for PMD faults) it changes little. Only appends pay for it (under
// extMu, with mu held shared); kernels before 5.14 refuse it and it is
// not tried again. On a filesystem with a page cache written back to a
// device it would dirty pages ahead of the data; the pmem tier is tmpfs
// or DAX, where nothing is written back.
func (f *File) populate(off, end int64) {
	if f.noPopulate || end <= f.populated {
		return
	}
	if f.window == 0 {
		f.window = min(firstWindow, populateWindow)
	}
	lo := max(f.populated, off) / pageSize * pageSize
	hi := min(int64(len(f.m)), (end+f.window+pageSize-1)/pageSize*pageSize)
	f.window = min(2*f.window, populateWindow)
	if hi <= lo {
		return
	}
	if err := unix.Madvise(f.m[lo:hi], unix.MADV_POPULATE_WRITE); err != nil {
		// EINVAL: an old kernel. ENOMEM, EFAULT, EHWPOISON: the copy
		// will meet the same fault and report it.
		if unsupported(err) {
			f.noPopulate = true
		}
		return
	}
	f.populated = hi
}

// ensureXattr writes the durable logical size to a file that has no
// SizeXattr yet, before its st_size stops being its logical size. Caller
// holds mu exclusively.
func (f *File) ensureXattr() error {
	if err := setSizeXattr(f.fd, f.durable); err != nil {
		return err
	}
	f.hasXattr = true
	f.needFsync = true
	return nil
}

// zeroBig is the length from which zeroing goes through the filesystem
// (punch and reallocate) instead of clearing the mapping.
const zeroBig = 2 << 20

// zero clears [lo, hi) of the mapping. Caller holds mu (shared, with extMu,
// for a range nobody can read; or exclusively).
func (f *File) zero(lo, hi int64) error {
	if hi <= lo {
		return nil
	}
	if hi-lo >= zeroBig {
		// The page-aligned middle through the filesystem, the edges by
		// hand.
		a := (lo + pageSize - 1) / pageSize * pageSize
		b := hi / pageSize * pageSize
		if err := zeroFile(f.fd, a, b-a); err == nil {
			if err := guard(func() { clear(f.m[lo:a]); clear(f.m[b:hi]) }); err != nil {
				return err
			}
			return nil
		}
	}
	return guard(func() { clear(f.m[lo:hi]) })
}

func (f *File) markDirty(lo, hi int64) {
	f.dmu.Lock()
	if f.dirtyLo >= f.dirtyHi {
		f.dirtyLo, f.dirtyHi = lo, hi
	} else {
		f.dirtyLo, f.dirtyHi = min(f.dirtyLo, lo), max(f.dirtyHi, hi)
	}
	f.dmu.Unlock()
}

func (f *File) takeDirty() (lo, hi int64) {
	f.dmu.Lock()
	lo, hi = f.dirtyLo, f.dirtyHi
	f.dirtyLo, f.dirtyHi = 0, 0
	f.dmu.Unlock()
	return lo, hi
}
