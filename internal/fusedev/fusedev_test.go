package fusedev_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/fusedev"
	"github.com/tierfs/tierfs/internal/testenv"
)

// gateFS serves files f0..f(n-1). A WRITE waits until all n writes of
// the round are in, so n readers hold a request at once, then checks that
// its data, which go-fuse hands over in the reader's own buffer, is still
// what the caller wrote: a buffer given to two readers at once would be
// overwritten by the other's request.
type gateFS struct {
	fuse.RawFileSystem
	n int

	mu    sync.Mutex
	round *round
	errs  []string
}

type round struct {
	id   int
	in   int
	gate chan struct{}
}

func (f *gateFS) pattern(round, file int) byte { return byte(round*31 + file + 1) }

func (f *gateFS) attr(node uint64, a *fuse.Attr) {
	a.Ino = node
	a.Nlink = 1
	if node == fuse.FUSE_ROOT_ID {
		a.Mode = syscall.S_IFDIR | 0o755
	} else {
		a.Mode = syscall.S_IFREG | 0o644
	}
}

func (f *gateFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	var i int
	if _, err := fmt.Sscanf(name, "f%d", &i); err != nil || h.NodeId != fuse.FUSE_ROOT_ID || i < 0 || i >= f.n {
		return fuse.ENOENT
	}
	out.NodeId = uint64(i) + 2
	out.SetEntryTimeout(time.Hour)
	out.SetAttrTimeout(time.Hour)
	f.attr(out.NodeId, &out.Attr)
	return fuse.OK
}

func (f *gateFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	out.SetTimeout(time.Hour)
	f.attr(in.NodeId, &out.Attr)
	return fuse.OK
}

func (f *gateFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.OK
}

func (f *gateFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	file := int(in.NodeId) - 2
	f.mu.Lock()
	r := f.round
	r.in++
	if r.in == f.n {
		close(r.gate)
	}
	f.mu.Unlock()
	select {
	case <-r.gate:
	case <-cancel:
		return 0, fuse.EINTR
	}
	if want := bytes.Repeat([]byte{f.pattern(r.id, file)}, len(data)); !bytes.Equal(data, want) {
		f.mu.Lock()
		f.errs = append(f.errs, fmt.Sprintf("round %d, f%d: the WRITE's data changed while it was served (begins %x, want %x)", r.id, file, data[:8], want[:8]))
		f.mu.Unlock()
	}
	return uint32(len(data)), fuse.OK
}

// mount mounts rawFS at a new directory by hand, as a supervised daemon
// does, and serves it with a fusedev.Server until the test ends.
func mount(t *testing.T, rawFS fuse.RawFileSystem) (s *fusedev.Server, mp string, abortConn func()) {
	t.Helper()
	return mountWith(t, rawFS, nil)
}

// mountWith is mount with setup called on the server before it serves.
func mountWith(t *testing.T, rawFS fuse.RawFileSystem, setup func(*fusedev.Server)) (s *fusedev.Server, mp string, abortConn func()) {
	t.Helper()
	testenv.FUSE(t)
	mp = filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	mo := fuse.MountOptions{FsName: "fusedev-test", Name: "fusedev-test", MaxWrite: 128 << 10}
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,max_read=%d", fd, mo.MaxWrite)
	if err := unix.Mount(mo.FsName, mp, "fuse."+mo.Name, unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		unix.Close(fd)
		t.Fatalf("mount %s: %v", mp, err)
	}
	s = fusedev.New(fd, rawFS, &mo, zerolog.Nop())
	var dev uint64 // the mount's, once it serves
	t.Cleanup(func() {
		if t.Failed() && dev != 0 {
			// Requests left unanswered would hold the unmount (and the
			// test binary's exit) forever: end the connection.
			abort(dev)
		}
		if err := unix.Unmount(mp, 0); err != nil {
			t.Errorf("unmount %s: %v", mp, err)
			abort(dev)
			unix.Unmount(mp, unix.MNT_DETACH)
		}
		select {
		case <-s.Done():
		case <-time.After(testenv.WaitTimeout):
			t.Errorf("the readers did not see the unmount in %v", testenv.WaitTimeout)
		}
		unix.Close(fd)
	})
	if _, _, err := s.ReadInit(); err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(s)
	}
	s.Serve()
	var st unix.Stat_t
	if err := unix.Stat(mp, &st); err != nil {
		t.Fatal(err)
	}
	dev = st.Dev
	return s, mp, func() { abort(dev) }
}

// abort ends the connection of the FUSE mount whose device is dev
// (fusectl), failing every request it has not answered.
func abort(dev uint64) {
	os.WriteFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", unix.Minor(dev)), []byte("1"), 0o200)
}

// Readers come and go with the load; their buffers do not: a reader that
// ends leaves its buffers to the next one started, so that across many
// bursts no more buffers are allocated (and prefaulted) than readers ever
// ran at once, and no buffer serves two readers at a time.
func TestReaderBuffersReused(t *testing.T) {
	const n = 12 // writes at once: readers grow past n, then shrink
	fs := &gateFS{RawFileSystem: fuse.NewDefaultRawFileSystem(), n: n}
	s, mp, abortConn := mount(t, fs)

	var fds []int
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	for i := range n {
		fd, err := unix.Open(filepath.Join(mp, fmt.Sprintf("f%d", i)), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	const enough = 4 * fusedev.MaxReaders
	rounds := 0
	for ; rounds < 2000 && s.ReadersStarted() < enough; rounds++ {
		r := &round{id: rounds, gate: make(chan struct{})}
		fs.mu.Lock()
		fs.round = r
		fs.mu.Unlock()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				buf := bytes.Repeat([]byte{fs.pattern(r.id, i)}, 4096)
				if w, err := unix.Pwrite(fds[i], buf, 0); err != nil || w != len(buf) {
					errs[i] = fmt.Errorf("round %d: pwrite f%d: %d, %v", r.id, i, w, err)
				}
			})
		}
		answered := make(chan struct{})
		go func() { wg.Wait(); close(answered) }()
		select {
		case <-answered:
		case <-time.After(testenv.WaitTimeout):
			// A reply lost: two readers sharing a buffer send one
			// request's reply twice and the other's never.
			abortConn()
			<-answered
			t.Fatalf("round %d: the writes were not all answered in %v", r.id, testenv.WaitTimeout)
		}
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	fs.mu.Lock()
	for _, e := range fs.errs {
		t.Error(e)
	}
	fs.mu.Unlock()
	started, made := s.ReadersStarted(), s.BuffersMade()
	t.Logf("%d rounds of %d writes at once: %d readers started, %d buffers made", rounds, n, started, made)
	if started < enough {
		t.Fatalf("only %d readers started in %d rounds (want %d): the readers did not come and go, and the test shows nothing", started, rounds, enough)
	}
	if made > fusedev.MaxReaders {
		t.Errorf("%d buffers made for %d readers started; want at most %d, as many as readers may run at once", made, started, fusedev.MaxReaders)
	}
}
