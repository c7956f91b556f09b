package tiering

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tierfs/tierfs/pmem"
	"golang.org/x/sys/unix"
)

// File is the one backing of an inode that is open, shared by all its
// handles. Its fd may be swapped to another tier (Move, spill) while
// handles and mappings stay valid; see the lock discipline in doc.go.
type File struct {
	s   *Store
	ino uint64

	mu   sync.RWMutex
	fd   int   // backing fd, always opened read-write when possible
	tier *Tier // where fd lives
	// readOnly, when set, is why fd could only be opened O_RDONLY
	// (EROFS: the tier's filesystem became read-only; EACCES, EPERM,
	// ETXTBSY): what an open for writing gets.
	readOnly error
	moving   atomic.Bool // a move is copying this file
	// orphan: the backing's name is in its tier's orphan directory
	// (orphan.go), where the file has no name in the mount. Set once,
	// with unlinked.
	orphan atomic.Bool
	// sealed, while non-nil, is closed when a move lets the file's
	// reads, writes, fallocates and fsyncs go on (rlockIO): from its last
	// copy until its rename is durable (commit.go).
	sealed chan struct{}
	// pm, when non-nil, is the mmap backing of a pmem file (one that
	// carries a logical size, see package pmem): data goes through it,
	// and fd is its backing. Swapped with fd.
	pm *pmem.File

	dmu   sync.Mutex
	dirty *dirtySet // non-nil while a move copies

	lastRead atomic.Int64 // unix nanoseconds of the last read that reached us
	io       *IOBucket    // where reads count (Options.IOBucket); may be nil

	acctMu sync.Mutex
	blocks int64 // bytes this file is counted for on tier
	size   int64 // last known size

	// growMu guards the writes in progress that grow the file, and the
	// size before them. While one is in progress, getattr shows that
	// size: the kernel takes a file's new size from the WRITE's reply
	// (and ignores a getattr's meanwhile, as it has the write in flight),
	// so a reader that saw the new size in a getattr would read
	// end-of-file up to it until the write returns. A leaf.
	growMu   sync.Mutex
	growing  int
	sizeFrom int64

	// Guarded by Store.openMu.
	refs int
	// pt counts the passthrough handles (passthrough.go): changed under
	// openMu with refs, read without it.
	pt       atomic.Int32
	path     Path // last known name; nil once unlinked
	unlinked bool
	// detached is the pool's hold on a pmem file unlinked while open:
	// recycled into the pool on the last release.
	detached *pmem.Detached
}

// Handle is one open of a file.
type Handle struct {
	f     *File
	flags int
	once  sync.Once
	pt    atomic.Bool // a passthrough handle (passthrough.go)
}

func (s *Store) registerNew(ino uint64, t *Tier, fd int, pm *pmem.File, p Path, st *unix.Stat_t) *File {
	f := &File{s: s, ino: ino, fd: fd, pm: pm, tier: t, refs: 1, path: p, blocks: usedBytes(st), size: st.Size, io: s.ioBucket(p)}
	t.addUsed(f.blocks)
	s.openMu.Lock()
	s.open[ino] = f
	s.forgetPlainLocked(ino)
	s.openMu.Unlock()
	return f
}

// openLoc returns a handle on the file at l, sharing the backing if the
// inode is already open. Caller holds ns (either mode).
func (s *Store) openLoc(l *loc, ino uint64, p Path, flags int) (*Handle, error) {
	if l.st.Mode&unix.S_IFMT != unix.S_IFREG {
		if isDir(&l.st) {
			return nil, unix.EISDIR
		}
		return nil, unix.EINVAL
	}
	f, err := s.getFile(l, ino, p)
	if err != nil {
		return nil, err
	}
	h := &Handle{f: f, flags: flags}
	if flags&unix.O_ACCMODE != unix.O_RDONLY && f.readOnly != nil {
		h.Release()
		return nil, f.readOnly
	}
	if !ReadOnlyOpen(flags) && s.passthroughHeld(f) {
		h.Release()
		return nil, ErrPassthroughWriter
	}
	if flags&unix.O_TRUNC != 0 && flags&unix.O_ACCMODE != unix.O_RDONLY {
		if err := h.Truncate(0); err != nil {
			h.Release()
			return nil, err
		}
	}
	return h, nil
}

