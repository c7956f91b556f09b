package tiering

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Kernel passthrough ([mount] passthrough, fs/passthrough.go): the kernel
// reads a passthrough handle's file from the backing it was given at open,
// without asking the daemon, and keeps that backing for as long as any
// passthrough handle of the inode is open. So a file may get passthrough
// handles only while nothing can change which backing is right or what is
// written through the daemon:
//   - while File.pt > 0 no move starts (moveRecorded: ErrPassthrough), and
//     no open for writing is granted (ErrPassthroughWriter);
//   - the first passthrough handle is granted only to a read-only open
//     that is the file's one reference (no writer, no move in flight: a
//     move holds a reference), of a plain file (a pmem file's logical
//     size is not its backing's), on the tier the policy said it stays
//     on;
//   - every later read-only open shares it, as the kernel requires (an
//     inode's opens are all passthrough or none).
// The first is decided under openMu, where refs change; File.pt is
// changed there too and read anywhere.

// ErrPassthrough is a move's answer for a file open with kernel
// passthrough: the kernel would go on reading the old copy.
var ErrPassthrough = fmt.Errorf("file is open with kernel passthrough (its readers read the backing directly): %w", unix.EBUSY)

// ErrPassthroughWriter is what an open for writing gets while the file has
// passthrough handles: a write through the daemon would bypass what those
// handles see of the kernel's cache, and the kernel refuses to mix the
// two kinds of open on one inode. ETXTBSY, as for an executable running.
var ErrPassthroughWriter = fmt.Errorf("file is open for reading with kernel passthrough: %w", unix.ETXTBSY)

// Passthrough makes h a passthrough handle and returns the backing fd to
// give the kernel (valid until h is released), when it can be: when the
// file has passthrough handles already (any tier), or, with tier non-empty,
// when h may be the first (see above) and the file is on the tier of that
// name. The fd is registered by the caller before h can be released.
func (h *Handle) Passthrough(tier string) (fd int, ok bool) {
	if !ReadOnlyOpen(h.flags) {
		return -1, false
	}
	f, s := h.f, h.f.s
	// f.mu keeps the fd from being swapped while it is read; openMu is
	// a leaf under it.
	f.mu.RLock()
	defer f.mu.RUnlock()
	s.openMu.Lock()
	defer s.openMu.Unlock()
	if h.pt.Load() || f.fd < 0 {
		return -1, false
	}
	switch {
	case f.pt.Load() > 0:
	case tier != "" && f.refs == 1 && f.pm == nil && f.tier.Name == tier && !f.moving.Load():
	default:
		return -1, false
	}
	f.pt.Add(1)
	h.pt.Store(true)
	return f.fd, true
}

// ReadOnlyOpen says whether an open with flags may have a passthrough
// handle or share one: it neither writes nor truncates.
func ReadOnlyOpen(flags int) bool {
	return flags&unix.O_ACCMODE == unix.O_RDONLY && flags&unix.O_TRUNC == 0
}

// IsPassthrough says whether h was made a passthrough handle.
func (h *Handle) IsPassthrough() bool { return h.pt.Load() }

// Where is the file's name in the mount now ("" once unlinked) and the
// name of the tier it is on, for the caller's decision before Passthrough.
func (h *Handle) Where() (rel, tier string) {
	h.f.mu.RLock()
	tier = h.f.tier.Name
	h.f.mu.RUnlock()
	return h.f.s.currentName(h.f), tier
}

// PassthroughHandles is how many passthrough handles the open file ino
// has (0 when it is not open).
func (s *Store) PassthroughHandles(ino uint64) int {
	s.openMu.Lock()
	defer s.openMu.Unlock()
	if f := s.open[ino]; f != nil {
		return int(f.pt.Load())
	}
	return 0
}

// passthroughHeld says whether f has passthrough handles: this daemon's,
// or on a supervised mount any the kernel holds (ptregistry.go). The
// caller holds a reference on f, taken under openMu: a first passthrough
// handle decided before it is seen here, none can be decided after.
func (s *Store) passthroughHeld(f *File) bool {
	return f.pt.Load() > 0 || s.ptHeld(f.ino)
}

// Unpassthrough makes h an ordinary handle again (the kernel refused its
// backing, so it reads through the daemon; or it is released).
func (h *Handle) Unpassthrough() {
	if h.pt.CompareAndSwap(true, false) {
		h.f.pt.Add(-1)
	}
}

// ProbeFile is a new file with no name on t, open read-write, for asking
// the kernel whether it takes t's files as passthrough backings; the
// caller closes it.
func (s *Store) ProbeFile(t *Tier) (int, error) {
	return unix.Openat(t.root, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
}

// OpenRefs is how many references the open file ino has: its handles and
// the moves under way (0 when it is not open).
func (s *Store) OpenRefs(ino uint64) int {
	s.openMu.Lock()
	defer s.openMu.Unlock()
	if f := s.open[ino]; f != nil {
		return f.refs
	}
	return 0
}
