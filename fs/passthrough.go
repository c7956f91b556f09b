package fs

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tierfs/tierfs/tiering"
)

// Kernel passthrough ([mount] passthrough): a read-only open of a file the
// policy keeps where it is (pinned, StaysOn) gets a handle the kernel reads
// from the backing file itself, with no READ for the daemon. What makes
// that safe is tiering's (tiering/passthrough.go): no move and no writer
// while such a handle is open. Here: the decision at open, and go-fuse's
// bridge, which registers the backing with the kernel at the inode's first
// passthrough open and gives the same backing id to the later ones
// (FilePassthroughFder), through ptServer, which sees a registration fail.

// ptHandle is a fileHandle whose reads the kernel makes itself.
type ptHandle struct {
	*fileHandle
	fd int
	pt *passthrough
}

var _ gofs.FilePassthroughFder = (*ptHandle)(nil)

// PassthroughFd is asked by the bridge, under its backing lock, right
// before it registers fd: only for the inode's first passthrough handle.
func (p *ptHandle) PassthroughFd() (int, bool) {
	p.pt.mu.Lock()
	p.pt.asked = p
	p.pt.mu.Unlock()
	return p.fd, true
}

// asFileHandle is the open file behind fh, passthrough or not; nil for a
// directory's handle or none.
func asFileHandle(fh gofs.FileHandle) *fileHandle {
	switch h := fh.(type) {
	case *fileHandle:
		return h
	case *ptHandle:
		return h.fileHandle
	}
	return nil
}

// Release gives the handle back; the bridge drops its backing id after.
func (p *ptHandle) Release(ctx context.Context) syscall.Errno {
	errno := p.fileHandle.Release(ctx)
	p.pt.nopen.Add(-1)
	return errno
}

// Passthrough says whether the mount gives passthrough handles, how many
// are open and how many were given.
func (s *Server) Passthrough() (on bool, open int64, given uint64) {
	pt := s.fs.pt
	if pt == nil || pt.off.Load() {
		return false, 0, 0
	}
	return true, pt.nopen.Load(), pt.given.Load()
}

// passthrough is a mount's passthrough state; nil when off.
type passthrough struct {
	staysOn func(rel string, ino uint64, tier string) bool
	flags   uint32 // the open flags of a passthrough handle
	off     atomic.Bool
	given   atomic.Uint64 // passthrough handles given
	nopen   atomic.Int64  // and open now

	mu    sync.Mutex
	asked *ptHandle // the handle whose fd is being registered
}

// open makes h a passthrough handle of n when it may be one: always when
// the file has passthrough handles already (the kernel requires every
// open of such an inode to be one), else when the policy keeps it where
// it is.
func (pt *passthrough) open(n *Node, h *tiering.Handle, flags uint32) (gofs.FileHandle, bool) {
	if pt == nil || pt.off.Load() || flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, false
	}
	fd, ok := h.Passthrough("")
	if !ok {
		rel, tier := h.Where()
		if rel == "" || !pt.staysOn(rel, n.Ino(), tier) {
			return nil, false
		}
		if fd, ok = h.Passthrough(tier); !ok {
			return nil, false
		}
	}
	pt.given.Add(1)
	pt.nopen.Add(1)
	return &ptHandle{fileHandle: &fileHandle{h: h, node: n}, fd: fd, pt: pt}, true
}

// ptServer is the bridge's way to the kernel on a mount with passthrough:
// go-fuse's server, with a failed registration seen. The bridge then
// serves every later open without passthrough, so no more are decided,
// and the handle that asked is made an ordinary one again.
type ptServer struct {
	srv atomic.Pointer[fuse.Server]
	pt  *passthrough
	fs  *FS
}

func (p *ptServer) server() *fuse.Server { return p.srv.Load() }

func (p *ptServer) DeleteNotify(parent, child uint64, name string) fuse.Status {
	return p.server().DeleteNotify(parent, child, name)
}

func (p *ptServer) EntryNotify(parent uint64, name string) fuse.Status {
	return p.server().EntryNotify(parent, name)
}