func (s *Store) getFile(l *loc, ino uint64, p Path) (*File, error) {
	s.openMu.Lock()
	if f := s.open[ino]; f != nil {
		f.refs++
		if p != nil && !f.unlinked {
			f.path = p
		}
		s.openMu.Unlock()
		return s.sameFile(f, l)
	}
	s.openMu.Unlock()
	// O_NONBLOCK: a fifo put in the file's place must not hang the
	// daemon in open; it is refused below.
	var readOnly error
	const fl = unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	fd, err := unix.Openat(l.dirfd, l.name, unix.O_RDWR|fl, 0)
	if errors.Is(err, unix.EROFS) || errors.Is(err, unix.ETXTBSY) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		readOnly = err
		fd, err = unix.Openat(l.dirfd, l.name, unix.O_RDONLY|fl, 0)
	}
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Dev != l.st.Dev || st.Ino != l.st.Ino {
		unix.Close(fd)
		return nil, fmt.Errorf("%s changed on tier %s behind tierfs: %w", l.name, l.tier.Name, unix.ESTALE)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, 0); err != nil {
		unix.Close(fd)
		return nil, err
	}
	counted := usedBytes(&st) // before st.Size becomes a logical size
	var pm *pmem.File
	if mayBePMem(&st) {
		if pm, err = openPMem(fd); err != nil {
			unix.Close(fd)
			return nil, err
		}
		if pm != nil {
			st.Size = pm.Size()
		}
	}
	s.openMu.Lock()
	if f := s.open[ino]; f != nil { // lost a race with another open
		if pm != nil {
			pm.Close()
		}
		unix.Close(fd)
		f.refs++
		s.openMu.Unlock()
		return s.sameFile(f, l)
	}
	defer s.openMu.Unlock()
	f := &File{s: s, ino: ino, fd: fd, pm: pm, tier: l.tier, readOnly: readOnly, refs: 1, path: p, blocks: counted, size: st.Size, io: s.ioBucket(p)}
	s.open[ino] = f
	if pm != nil {
		s.forgetPlainLocked(ino)
	}
	return f, nil
}

// sameFile returns f, the open file with the inode number found at l, if
// its backing is the object at l. Two objects with one number (a copy
// made with its attributes behind tierfs's back) must never share a
// backing: the name would serve the other file's data. The caller holds a
// reference on f, which a refusal drops.
func (s *Store) sameFile(f *File, l *loc) (*File, error) {
	f.mu.RLock()
	var st unix.Stat_t
	err := unix.Fstat(f.fd, &st)
	tier := f.tier
	f.mu.RUnlock()
	if err == nil && st.Dev == l.st.Dev && st.Ino == l.st.Ino {
		return f, nil
	}
	s.release(f)
	if err != nil {
		return nil, err
	}
	s.log.Error().Uint64("ino", f.ino).Str("tier", l.tier.Name).Str("name", l.name).Str("open_on", tier.Name).
		Msg("a second file claims the inode number of an open file (copied with its attributes behind tierfs's back?): refused")
	return nil, fmt.Errorf("%s claims inode %d of another file: %w", l.name, f.ino, unix.EIO)
}

// usedBytes is what a file counts for on its tier: its allocated blocks,
// but none past its end. Some filesystems allocate ahead of an appending
// writer and count it in st_blocks while the file is open (xfs's
// speculative preallocation: a 4 MiB file showed 8 MiB), then give it
// back at close or later; counted at a write and subtracted at an unlink,
// the difference would leak. A preallocated file (a pool slot, Kafka's
// sparse segments filled in) has its size, so it still counts whole.
func usedBytes(st *unix.Stat_t) int64 {
	return min(st.Blocks*512, (st.Size+4095)&^4095)
}

// mayBePMem tells from a stat whether a file can be a pmem file (one with
// a logical size apart from st_size): those are whole pages long, from
// the pool or grown by pmem. Others are not asked for the attribute.
func mayBePMem(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size > 0 && st.Size%4096 == 0
}

// openPMem maps fd if the file carries a logical size, on whatever tier it
// is (the tier's type may have changed since it was written); nil for a
// plain file.
func openPMem(fd int) (*pmem.File, error) {
	if _, ok, err := pmem.SizeOf(fd); err != nil || !ok {
		return nil, err
	}
	return pmem.OpenFile(fd)
}

// liveSize is the logical size of an open pmem file, which may be ahead
// of the durable one in its attribute. Caller holds f.mu (either mode).
func (f *File) liveSize() (int64, bool) {
	if f.pm == nil {
		return 0, false
	}
	return f.pm.Size(), true
}

