//go:build linux

package pmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"
)

// SizeXattr is the extended attribute that holds a pmem file's logical
// size: 8 bytes, little endian. A file without it is a plain file whose
// logical size is st_size.
const SizeXattr = "trusted.tierfs.size"

// pageSize is the mapping granularity.
var pageSize = int64(os.Getpagesize())

// getSizeXattr reads SizeXattr from fd. ok is false when the attribute is
// absent (or the filesystem has no trusted xattrs at all).
func getSizeXattr(fd int) (size int64, ok bool, err error) {
	var b [8]byte
	n, err := unix.Fgetxattr(fd, SizeXattr, b[:])
	switch {
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
		return 0, false, nil
	case errors.Is(err, unix.ERANGE):
		return 0, false, fmt.Errorf("pmem: %s is longer than 8 bytes", SizeXattr)
	case err != nil:
		return 0, false, fmt.Errorf("pmem: fgetxattr %s: %w", SizeXattr, err)
	case n != 8:
		return 0, false, fmt.Errorf("pmem: %s is %d bytes, want 8", SizeXattr, n)
	}
	v := binary.LittleEndian.Uint64(b[:])
	if v > 1<<62 {
		return 0, false, fmt.Errorf("pmem: %s = %d is out of range", SizeXattr, v)
	}
	return int64(v), true, nil
}

// SizeOf reads the logical size of the file open as fd: ok is false for a
// file without SizeXattr, whose logical size is its st_size.
func SizeOf(fd int) (size int64, ok bool, err error) { return getSizeXattr(fd) }

// SizeAt reads the logical size of the file at path (not following a
// final symlink): ok is false for a file without SizeXattr, whose logical
// size is its st_size.
func SizeAt(path string) (size int64, ok bool, err error) {
	var b [8]byte
	n, err := unix.Lgetxattr(path, SizeXattr, b[:])
	switch {
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("pmem: getxattr %s: %w", SizeXattr, err)
	case n != 8:
		return 0, false, fmt.Errorf("pmem: %s is %d bytes, want 8", SizeXattr, n)
	}
	return int64(binary.LittleEndian.Uint64(b[:]) & (1<<62 - 1)), true, nil
}

// setSizeXattr writes SizeXattr on fd (not durable until an fsync).
func setSizeXattr(fd int, size int64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(size))
	if err := unix.Fsetxattr(fd, SizeXattr, b[:], 0); err != nil {
		return fmt.Errorf("pmem: fsetxattr %s: %w", SizeXattr, err)
	}
	return nil
}

func unsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL)
}

// allocate really allocates [off, off+n) of fd, extending the file if the
// range ends past it (fallocate mode 0). Where the filesystem has no
// fallocate it writes zeros, which allocates just the same.
func allocate(fd int, off, n int64) error {
	if n <= 0 {
		return nil
	}
	err := unix.Fallocate(fd, 0, off, n)
	if err == nil || !unsupported(err) {
		return err
	}
	return writeZeros(fd, off, n)
}

// zeroFile makes [off, off+n) of fd read as zeros and stay allocated:
// FALLOC_FL_ZERO_RANGE where the filesystem has it (ext4, xfs), else punch
// a hole and allocate it again (tmpfs), else write zeros. The range must lie
// inside the file.
func zeroFile(fd int, off, n int64) error {
	if n <= 0 {
		return nil
	}
	err := unix.Fallocate(fd, unix.FALLOC_FL_ZERO_RANGE, off, n)
	if err == nil || !unsupported(err) {
		return err
	}
	err = unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return allocate(fd, off, n)
	}
	if !unsupported(err) {
		return err
	}
	return writeZeros(fd, off, n)
}

func writeZeros(fd int, off, n int64) error {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		w, err := unix.Pwrite(fd, buf[:min(n, int64(len(buf)))], off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		off += int64(w)
		n -= int64(w)
	}
	return nil
}

// mapFd maps the first length bytes of fd shared, with mmap-go, on a dup
// of fd: the *os.File that mmap-go takes (and its finalizer) never owns
// the caller's fd. No MAP_SYNC on a DAX mount (mmap-go has no such flag):
// Sync msyncs and fsyncs whatever the mapping, so a file is as durable at
// each Sync without it.
func mapFd(fd int, length int64, writable bool) (mmap.MMap, error) {
	if length == 0 {
		return nil, nil
	}
	if length != int64(int(length)) {
		return nil, fmt.Errorf("pmem: mapping of %d bytes is too large", length)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("pmem: dup: %w", err)
	}
	f := os.NewFile(uintptr(dup), "pmem")
	defer f.Close()
	prot := mmap.RDONLY
	if writable {
		prot = mmap.RDWR
	}
	m, err := mmap.MapRegion(f, int(length), prot, 0, 0)
	if err != nil {
		return nil, fmt.Errorf("pmem: mmap: %w", err)
	}
	return m, nil
}

// faultError is what a copy that faulted on the mapping returns: SIGBUS on
// a shared file mapping means the page could not be had (ENOSPC on tmpfs,
// the file truncated under us, a media error on pmem).
var faultError = fmt.Errorf("pmem: fault on the mapping: %w", unix.EIO)

// guard runs fn with faults on mapped memory turned into faultError instead
// of killing the process.
func guard(fn func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			if _, ok := r.(interface{ Addr() uintptr }); ok {
				err = faultError
				return
			}
			panic(r)
		}
	}()
	fn()
	return nil
}
