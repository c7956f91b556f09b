package plan

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Measurement is the write bandwidth MeasureWrite found in a directory.
type Measurement struct {
	Dir     string
	Bytes   int64
	Seconds float64
	BW      float64 // bytes/s
	Direct  bool    // written with O_DIRECT (else through the page cache, then fsync)
	Named   bool    // the file had a name (no O_TMPFILE here); it was unlinked at once
}

// measureChunk is the size of each write: the moves copy in chunks of
// this order, and it is a multiple of every O_DIRECT alignment.
const measureChunk = 1 << 20

// MeasureWrite times writing n bytes (whole chunks of 1 MiB) to a new
// file in dir, to the end of an fdatasync. The file has no name
// (O_TMPFILE) where the file system allows, so that nothing can be left
// behind and no name in dir is touched; elsewhere it gets a fresh name
// with O_EXCL and is unlinked before the first write, and only in a
// directory that no one but root can write to (so no one can swap the
// name in between). It writes with O_DIRECT where the file system takes
// it, to time the device rather than the page cache. dir itself must not
// be a symlink. It refuses to use more than half of the space free in
// dir.
func MeasureWrite(dir string, n int64) (Measurement, error) {
	m := Measurement{Dir: dir}
	if n < measureChunk {
		return m, fmt.Errorf("measuring %s: want at least 1 MiB, got %d bytes", dir, n)
	}
	n = n / measureChunk * measureChunk
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return m, fmt.Errorf("measuring %s: %w", dir, &os.PathError{Op: "open", Path: dir, Err: err})
	}
	defer unix.Close(dfd)
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(dfd, &sfs); err != nil {
		return m, fmt.Errorf("measuring %s: statfs: %w", dir, err)
	}
	if free := int64(sfs.Bavail) * sfs.Bsize; n > free/2 {
		return m, fmt.Errorf("measuring %s: %d MiB to write, %d MiB free there: ask for at most half of it",
			dir, n>>20, free>>20)
	}
	fd, direct, named, err := openScratch(dfd, dir)
	if err != nil {
		return m, err
	}
	defer unix.Close(fd)
	m.Direct, m.Named = direct, named
	// An anonymous mapping is page-aligned, as O_DIRECT needs; not zeros,
	// which some devices compress.
	buf, err := unix.Mmap(-1, 0, measureChunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return m, fmt.Errorf("measuring %s: %w", dir, err)
	}
	defer unix.Munmap(buf)
	x := uint32(2463534242)
	for i := range buf {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		buf[i] = byte(x)
	}
	start := time.Now()
	for done := int64(0); done < n; {
		w, err := unix.Write(fd, buf)
		if errors.Is(err, unix.EINVAL) && m.Direct && done == 0 {
			// Accepted at open, refused at the write (some file
			// systems): write through the page cache instead.
			if err := dropDirect(fd); err != nil {
				return m, fmt.Errorf("measuring %s: %w", dir, err)
			}
			m.Direct = false
			start = time.Now()
			continue
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return m, fmt.Errorf("measuring %s: write: %w", dir, err)
		}
		if w <= 0 {
			return m, fmt.Errorf("measuring %s: write wrote nothing", dir)
		}
		done += int64(w)
	}
	if err := unix.Fdatasync(fd); err != nil {
		return m, fmt.Errorf("measuring %s: fdatasync: %w", dir, err)
	}
	m.Seconds = time.Since(start).Seconds()
	m.Bytes = n
	m.BW = float64(n) / m.Seconds
	return m, nil
}

// dropDirect turns O_DIRECT off on fd.
func dropDirect(fd int) error {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_DIRECT)
	return err
}

// openScratch opens the file MeasureWrite writes: nameless where it can,
// with O_DIRECT where it can.
func openScratch(dfd int, dir string) (fd int, direct, named bool, err error) {
	const flags = unix.O_WRONLY | unix.O_CLOEXEC
	for _, d := range []int{unix.O_DIRECT, 0} {
		fd, err = unix.Openat(dfd, ".", flags|unix.O_TMPFILE|d, 0o600)
		if err == nil {
			return fd, d != 0, false, nil
		}
		if d != 0 && errors.Is(err, unix.EINVAL) {
			continue // no O_DIRECT here, or no O_TMPFILE: try without
		}
		break
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return -1, false, false, fmt.Errorf("measuring %s: open a nameless file: %w", dir, err)
	}
	// A name is needed: only where no one else can swap it.
	var st unix.Stat_t
	if err := unix.Fstat(dfd, &st); err != nil {
		return -1, false, false, fmt.Errorf("measuring %s: %w", dir, err)
	}
	if st.Uid != 0 || st.Mode&0o022 != 0 {
		return -1, false, false, fmt.Errorf("measuring %s: the file system has no nameless files (O_TMPFILE) and the "+
			"directory can be written by others than root (owner %d, mode %o): refusing to make a name there", dir, st.Uid, st.Mode&0o7777)
	}
	name := fmt.Sprintf(".tierfs-plan-measure-%d-%d", os.Getpid(), time.Now().UnixNano())
	// Without O_DIRECT at the open: where the file system refuses it, an
	// open with O_CREAT may have made the name before failing.
	fd, err = unix.Openat(dfd, name, flags|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return -1, false, false, fmt.Errorf("measuring %s: create %s: %w", dir, name, err)
	}
	if err := unix.Unlinkat(dfd, name, 0); err != nil {
		unix.Close(fd)
		return -1, false, false, fmt.Errorf("measuring %s: unlink %s: %w", dir, name, err)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_DIRECT)
	}
	return fd, err == nil, true, nil
}
