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
// On a supervised mount takeoverFS records every passthrough handle
// (tiering/ptregistry.go), and a successor answers the opens of the
// inodes it inherits with their backing id itself.

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
	if s.tk != nil {
		// Supervised: the registry counts the kernel's, inherited ones too.
		return true, int64(s.fs.Store.PassthroughRecorded()), pt.given.Load()
	}
	return true, pt.nopen.Load(), pt.given.Load()
}

// passthrough is a mount's passthrough state; nil when off.
type passthrough struct {
	staysOn func(rel string, ino uint64, tier string) bool
	flags   uint32 // the open flags of a passthrough handle
	// fresh: new passthrough handles may be given. A daemon that took
	// a supervised mount over gives none (it cannot know which files
	// the kernel holds open without passthrough, which the kernel would
	// then refuse); it keeps those the kernel holds (ptregistry.go).
	fresh bool
	cb    *ptServer
	off   atomic.Bool
	given atomic.Uint64 // passthrough handles given
	nopen atomic.Int64  // and open now

	mu    sync.Mutex
	asked *ptHandle // the handle whose fd is being registered
}

// open makes h a passthrough handle of n when it may be one: always when
// the file has passthrough handles already (the kernel requires every
// open of such an inode to be one), else when the policy keeps it where
// it is.
func (pt *passthrough) open(n *Node, h *tiering.Handle, flags uint32) (gofs.FileHandle, uint32, bool) {
	if pt == nil || !tiering.ReadOnlyOpen(int(flags)) {
		return nil, 0, false
	}
	if _, ok := n.fs.Store.PassthroughInherited(n.Ino()); ok {
		// A predecessor's backing id, which takeoverFS gives the
		// kernel (the bridge knows nothing of it).
		pt.given.Add(1)
		return &fileHandle{h: h, node: n}, pt.flags | fuse.FOPEN_PASSTHROUGH, true
	}
	// Shared first: the kernel fails an open of an inode with passthrough
	// handles that is not one, whatever became of new ones since.
	fd, ok := h.Passthrough("")
	if !ok {
		if !pt.fresh || pt.off.Load() {
			return nil, 0, false
		}
		rel, tier := h.Where()
		if rel == "" || !pt.staysOn(rel, n.Ino(), tier) {
			return nil, 0, false
		}
		if fd, ok = h.Passthrough(tier); !ok {
			return nil, 0, false
		}
	}
	pt.given.Add(1)
	pt.nopen.Add(1)
	return &ptHandle{fileHandle: &fileHandle{h: h, node: n}, fd: fd, pt: pt}, pt.flags, true
}

// kernelCalls is what the bridge calls the kernel with: go-fuse's server
// on an unsupervised mount, fusedev's Notifier on a supervised one.
type kernelCalls interface {
	gofs.ServerCallbacks
	RegisterBackingFd(*fuse.BackingMap) (int32, syscall.Errno)
	UnregisterBackingFd(id int32) syscall.Errno
}

// ptServer is the bridge's way to the kernel on a mount with passthrough,
// with a failed registration seen (the bridge then serves every later open
// without passthrough, so no more are decided, and the handle that asked
// is made an ordinary one again) and, on a supervised mount, a backing id
// marked closing in the registry before it is taken back.
type ptServer struct {
	// k is set before the first request: by Mount on a supervised
	// mount, by go-fuse's NewServer (initFS) on another.
	k  kernelCalls
	pt *passthrough
	fs *FS
}

func (p *ptServer) server() kernelCalls { return p.k }

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

// RegisterBackingFd answers a refusal with id 0 and no error: the bridge
// then serves this open without passthrough (no backing id is 0) and goes
// on sharing the backings it has, where an error would turn it off for
// every inode, those whose passthrough handles the kernel holds too.
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
		p.fs.Log.Error().Err(errno).Msg("passthrough: the kernel refused a backing file; no new passthrough handle is given from now on")
		return 0, 0
	}
	return id, 0
}

func (p *ptServer) UnregisterBackingFd(id int32) syscall.Errno {
	p.fs.Store.MarkClosing(id)
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

func (i initFS) Init(s *fuse.Server) { i.cb.k = s }

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

// inheritPassthrough opens the registry of a supervised mount: empty on a
// fresh mount, a predecessor's handles on a takeover (the ids of those it
// died taking back are taken back now). False: it cannot be opened.
func inheritPassthrough(cb *ptServer, root *Node) bool {
	closing, err := root.fs.Store.OpenPassthroughRegistry(!cb.pt.fresh)
	if err != nil {
		root.fs.Log.Error().Err(err).Msg("passthrough: files are read through the daemon")
		return false
	}
	for _, id := range closing {
		cb.takeBack(id) // a predecessor died taking these back
	}
	return true
}

// takeBack takes a backing id back from the kernel whose last handle went
// (an inherited one, or one a predecessor died taking back), and frees its
// slots in the registry.
func (p *ptServer) takeBack(id int32) {
	if errno := p.server().UnregisterBackingFd(id); errno != 0 && errno != syscall.ENOENT {
		p.fs.Log.Warn().Err(errno).Int32("id", id).Msg("passthrough: taking a backing id back")
	}
	p.fs.Store.FinishClose(id)
}

// settlePassthrough decides, once INIT is answered, whether the mount
// gives passthrough handles and for which tiers' files; nil when none.
// writeback: the kernel agreed to the write-back cache.
func settlePassthrough(cb *ptServer, kernel uint64, root *Node, supervised, writeback bool) *passthrough {
	log, pt := root.fs.Log, cb.pt
	pt.cb = cb
	// The kernel refuses FOPEN_KEEP_CACHE with passthrough (the mount's
	// page cache is not used), and FOPEN_DIRECT_IO ([mount] direct_io)
	// would send its reads to the daemon again: the kernel lets it
	// override passthrough.
	pt.flags = root.fs.openFlags &^ (fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_DIRECT_IO)
	if !pt.fresh && supervised {
		// A successor (its [mount] is the one the mount was made with,
		// mountutil.TakeoverConfig) honours the handles its predecessors
		// gave, which the kernel holds whatever a probe of the tiers would
		// say now, and gives no new ones: no probe.
		if !inheritPassthrough(cb, root) {
			return nil
		}
		log.Info().Int("inherited", root.fs.Store.PassthroughRecorded()).Msg("passthrough: after a takeover, the kernel's passthrough handles are kept and shared by their files' read-only opens; no new ones are given until the next mount (this daemon cannot know which files the kernel has open otherwise)")
		return pt
	}
	if writeback {
		// `tierfs mount --writeback-cache` over a file that asks for both.
		log.Warn().Msg("passthrough: not with the write-back cache (the kernel refuses the two together); files are read through the daemon")
		return nil
	}
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
	if supervised && !inheritPassthrough(cb, root) {
		return nil
	}
	log.Info().Int("tiers", len(ok)).Msg("passthrough: read-only opens of pinned files are served by the kernel from their backing")
	return pt
}
