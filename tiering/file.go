package tiering

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// File is the one backing of an inode that is open, shared by all its
// handles. Its fd may be swapped to another tier (Move, spill) while
// handles and mappings stay valid; see the lock discipline in doc.go.
type File struct {
	s   *Store
	ino uint64

	mu       sync.RWMutex
	fd       int         // backing fd, always opened read-write when possible
	tier     *Tier       // where fd lives
	readOnly bool        // fd could only be opened O_RDONLY
	moving   atomic.Bool // a move is copying this file

	dmu   sync.Mutex
	dirty *dirtySet // non-nil while a move copies

	lastRead atomic.Int64 // unix nanoseconds of the last read that reached us

	acctMu sync.Mutex
	blocks int64 // bytes this file is counted for on tier
	size   int64 // last known size

	// Guarded by Store.openMu.
	refs     int
	path     Path // last known name; nil once unlinked
	unlinked bool
}

// Handle is one open of a file.
type Handle struct {
	f     *File
	flags int
	once  sync.Once
}

func (s *Store) registerNew(ino uint64, t *Tier, fd int, p Path, st *unix.Stat_t) *File {
	f := &File{s: s, ino: ino, fd: fd, tier: t, refs: 1, path: p, blocks: st.Blocks * 512, size: st.Size}
	t.used.Add(f.blocks)
	s.openMu.Lock()
	s.open[ino] = f
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
	if flags&unix.O_ACCMODE != unix.O_RDONLY && f.readOnly {
		h.Release()
		return nil, unix.EACCES
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
		return f, nil
	}
	s.openMu.Unlock()
	readOnly := false
	fd, err := unix.Openat(l.dirfd, l.name, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EROFS) || errors.Is(err, unix.ETXTBSY) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		readOnly = true
		fd, err = unix.Openat(l.dirfd, l.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	s.openMu.Lock()
	defer s.openMu.Unlock()
	if f := s.open[ino]; f != nil { // lost a race with another open
		unix.Close(fd)
		f.refs++
		return f, nil
	}
	f := &File{s: s, ino: ino, fd: fd, tier: l.tier, readOnly: readOnly, refs: 1, path: p, blocks: st.Blocks * 512, size: st.Size}
	s.open[ino] = f
	return f, nil
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
	h.once.Do(func() { h.f.s.release(h.f) })
}

func (s *Store) release(f *File) {
	s.openMu.Lock()
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
	s.openMu.Unlock()
	f.mu.Lock()
	closeQuiet(f.fd)
	f.fd = -1
	t := f.tier
	f.mu.Unlock()
	if unlinked {
		f.acctMu.Lock()
		t.used.Add(-f.blocks)
		f.blocks = 0
		f.acctMu.Unlock()
	}
}

// account refreshes the file's share of its tier after a change of size or
// allocation. Caller holds f.mu (either mode).
func (f *File) account() {
	var st unix.Stat_t
	if unix.Fstat(f.fd, &st) != nil {
		return
	}
	f.acctMu.Lock()
	b := st.Blocks * 512
	f.tier.used.Add(b - f.blocks)
	f.blocks = b
	f.size = st.Size
	f.acctMu.Unlock()
}

// Read reads at off.
func (h *Handle) Read(p []byte, off int64) (int, error) {
	f := h.f
	f.lastRead.Store(time.Now().UnixNano())
	f.mu.RLock()
	defer f.mu.RUnlock()
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
// the next tier with room and the write goes on there: the caller sees
// ENOSPC only when no tier below has room.
func (h *Handle) Write(p []byte, off int64) (int, error) {
	f := h.f
	done := 0
	for {
		f.mu.RLock()
		n, err := f.writeLocked(p[done:], off+int64(done))
		t := f.tier
		f.mu.RUnlock()
		done += n
		if err == nil {
			if done == len(p) {
				return done, nil
			}
			continue
		}
		if !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.EDQUOT) {
			return done, err
		}
		if serr := f.s.spill(f, t); serr != nil {
			f.s.log.Warn().Str("tier", t.Name).Uint64("ino", f.ino).Err(serr).Msg("tier full and the file cannot move on")
			if done > 0 {
				return done, nil
			}
			return 0, unix.ENOSPC
		}
	}
}

func (f *File) writeLocked(p []byte, off int64) (int, error) {
	if f.fd < 0 {
		return 0, unix.EBADF
	}
	t := f.tier
	if t.capacity > 0 && t.used.Load()+int64(len(p)) > t.capacity && f.allocates(off, off+int64(len(p))) {
		// Over the configured capacity: as if the backing were full.
		return 0, unix.ENOSPC
	}
	f.recordDirty(off, off+int64(len(p)))
	n := 0
	var err error
	for n < len(p) {
		var m int
		m, err = unix.Pwrite(f.fd, p[n:], off+int64(n))
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				err = nil
				continue
			}
			break
		}
		n += m
	}
	f.account()
	return n, err
}

// allocates reports whether writing [from,to) needs new space: it extends
// the file or fills a hole (Kafka preallocates sparse segments and grows
// indexes with ftruncate). Asked only near a tier's capacity.
func (f *File) allocates(from, to int64) bool {
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
	f.mu.RLock()
	defer f.mu.RUnlock()
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
	f.acctMu.Lock()
	old := f.size
	f.acctMu.Unlock()
	f.recordDirty(min(old, size), max(old, size))
	f.markSizeDirty()
	err := unix.Ftruncate(f.fd, size)
	f.account()
	return err
}

// Allocate is fallocate(2).
func (h *Handle) Allocate(off, length int64, mode uint32) error {
	f := h.f
	f.mu.RLock()
	defer f.mu.RUnlock()
	f.recordDirty(off, off+length)
	f.markSizeDirty()
	err := unix.Fallocate(f.fd, mode, off, length)
	f.account()
	return err
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the backing.
func (h *Handle) Lseek(off int64, whence int) (int64, error) {
	f := h.f
	f.mu.RLock()
	defer f.mu.RUnlock()
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
	st.Ino = f.ino
	return Attr{Stat_t: st, Tier: f.tier.Index}, nil
}