// liveOrBackingSize is the file's size now: the logical size of a pmem
// file, else its backing's (the accounted size if it cannot be read).
func (f *File) liveOrBackingSize() int64 {
	if size, ok := f.liveSize(); ok {
		return size
	}
	var st unix.Stat_t
	if unix.Fstat(f.fd, &st) == nil {
		return st.Size
	}
	f.acctMu.Lock()
	defer f.acctMu.Unlock()
	return f.size
}

// Open opens an existing regular file.
func (s *Store) Open(p Path, flags int) (*Handle, error) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	ls, err := s.resolve(p)
	if err != nil {
		return nil, err
	}
	defer ls.close()
	a, err := s.attrOf(&ls[0])
	if err != nil {
		return nil, err
	}
	return s.openLoc(&ls[0], a.Ino, p, flags)
}

// Release drops the handle; the last one closes the backing.
func (h *Handle) Release() {
	h.once.Do(func() {
		h.Unpassthrough()
		h.f.s.release(h.f)
	})
}

func (s *Store) release(f *File) {
	s.openMu.Lock()
	if f.refs == 1 && !f.unlinked {
		s.openMu.Unlock()
		// The last one: a pmem file's logical size lives in memory
		// until a sync, so make it durable while the file is still
		// registered; an open that comes meanwhile shares this File,
		// one that comes after reads the synced size.
		f.mu.RLock()
		if f.pm != nil {
			if err := f.pm.Sync(); err != nil {
				s.log.Error().Err(err).Uint64("ino", f.ino).Msg("pmem file: sync at close failed")
			}
		}
		f.mu.RUnlock()
		s.openMu.Lock()
	}
	f.refs--
	if f.refs > 0 {
		s.openMu.Unlock()
		return
	}
	if s.open[f.ino] == f {
		delete(s.open, f.ino)
	}
	if r := f.lastRead.Load(); r != 0 && !f.unlinked {
		s.reads[f.ino] = r
	}
	unlinked := f.unlinked
	detached := f.detached
	f.detached = nil
	// An orphan goes with its last handle, unless the kernel may hold
	// handles this daemon never saw (it took over): then when the kernel
	// forgets it (orphan.go).
	// Nothing else holds f now (a move holds a reference), so its tier
	// and share are read as they are.
	o := s.orphans[f.ino]
	if !unlinked {
		o = nil
	}
	keep := o != nil && s.opts.TakingOver && !o.forgotten
	if keep {
		o.tier, o.blocks = f.tier, f.blocks // counted by the orphan from here
		f.blocks = 0
	} else if o != nil {
		delete(s.orphans, f.ino)
	}
	s.openMu.Unlock()
	f.mu.Lock()
	hadPM := f.pm != nil
	if f.pm != nil {
		if err := f.pm.Close(); err != nil && !unlinked {
			s.log.Error().Err(err).Uint64("ino", f.ino).Msg("pmem file: close failed")
		}
		f.pm = nil
	}
	closeQuiet(f.fd)
	f.fd = -1
	t := f.tier
	f.mu.Unlock()
	if hadPM {
		// Its size attribute was just written.
		s.forgetPlain(f.ino)
	}
	if unlinked {
		f.acctMu.Lock()
		t.addUsed(-f.blocks)
		f.blocks = 0
		f.acctMu.Unlock()
		if o != nil && !keep {
			s.removeOrphan(o, f.ino, true)
		}
	}
	if detached != nil {
		s.recycle(t, detached)
	}
}

// account refreshes the file's share of its tier after a change of size or
// allocation. Caller holds f.mu (either mode).
// beginWrite notes a write up to end; grows says whether it may grow
// the file. Only such a write holds the size getattr shows: the kernel
// ignores a getattr's size only while it has a growing write in flight,
// and would otherwise take a smaller one as a truncation.
func (f *File) beginWrite(end int64) (grows bool) {
	f.acctMu.Lock()
	size := f.size
	f.acctMu.Unlock()
	if end <= size {
		return false
	}
	f.growMu.Lock()
	if f.growing == 0 {
		f.sizeFrom = size
	}
	f.growing++
	f.growMu.Unlock()
	return true
}

func (f *File) endWrite(grows bool, end int64) {
	if !grows {
		return
	}
	f.growMu.Lock()
	f.growing--
	// Others still growing it: this one's size may show once returned.
	f.sizeFrom = max(f.sizeFrom, end)
	f.growMu.Unlock()
}

