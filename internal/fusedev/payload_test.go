package fusedev_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/fusedev"
)

// pipeFS serves files f0 and f1 backed by files of a directory, and takes
// WRITEs from the pipe as tierfs does: spliced into the backing. f1's
// writer takes only the first half of each payload and fails, which
// leaves the rest in the pipe for the server to drop.
type pipeFS struct {
	fuse.RawFileSystem
	backing [2]*os.File
	// spliced and copied count the WRITEs that came from the pipe and
	// from memory.
	spliced, copied atomic.Int64
}

func (f *pipeFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	var i int
	if _, err := fmt.Sscanf(name, "f%d", &i); err != nil || h.NodeId != fuse.FUSE_ROOT_ID || i < 0 || i > 1 {
		return fuse.ENOENT
	}
	out.NodeId = uint64(i) + 2
	out.SetEntryTimeout(time.Hour)
	out.SetAttrTimeout(time.Hour)
	(&gateFS{}).attr(out.NodeId, &out.Attr)
	return fuse.OK
}

func (f *pipeFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	out.SetTimeout(time.Hour)
	(&gateFS{}).attr(in.NodeId, &out.Attr)
	return fuse.OK
}

func (f *pipeFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.OK
}

func (f *pipeFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	f.copied.Add(1)
	n, err := f.backing[in.NodeId-2].WriteAt(data, int64(in.Offset))
	if err != nil {
		return uint32(n), fuse.EIO
	}
	return uint32(n), fuse.OK
}

func (f *pipeFS) WritePayload(in *fuse.WriteIn, p *fusedev.Payload) (uint32, fuse.Status) {
	f.spliced.Add(1)
	if p.Len != int(in.Size) {
		return 0, fuse.Status(syscall.EBADMSG)
	}
	want, fail := p.Len, in.NodeId == 3
	if fail {
		want /= 2
	}
	off := int64(in.Offset)
	done := 0
	for done < want {
		n, err := unix.Splice(p.Fd, nil, int(f.backing[in.NodeId-2].Fd()), &off, want-done, 0)
		if err != nil {
			return uint32(done), fuse.ToStatus(err)
		}
		done += int(n)
	}
	if fail {
		return 0, fuse.EIO
	}
	return uint32(done), fuse.OK
}

// newPipeFS makes a pipeFS over two 1 MiB backing files.
func newPipeFS(t *testing.T) *pipeFS {
	dir := t.TempDir()
	fs := &pipeFS{RawFileSystem: fuse.NewDefaultRawFileSystem()}
	for i := range fs.backing {
		b, err := os.Create(filepath.Join(dir, fmt.Sprintf("b%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		if err := b.Truncate(1 << 20); err != nil {
			t.Fatal(err)
		}
		fs.backing[i] = b
	}
	return fs
}

// A file system that takes WRITEs from the pipe gets every WRITE there
// when every request is spliced, whatever its size and alignment, with
// the bytes the program wrote; what it leaves in the pipe is dropped
// before the next request is read.
func TestWritesFromThePipe(t *testing.T) {
	fs := newPipeFS(t)
	_, mp, _ := mountWith(t, fs, func(s *fusedev.Server) { s.SetSpliceMin(0) })
	f0, err := openOwn(filepath.Join(mp, "f0"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(f0)
	f1, err := openOwn(filepath.Join(mp, "f1"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(f1)

	const span = 1 << 20
	want := make([]byte, span)
	rng := rand.New(rand.NewPCG(1, 2))
	writes := 0
	for i := range 300 {
		// Sizes up to twice the mount's max_write (128 KiB): the kernel
		// splits those into WRITEs of its own.
		size := 1 + rng.IntN(256<<10)
		if i%5 == 0 {
			size = 128 << 10
		}
		off := rng.IntN(span - size)
		p := make([]byte, size)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		if n, err := unix.Pwrite(f0, p, int64(off)); err != nil || n != size {
			t.Fatalf("write %d (%d bytes at %d): %d, %v", i, size, off, n, err)
		}
		copy(want[off:], p)
		writes++
		if i%50 == 0 {
			// A payload half taken: the write fails, and the rest of its
			// data must not be read as the next request.
			if _, err := unix.Pwrite(f1, p, 0); err == nil {
				t.Fatalf("a write the file system failed succeeded")
			}
		}
	}
	got := make([]byte, span)
	if _, err := fs.backing[0].ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for got[i] == want[i] {
			i++
		}
		t.Fatalf("the backing differs from what was written, first at byte %d", i)
	}
	sp, cp := fs.spliced.Load(), fs.copied.Load()
	t.Logf("%d writes: %d WRITEs from the pipe, %d from memory", writes, sp, cp)
	if cp != 0 || sp < int64(writes) {
		t.Errorf("%d WRITEs from the pipe and %d from memory for %d writes; want every one from the pipe", sp, cp, writes)
	}
}

// By default the readers splice only after a large WRITE (SpliceMin): a
// stream of large writes comes from the pipe, but for its first few
// WRITEs; small writes, and every other request, are read.
func TestSpliceAfterLargeWrites(t *testing.T) {
	fs := newPipeFS(t)
	_, mp, _ := mount(t, fs)
	f, err := openOwn(filepath.Join(mp, "f0"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(f)
	const large, small = 60, 200
	big := bytes.Repeat([]byte{7}, 128<<10) // the mount's max_write
	for i := range large {
		if _, err := unix.Pwrite(f, big, int64(i%8)*int64(len(big))); err != nil {
			t.Fatal(err)
		}
	}
	sp, cp := fs.spliced.Load(), fs.copied.Load()
	t.Logf("%d writes of 128 KiB: %d WRITEs from the pipe, %d from memory", large, sp, cp)
	// The first is read, and so is the next of each reader that was
	// already waiting in read(2) then (a few; more on a busy machine).
	if sp < large*3/4 || sp+cp != large {
		t.Errorf("%d of %d large WRITEs from the pipe (%d from memory); want all but the first few", sp, large, cp)
	}
	for i := range small {
		if _, err := unix.Pwrite(f, big[:4096], int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	sp2, cp2 := fs.spliced.Load()-sp, fs.copied.Load()-cp
	t.Logf("%d writes of 4 KiB: %d WRITEs from the pipe, %d from memory", small, sp2, cp2)
	if cp2 < small*3/4 || sp2+cp2 != small {
		t.Errorf("%d of %d small WRITEs read into memory (%d from the pipe); want all but those right after a large one", cp2, small, sp2)
	}
}

// openOwn opens a file of the test's own mount for writing, bypassing
// os.OpenFile: the runtime registers an os.File with its poller, and
// epoll_ctl on a FUSE file asks the server (FUSE_POLL) from a thread
// that holds its P, so a GC stopping the world waits for that thread and
// the readers that would answer never run: the test process hung so in a
// CI run.
func openOwn(path string) (int, error) {
	return unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
}
