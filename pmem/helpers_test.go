//go:build linux

package pmem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rs/zerolog"
	"github.com/tierfs/tierfs/internal/units"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
)

// pmemDir returns an empty directory that emulates a pmem tier: a private
// tmpfs of sizeMiB when the test runs as root (with the mount options in
// $TIERFS_PMEM_TMPFS_OPTS added, e.g. huge=always), else a directory under
// /dev/shm (tmpfs) if there is one, else t.TempDir(). It skips the test
// when the directory's filesystem keeps no user xattrs (tmpfs before Linux
// 6.6), which pmem files need.
func pmemDir(tb testing.TB, sizeMiB int) string {
	tb.Helper()
	dir := tb.TempDir()
	if os.Getuid() == 0 {
		opts := "mode=0700,size=" + strconv.Itoa(sizeMiB) + "m"
		if extra := os.Getenv("TIERFS_PMEM_TMPFS_OPTS"); extra != "" {
			opts += "," + extra // e.g. huge=always
		}
		err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts)
		if err == nil {
			tb.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
		} else {
			tb.Logf("no private tmpfs (%v): using a plain directory", err)
			dir = shmDir(tb, dir)
		}
	} else {
		dir = shmDir(tb, dir)
	}
	probe := filepath.Join(dir, "probe")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		tb.Fatal(err)
	}
	defer os.Remove(probe)
	err := unix.Setxattr(probe, SizeXattr, make([]byte, 8), 0)
	testenv.Require(tb, err == nil, fmt.Sprintf("%s keeps no trusted xattrs (%v): pmem needs them", dir, err))
	return dir
}

func shmDir(tb testing.TB, fallback string) string {
	var fs unix.Statfs_t
	if unix.Statfs("/dev/shm", &fs) == nil && fs.Type == unix.TMPFS_MAGIC {
		d, err := os.MkdirTemp("/dev/shm", "pmem-test-")
		if err == nil {
			tb.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	tb.Logf("no tmpfs: testing on %s", fallback)
	return fallback
}

// testPool opens and fills a pool of slots slots of seg bytes under root,
// and returns it with a data directory (and its fd) on the same tmpfs.
func testPool(tb testing.TB, root string, seg int64, slots int) (p *Pool, data string, datafd int) {
	tb.Helper()
	cfg := Config{PoolRatio: 1, SegmentSize: units.ByteSize(seg)}
	p, err := OpenPool(filepath.Join(root, ".tierfs", "pool"), cfg, seg*int64(slots), zerolog.Nop())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	if err := p.Fill(context.Background()); err != nil {
		tb.Fatal(err)
	}
	data = filepath.Join(root, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		tb.Fatal(err)
	}
	datafd, err = unix.Open(data, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(datafd) })
	return p, data, datafd
}

// openAt opens name in dirfd read-write and maps it.
func openAt(tb testing.TB, dirfd int, name string) (*File, int) {
	tb.Helper()
	fd, err := unix.Openat(dirfd, name, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	f, err := OpenFile(fd)
	if err != nil {
		unix.Close(fd)
		tb.Fatal(err)
	}
	return f, fd
}

// readAll reads the whole logical content of f.
func readAll(tb testing.TB, f *File) []byte {
	tb.Helper()
	buf := make([]byte, f.Size())
	n, err := f.ReadAt(buf, 0)
	if err != nil && !(errors.Is(err, io.EOF) && n == len(buf)) {
		tb.Fatalf("ReadAt(%d, 0) = %d, %v", len(buf), n, err)
	}
	return buf[:n]
}

// rawBytes returns n bytes of the backing at off, through the fd, past
// the logical size as well.
func rawBytes(tb testing.TB, fd int, off, n int64) []byte {
	tb.Helper()
	buf := make([]byte, n)
	got, err := unix.Pread(fd, buf, off)
	if err != nil {
		tb.Fatal(err)
	}
	return buf[:got]
}