// shownSize is the size getattr shows for f, whose backing has size:
// none that a growing write still in progress makes (see growMu).
func (f *File) shownSize(size int64) int64 {
	f.growMu.Lock()
	defer f.growMu.Unlock()
	if f.growing > 0 && f.sizeFrom < size {
		return f.sizeFrom
	}
	return size
}

func (f *File) account() {
	// The stat is taken under acctMu: two writers that each stat and then
	// store could store the older stat last, and the file's size and
	// blocks (and its tier's usage) would stay behind until its next write.
	f.acctMu.Lock()
	var st unix.Stat_t
	if unix.Fstat(f.fd, &st) != nil {
		f.acctMu.Unlock()
		return
	}
	size := st.Size
	if f.pm != nil {
		size = f.pm.Size()
	}
	b := usedBytes(&st)
	f.tier.addUsed(b - f.blocks)
	f.blocks = b
	f.size = size
	f.acctMu.Unlock()
}

// Read reads at off.
func (h *Handle) Read(p []byte, off int64) (int, error) {
	f := h.f
	f.lastRead.Store(time.Now().UnixNano())
	f.rlockIO()
	defer f.mu.RUnlock()
	n, err := f.readLocked(p, off)
	f.countRead(n)
	return n, err
}

// countRead counts n bytes read from the file's tier. Caller holds f.mu.
func (f *File) countRead(n int) {
	t := f.tier
	t.reads.Add(1)
	t.readBytes.Add(int64(n))
	if f.io != nil && t.Index < len(f.io.ReadBytes) {
		f.io.ReadBytes[t.Index].Add(int64(n))
	}
}

func (f *File) readLocked(p []byte, off int64) (int, error) {
	if f.pm != nil {
		n, err := f.pm.ReadAt(p, off)
		if err == io.EOF {
			err = nil
		}
		return n, pmErr(err)
	}
	n := 0
	for n < len(p) {
		m, err := unix.Pread(f.fd, p[n:], off+int64(n))
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// Write writes at off. When the file's tier is full, the file moves to
// another tier with room (spill: slower ones first) and the write goes on
// there: the caller sees ENOSPC only when no tier can take the file.
func (h *Handle) Write(p []byte, off int64) (int, error) {
	return h.write(&wsrc{p: p, n: len(p), pipe: -1}, off)
}

// WritePipe is Write of the n bytes waiting in the pipe whose read end is
// pipe (a FUSE WRITE's data, spliced from /dev/fuse): they are spliced
// into the backing, one copy, where Write's caller has already made one
// into p. What it does not write stays in the pipe.
func (h *Handle) WritePipe(pipe, n int, off int64) (int, error) {
	return h.write(&wsrc{n: n, pipe: pipe}, off)
}

func (h *Handle) write(src *wsrc, off int64) (int, error) {
	f := h.f
	end := off + int64(src.n)
	grows := f.beginWrite(end)
	defer f.endWrite(grows, end)
	done := 0
	var full []*Tier // the tiers this write found full
	for {
		f.rlockIO()
		n, err := f.writeLocked(src, done, off+int64(done))
		t := f.tier
		t.writtenBytes.Add(int64(n))
		f.mu.RUnlock()
		done += n
		if err == nil {
			if done == src.n {
				failPoint("write:done")
				return done, nil
			}
			continue
		}
		if !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.EDQUOT) {
			return done, err
		}
		full = append(full, t)
		if serr := f.s.spill(f, t, int64(src.n-done), full); serr != nil {
			f.s.log.Warn().Str("tier", t.Name).Uint64("ino", f.ino).Err(serr).Msg("tier full and the file cannot move on")
			if done > 0 {
				return done, nil
			}
			return 0, unix.ENOSPC
		}
	}
}

// wsrc is a write's data: n bytes in memory (p), or waiting in a pipe
// until written (pipe >= 0, p nil), consumed in order.
type wsrc struct {
	p    []byte
	n    int
	pipe int
}

// bytes returns the data from from on, in memory: a pipe's is read out
// first (a PMem tier copies into its mapping; a backing that cannot take
// a splice), and the source is in memory from then on.
func (s *wsrc) bytes(from int) ([]byte, error) {
	if s.p == nil && s.n > 0 {
		p := make([]byte, s.n)
		for got := from; got < s.n; {
			m, err := unix.Read(s.pipe, p[got:])
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return nil, err
			}
			if m == 0 {
				return nil, io.ErrUnexpectedEOF
			}
			got += m
		}
		s.p = p
	}
	return s.p[from:s.n], nil
}