func (p *ptServer) InodeNotify(node uint64, off, length int64) fuse.Status {
	return p.server().InodeNotify(node, off, length)
}

func (p *ptServer) InodeRetrieveCache(node uint64, offset int64, dest []byte) (int, fuse.Status) {
	return p.server().InodeRetrieveCache(node, offset, dest)
}

func (p *ptServer) InodeNotifyStoreCache(node uint64, offset int64, data []byte) fuse.Status {
	return p.server().InodeNotifyStoreCache(node, offset, data)
}

func (p *ptServer) RegisterBackingFd(m *fuse.BackingMap) (int32, syscall.Errno) {
	id, errno := p.server().RegisterBackingFd(m)
	if errno != 0 {
		p.pt.off.Store(true)
		p.pt.mu.Lock()
		h := p.pt.asked
		p.pt.asked = nil
		p.pt.mu.Unlock()
		if h != nil {
			h.h.Unpassthrough()
		}
		p.fs.Log.Error().Err(errno).Msg("passthrough: the kernel refused a backing file; serving every file through the daemon from now on")
	}
	return id, errno
}

func (p *ptServer) UnregisterBackingFd(id int32) syscall.Errno {
	errno := p.server().UnregisterBackingFd(id)
	if errno != 0 {
		p.fs.Log.Warn().Err(errno).Int32("id", id).Msg("passthrough: unregistering a backing file")
	}
	return errno
}

// initFS hands go-fuse's server to ptServer instead of the bridge, which
// keeps ptServer (its Options.ServerCallbacks) as its way to the kernel.
type initFS struct {
	fuse.RawFileSystem
	cb *ptServer
}

func (i initFS) Init(s *fuse.Server) { i.cb.srv.Store(s) }

// probePassthrough registers a file of each tier with the kernel and
// unregisters it: the tiers whose files the kernel takes as backings
// (a tier on a stacked filesystem such as overlayfs is refused, ELOOP).
func probePassthrough(cb *ptServer, st *tiering.Store) (ok map[string]bool, why map[string]error) {
	ok, why = map[string]bool{}, map[string]error{}
	for _, t := range st.Tiers() {
		fd, err := st.ProbeFile(t)
		if err != nil {
			why[t.Name] = err
			continue
		}
		id, errno := cb.server().RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
		syscall.Close(fd)
		if errno != 0 {
			why[t.Name] = errno
			continue
		}
		cb.server().UnregisterBackingFd(id)
		ok[t.Name] = true
	}
	return ok, why
}

// settlePassthrough decides, once INIT is answered, whether the mount
// gives passthrough handles and for which tiers' files; nil when none.
func settlePassthrough(pt *passthrough, cb *ptServer, kernel uint64, root *Node) *passthrough {
	log := root.fs.Log
	if kernel&fuse.CAP_PASSTHROUGH == 0 {
		log.Warn().Msg("passthrough: the kernel offers none (FUSE_PASSTHROUGH, Linux 6.9 with CONFIG_FUSE_PASSTHROUGH); files are read through the daemon")
		return nil
	}
	if pt.staysOn == nil {
		log.Warn().Msg("passthrough: no policy to say which files stay where they are; files are read through the daemon")
		return nil
	}
	ok, why := probePassthrough(cb, root.fs.Store)
	for name, err := range why {
		log.Warn().Err(err).Str("tier", name).Msg("passthrough: the kernel takes no backing file on this tier (root with CAP_SYS_ADMIN, and not on a stacked filesystem, are needed); its files are read through the daemon")
	}
	if len(ok) == 0 {
		return nil
	}
	stays := pt.staysOn
	pt.staysOn = func(rel string, ino uint64, tier string) bool { return ok[tier] && stays(rel, ino, tier) }
	// The kernel refuses FOPEN_KEEP_CACHE with passthrough: the page
	// cache is not used.
	pt.flags = root.fs.openFlags &^ fuse.FOPEN_KEEP_CACHE
	log.Info().Int("tiers", len(ok)).Msg("passthrough: read-only opens of pinned files are served by the kernel from their backing")
	return pt
}