// pwrite writes the data from from on at off in fd, returning what it
// wrote before an error.
func (s *wsrc) pwrite(fd, from int, off int64) (int, error) {
	n := 0
	if s.p == nil && s.pipe >= 0 {
		for from+n < s.n {
			o := off + int64(n)
			m, err := unix.Splice(s.pipe, nil, fd, &o, s.n-from-n, unix.SPLICE_F_MOVE)
			if err == unix.EINTR {
				continue
			}
			if err == unix.EINVAL && n == 0 {
				// A backing whose filesystem takes no splice: from memory.
				break
			}
			if err != nil {
				return n, err
			}
			if m == 0 {
				return n, io.ErrUnexpectedEOF
			}
			n += int(m)
		}
		if from+n == s.n {
			return n, nil
		}
	}
	p, err := s.bytes(from + n)
	if err != nil {
		return n, err
	}
	for len(p) > 0 {
		m, err := unix.Pwrite(fd, p, off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += m
		p = p[m:]
	}
	return n, nil
}

// writeLocked writes src from from on at off.
func (f *File) writeLocked(src *wsrc, from int, off int64) (int, error) {
	if f.fd < 0 {
		return 0, unix.EBADF
	}
	t := f.tier
	size := int64(src.n - from)
	if t.capacity > 0 && t.used.Load()+size > t.capacity && f.allocates(off, off+size) {
		// Over the configured capacity: as if the backing were full.
		return 0, unix.ENOSPC
	}
	f.recordDirty(off, off+size)
	if f.pm != nil {
		p, err := src.bytes(from)
		if err != nil {
			return 0, err
		}
		return f.writePMem(p, off)
	}
	n, err := src.pwrite(f.fd, from, off)
	f.account()
	return n, err
}

// allocates reports whether writing [from,to) needs new space: it extends
// the file or fills a hole (Kafka preallocates sparse segments and grows
// indexes with ftruncate). Asked only near a tier's capacity.
func (f *File) allocates(from, to int64) bool {
	if f.pm != nil {
		return to > f.pm.Allocated()
	}
	f.acctMu.Lock()
	size := f.size
	f.acctMu.Unlock()
	if to > size {
		return true
	}
	hole, err := unix.Seek(f.fd, from, unix.SEEK_HOLE)
	if err != nil {
		return true
	}
	return hole < to
}

// Fsync makes the file's data (and with !dataOnly, metadata) durable.
func (h *Handle) Fsync(dataOnly bool) error {
	f := h.f
	f.rlockIO()
	defer f.mu.RUnlock()
	if f.pm != nil {
		// The logical size is metadata that even fdatasync must keep:
		// Sync writes it.
		return pmErr(f.pm.Sync())
	}
	if dataOnly {
		return unix.Fdatasync(f.fd)
	}
	return unix.Fsync(f.fd)
}

// Truncate sets the size; growing reads back zeros.
func (h *Handle) Truncate(size int64) error {
	f := h.f
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.truncateLocked(size)
}

func (f *File) truncateLocked(size int64) error {
	// The size the backing has, not the one last accounted (a write that
	// grew it may not have accounted yet): a move must recopy every byte
	// the cut changes.
	old := f.liveOrBackingSize()
	f.recordDirty(min(old, size), max(old, size))
	f.markSizeDirty()
	var err error
	if f.pm != nil {
		err = pmErr(f.pm.Truncate(size))
	} else {
		err = unix.Ftruncate(f.fd, size)
	}
	f.account()
	return err
}

// Allocate is fallocate(2).
func (h *Handle) Allocate(off, length int64, mode uint32) error {
	f := h.f
	f.rlockIO()
	defer f.mu.RUnlock()
	f.recordDirty(off, off+length)
	f.markSizeDirty()
	var err error
	if f.pm != nil {
		err = f.allocatePMem(off, length, mode)
	} else {
		err = unix.Fallocate(f.fd, mode, off, length)
		if errors.Is(err, unix.EOPNOTSUPP) && mode&^unix.FALLOC_FL_KEEP_SIZE == unix.FALLOC_FL_ZERO_RANGE {
			err = zeroRange(f.fd, off, length, mode&unix.FALLOC_FL_KEEP_SIZE)
		}
	}
	f.account()
	return err
}

// zeroRange is FALLOC_FL_ZERO_RANGE on a backing that lacks it (tmpfs):
// what fallocate can do must not depend on the tier a file is on, and
// a program that found ZERO_RANGE working would fail after a move. The
// range reads back as zeros and is allocated, as with the real thing; it
// is not done in one step, which nothing reading through the mount can
// tell (the file's write lock is not needed: the kernel holds the
// inode's lock for the fallocate).
func zeroRange(fd int, off, length int64, keep uint32) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if end := min(off+length, st.Size); end > off {
		err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, end-off)
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = writeZeros(fd, off, end)
		}
		if err != nil {
			return err
		}
	}
	return unix.Fallocate(fd, keep, off, length)
}

func writeZeros(fd int, from, to int64) error {
	zeros := make([]byte, min(to-from, 1<<20))
	for o := from; o < to; {
		n, err := unix.Pwrite(fd, zeros[:min(int64(len(zeros)), to-o)], o)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		o += int64(n)
	}
	return nil
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the backing.
func (h *Handle) Lseek(off int64, whence int) (int64, error) {
	f := h.f
	f.mu.RLock()
	defer f.mu.RUnlock()
	if size, ok := f.liveSize(); ok && (whence == unix.SEEK_DATA || whence == unix.SEEK_HOLE) {
		// All data below the logical size (a slot is fully allocated),
		// one hole from there on.
		switch {
		case off < 0:
			return 0, unix.EINVAL
		case off >= size:
			return 0, unix.ENXIO
		case whence == unix.SEEK_DATA:
			return off, nil
		default:
			return size, nil
		}
	}
	return unix.Seek(f.fd, off, whence)
}

// Stat is fstat of the backing with the tierfs inode number.
func (h *Handle) Stat() (Attr, error) {
	f := h.f
	f.mu.RLock()
	defer f.mu.RUnlock()
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return Attr{}, err
	}
	if size, ok := f.liveSize(); ok {
		st.Size = size
	}
	st.Size = f.shownSize(st.Size)
	st.Ctim = f.s.ct.shown(f.tier, &st)
	st.Ino = f.ino
	if f.orphan.Load() {
		// Its backing keeps a name in the orphan directory; the kernel
		// must see none, or it would keep the inode once closed.
		st.Nlink = 0
	}
	return Attr{Stat_t: st, Tier: f.tier.Index}, nil
}

// writePMem copies p into the mapping of a pmem file. The accounting
// changes only when the backing grows: the rest of a slot is allocated
// already. Caller holds f.mu (either mode) and has recorded the range.
func (f *File) writePMem(p []byte, off int64) (int, error) {
	before := f.pm.Allocated()
	n, err := f.pm.WriteAt(p, off)
	if f.pm.Allocated() != before {
		f.account()
	} else {
		f.acctMu.Lock()
		f.size = f.pm.Size()
		f.acctMu.Unlock()
	}
	return n, pmErr(err)
}

// allocatePMem is fallocate(2) on a pmem file, in terms of its logical
// size: the slot is allocated already, so plain allocation only extends
// the size (mode 0) or does nothing (KEEP_SIZE); punching or zeroing a
// range writes zeros below the logical size. Other modes are refused.
func (f *File) allocatePMem(off, length int64, mode uint32) error {
	if off < 0 || length <= 0 {
		return unix.EINVAL
	}
	end := off + length
	size := f.pm.Size()
	switch mode {
	case 0:
		if end > size {
			return pmErr(f.pm.Truncate(end))
		}
		return nil
	case unix.FALLOC_FL_KEEP_SIZE:
		return nil
	case unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_ZERO_RANGE, unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE:
		if mode == unix.FALLOC_FL_ZERO_RANGE && end > size {
			if err := f.pm.Truncate(end); err != nil { // zeros past the old size
				return pmErr(err)
			}
		}
		zeros := make([]byte, min(length, 1<<20))
		for o := off; o < min(end, size); {
			n := min(int64(len(zeros)), min(end, size)-o)
			if _, err := f.pm.WriteAt(zeros[:n], o); err != nil {
				return pmErr(err)
			}
			o += n
		}
		return nil
	}
	return unix.EOPNOTSUPP
}

// pmErr turns the errors of package pmem into errnos.
func pmErr(err error) error {
	if err == nil {
		return nil
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return err
	}
	if errors.Is(err, os.ErrClosed) {
		return unix.EBADF
	}
	return errors.Join(err, unix.EIO)
}
