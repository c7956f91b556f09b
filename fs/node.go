package fs

import (
	"context"
	"errors"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/fusedev"
	"github.com/tierfs/tierfs/internal/iostats"
	"github.com/tierfs/tierfs/mountutil"
	"github.com/tierfs/tierfs/tiering"
)

// FS is what every node of one mount shares.
type FS struct {
	Store *tiering.Store
	Log   zerolog.Logger
	// Reads counts the READ requests that reached the daemon (those the
	// kernel's page cache did not answer).
	Reads atomic.Uint64
	// drop takes out of the kernel's cache the pages that a write
	// completed after earlier writes had left them in part (drop.go);
	// nil with the write-back cache or direct I/O. Set by Mount before
	// the first request is served.
	drop *pageDropper
	// openFlags answer every open: FOPEN_KEEP_CACHE (and FOPEN_DIRECT_IO
	// with [mount] direct_io), with FOPEN_NOFLUSH. Set by Mount before
	// the first request.
	openFlags uint32
	// pt is kernel passthrough's state ([mount] passthrough,
	// passthrough.go); nil when off. Set by Mount before the first request.
	pt *passthrough
}

// Node is a file or directory of the mount.
type Node struct {
	gofs.Inode
	fs *FS
	// at is the node's last known name; nil for the root and for a node
	// whose name was removed.
	at atomic.Pointer[nodeName]
}

type nodeName struct {
	parent *Node
	name   string
}

var (
	_ gofs.InodeEmbedder = (*Node)(nil)
	_ tiering.Path       = (*Node)(nil)
	_ tiering.Ident      = (*Node)(nil)

	_ gofs.NodeLookuper       = (*Node)(nil)
	_ gofs.NodeGetattrer      = (*Node)(nil)
	_ gofs.NodeSetattrer      = (*Node)(nil)
	_ gofs.NodeOpener         = (*Node)(nil)
	_ gofs.NodeCreater        = (*Node)(nil)
	_ gofs.NodeMkdirer        = (*Node)(nil)
	_ gofs.NodeMknoder        = (*Node)(nil)
	_ gofs.NodeSymlinker      = (*Node)(nil)
	_ gofs.NodeLinker         = (*Node)(nil)
	_ gofs.NodeReadlinker     = (*Node)(nil)
	_ gofs.NodeUnlinker       = (*Node)(nil)
	_ gofs.NodeRmdirer        = (*Node)(nil)
	_ gofs.NodeRenamer        = (*Node)(nil)
	_ gofs.NodeStatfser       = (*Node)(nil)
	_ gofs.NodeGetxattrer     = (*Node)(nil)
	_ gofs.NodeSetxattrer     = (*Node)(nil)
	_ gofs.NodeListxattrer    = (*Node)(nil)
	_ gofs.NodeRemovexattrer  = (*Node)(nil)
	_ gofs.NodeOpendirHandler = (*Node)(nil)
	_ gofs.NodeIoctler        = (*Node)(nil)
	_ gofs.NodeLookupNoder    = (*Node)(nil)
)

// noFlush spares every close(2) a FLUSH round trip (Linux 5.16+; older
// kernels ignore the flag): a write is in the backing when it returns and
// locks stay with the kernel, so fileHandle.Flush has nothing to do. With
// the write-back cache the kernel flushes anyway, as it must.
const noFlush = fuse.FOPEN_NOFLUSH

// NewRoot makes the root node of a mount of store.
func NewRoot(store *tiering.Store, log zerolog.Logger) *Node {
	return &Node{fs: &FS{Store: store, Log: log, openFlags: fuse.FOPEN_KEEP_CACHE | noFlush}}
}

// Components implements tiering.Path: the node's names from the root. It
// is called under the Store's namespace lock.
func (n *Node) Components() ([]string, bool) {
	var rev []string
	cur := n
	for depth := 0; ; depth++ {
		if depth > 4096 {
			return nil, false
		}
		if cur.IsRoot() {
			break
		}
		at := cur.at.Load()
		if at == nil {
			// Our name was removed; go-fuse may know another (a hard link).
			name, p := cur.Inode.Parent()
			if p == nil {
				return nil, false
			}
			pn, ok := p.Operations().(*Node)
			if !ok {
				return nil, false
			}
			at = &nodeName{parent: pn, name: name}
		}
		rev = append(rev, at.name)
		cur = at.parent
	}
	out := make([]string, len(rev))
	for i := range rev {
		out[len(rev)-1-i] = rev[i]
	}
	return out, true
}

// Ino implements tiering.Ident: the inode number the kernel knows n by,
// which whatever its name leads to must carry.
func (n *Node) Ino() uint64 { return n.StableAttr().Ino }

// Relocate implements tiering.Ident: n's name as the FUSE library's tree
// has it, for when the last known one leads elsewhere.
func (n *Node) Relocate() ([]string, bool) {
	var rev []string
	cur := &n.Inode
	for depth := 0; !cur.IsRoot(); depth++ {
		if depth > 4096 {
			return nil, false
		}
		name, p := cur.Parent()
		if p == nil {
			return nil, false
		}
		rev = append(rev, name)
		cur = p
	}
	out := make([]string, len(rev))
	for i := range rev {
		out[len(rev)-1-i] = rev[i]
	}
	return out, true
}

// Relearn implements tiering.Ident: comps is n's name now; n takes it if
// the FUSE tree knows the directories on its way.
func (n *Node) Relearn(comps []string) {
	if len(comps) == 0 {
		return
	}
	cur := n.Root()
	for _, c := range comps[:len(comps)-1] {
		if cur = cur.GetChild(c); cur == nil {
			return
		}
	}
	if p, ok := cur.Operations().(*Node); ok {
		n.at.Store(&nodeName{parent: p, name: comps[len(comps)-1]})
	}
}

func (n *Node) errno(op string, err error) syscall.Errno { return toErrno(n.fs.Log, op, err) }

func owner(ctx context.Context) tiering.Owner {
	if c, ok := fuse.FromContext(ctx); ok {
		return tiering.Owner{UID: c.Uid, GID: c.Gid}
	}
	return tiering.Owner{}
}

// fillAttr converts a core attribute to FUSE's.
func fillAttr(a *tiering.Attr, out *fuse.Attr) {
	st := &a.Stat_t
	out.Ino = st.Ino
	out.Size = uint64(st.Size)
	out.Blocks = uint64(st.Blocks)
	out.Atime = uint64(st.Atim.Sec)
	out.Atimensec = uint32(st.Atim.Nsec)
	out.Mtime = uint64(st.Mtim.Sec)
	out.Mtimensec = uint32(st.Mtim.Nsec)
	out.Ctime = uint64(st.Ctim.Sec)
	out.Ctimensec = uint32(st.Ctim.Nsec)
	out.Mode = st.Mode
	out.Nlink = uint32(st.Nlink)
	out.Uid = st.Uid
	out.Gid = st.Gid
	out.Rdev = uint32(st.Rdev)
	out.Blksize = uint32(st.Blksize)
}

// child makes (or finds) the inode for dir n's entry name.
func (n *Node) child(ctx context.Context, name string, a *tiering.Attr, out *fuse.EntryOut) *gofs.Inode {
	fillAttr(a, &out.Attr)
	node := &Node{fs: n.fs}
	node.at.Store(&nodeName{parent: n, name: name})
	ch := n.NewInode(ctx, node, gofs.StableAttr{Mode: a.Mode & unix.S_IFMT, Ino: a.Ino})
	if existing, ok := ch.Operations().(*Node); ok && existing != node && existing.at.Load() == nil {
		existing.at.Store(&nodeName{parent: n, name: name})
	}
	return ch
}

func (n *Node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	a, err := n.fs.Store.Lookup(n, name)
	if err != nil {
		return nil, n.errno("lookup", err)
	}
	return n.child(ctx, name, &a, out), 0
}

// orphan says whether n is an open file with no name left, which the
// store keeps for the handles the kernel holds (tiering/orphan.go).
func (n *Node) orphan() bool {
	return !n.IsRoot() && n.at.Load() == nil && n.fs.Store.Orphan(n.Ino())
}

// LookupNode answers for a node ID that no name leads to: only an open
// file whose last name went, which a daemon that took the mount over
// adopts (takeover.go). Called on the root alone.
func (n *Node) LookupNode(ctx context.Context, id uint64, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if !n.IsRoot() || !n.fs.Store.Orphan(id) {
		return nil, syscall.ESTALE
	}
	a, err := n.fs.Store.OrphanAttr(id)
	if err != nil {
		return nil, n.errno("lookup orphan", err)
	}
	fillAttr(&a, &out.Attr)
	return n.NewInode(ctx, &Node{fs: n.fs}, gofs.StableAttr{Mode: unix.S_IFREG, Ino: id}), 0
}

func (n *Node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var a tiering.Attr
	var err error
	if h := asFileHandle(fh); h != nil {
		a, err = h.h.Stat()
	} else if n.orphan() {
		a, err = n.fs.Store.OrphanAttr(n.Ino())
	} else {
		a, err = n.fs.Store.Getattr(n)
		if d, ok := fh.(*dirHandle); ok && errors.Is(err, syscall.ENOENT) {
			// fstat of an open directory that was removed or renamed over.
			a, err = d.attr, nil
			a.Nlink = 0
		}
	}
	if err != nil {
		return n.errno("getattr", err)
	}
	if n.IsRoot() {
		a.Ino = tiering.RootIno
	}
	fillAttr(&a, &out.Attr)
	return 0
}

func (n *Node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var sa tiering.SetAttr
	if m, ok := in.GetMode(); ok {
		sa.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		sa.UID = &u
	}
	if g, ok := in.GetGID(); ok {
		sa.GID = &g
	}
	if sz, ok := in.GetSize(); ok {
		s := int64(sz)
		sa.Size = &s
	}
	if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
		sa.Atime = &unix.Timespec{Nsec: unix.UTIME_NOW}
	} else if t, ok := in.GetATime(); ok {
		ts := unix.NsecToTimespec(t.UnixNano())
		sa.Atime = &ts
	}
	if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
		sa.Mtime = &unix.Timespec{Nsec: unix.UTIME_NOW}
	} else if t, ok := in.GetMTime(); ok {
		ts := unix.NsecToTimespec(t.UnixNano())
		sa.Mtime = &ts
	}
	var a tiering.Attr
	var err error
	if h := asFileHandle(fh); h != nil {
		a, err = h.h.Setattr(sa)
	} else {
		a, err = n.fs.Store.Setattr(n, sa)
	}
	if err != nil {
		return n.errno("setattr", err)
	}
	if n.IsRoot() {
		a.Ino = tiering.RootIno
	}
	fillAttr(&a, &out.Attr)
	return 0
}

func (n *Node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	var h *tiering.Handle
	var err error
	if n.orphan() {
		// Only a daemon that took over opens one: a handle a dead
		// daemon gave, opened again on its first use.
		h, err = n.fs.Store.OpenOrphan(n.Ino(), int(flags))
	} else {
		h, err = n.fs.Store.Open(n, int(flags))
	}
	if err != nil {
		return nil, 0, n.errno("open", err)
	}
	if fh, fl, ok := n.fs.pt.open(n, h, flags); ok {
		return fh, fl, 0
	}
	// The backing is written only through us, so the kernel's page cache
	// stays valid across opens and moves (FOPEN_KEEP_CACHE; with direct
	// I/O only sendfile and mmap use it, and a direct write drops the
	// pages it covers).
	return &fileHandle{h: h, node: n}, n.fs.openFlags, 0
}

func (n *Node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	h, a, err := n.fs.Store.Create(n, name, int(flags), mode, owner(ctx))
	if err != nil {
		return nil, nil, 0, n.errno("create", err)
	}
	ch := n.child(ctx, name, &a, out)
	return ch, &fileHandle{h: h, node: ch.Operations().(*Node)}, n.fs.openFlags, 0
}

func (n *Node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	a, err := n.fs.Store.Mkdir(n, name, mode, owner(ctx))
	if err != nil {
		return nil, n.errno("mkdir", err)
	}
	return n.child(ctx, name, &a, out), 0
}

func (n *Node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	a, err := n.fs.Store.Mknod(n, name, mode, uint64(dev), owner(ctx))
	if err != nil {
		return nil, n.errno("mknod", err)
	}
	return n.child(ctx, name, &a, out), 0
}

func (n *Node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	a, err := n.fs.Store.Symlink(n, name, target, owner(ctx))
	if err != nil {
		return nil, n.errno("symlink", err)
	}
	return n.child(ctx, name, &a, out), 0
}

func (n *Node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t, ok := target.(*Node)
	if !ok {
		return nil, syscall.EXDEV
	}
	a, err := n.fs.Store.Link(t, n, name)
	if err != nil {
		return nil, n.errno("link", err)
	}
	return n.child(ctx, name, &a, out), 0
}

func (n *Node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	s, err := n.fs.Store.Readlink(n)
	if err != nil {
		return nil, n.errno("readlink", err)
	}
	return []byte(s), 0
}

// forget clears the name of n's child once it is gone, under the Store's
// namespace lock.
func (n *Node) forget(name string) func() {
	return func() {
		if ch := n.GetChild(name); ch != nil {
			if cn, ok := ch.Operations().(*Node); ok {
				if at := cn.at.Load(); at != nil && at.parent == n && at.name == name {
					cn.at.Store(nil)
				}
			}
		}
	}
}

func (n *Node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.errno("unlink", n.fs.Store.Unlink(n, name, n.forget(name)))
}

func (n *Node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.errno("rmdir", n.fs.Store.Rmdir(n, name, n.forget(name)))
}

func (n *Node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*Node)
	if !ok {
		return syscall.EXDEV
	}
	commit := func() {
		src := n.GetChild(name)
		dst := np.GetChild(newName)
		var sn, dn *Node
		if src != nil {
			sn, _ = src.Operations().(*Node)
		}
		if dst != nil {
			dn, _ = dst.Operations().(*Node)
		}
		if flags&tiering.RenameExchange != 0 {
			if dn != nil {
				dn.at.Store(&nodeName{parent: n, name: name})
			}
		} else if dn != nil && dn != sn {
			dn.at.Store(nil)
		}
		if sn != nil {
			sn.at.Store(&nodeName{parent: np, name: newName})
		}
	}
	return n.errno("rename", n.fs.Store.Rename(n, name, np, newName, flags, commit))
}

func (n *Node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st, err := n.fs.Store.Statfs()
	if err != nil {
		return n.errno("statfs", err)
	}
	out.Blocks = st.Blocks
	out.Bfree = st.Bfree
	out.Bavail = st.Bavail
	out.Files = st.Files
	out.Ffree = st.Ffree
	out.Bsize = st.Bsize
	out.Frsize = st.Bsize
	out.NameLen = st.NameLen
	return 0
}

func (n *Node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	// An open file answers from its backing fd: the kernel asks for
	// security.capability before every write.
	if !n.IsRoot() {
		if sz, ok, err := n.fs.Store.GetxattrOpen(n.StableAttr().Ino, attr, dest); ok {
			if err != nil {
				return 0, n.errno("getxattr", err)
			}
			return uint32(sz), 0
		}
	}
	sz, err := n.fs.Store.Getxattr(n, attr, dest)
	if err != nil {
		return 0, n.errno("getxattr", err)
	}
	return uint32(sz), 0
}

func (n *Node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.errno("setxattr", n.fs.Store.Setxattr(n, attr, data, int(flags)))
}

func (n *Node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	sz, err := n.fs.Store.Listxattr(n, dest)
	if err != nil {
		return 0, n.errno("listxattr", err)
	}
	return uint32(sz), 0
}

func (n *Node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.errno("removexattr", n.fs.Store.Removexattr(n, attr))
}

// Ioctl is refused: an ioctl may carry the caller's fds or pointers,
// which mean nothing in the daemon.
func (n *Node) Ioctl(ctx context.Context, f gofs.FileHandle, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}

func (n *Node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	d := &dirHandle{node: n}
	a, err := n.fs.Store.Getattr(n)
	if err != nil {
		return nil, 0, n.errno("opendir", err)
	}
	d.attr = a
	if errno := d.load(); errno != 0 {
		return nil, 0, errno
	}
	return d, 0, 0
}

// Options are the mount's settings: the [mount] table, where each is
// described (mountutil.Config; fs reads AllowOther, WritebackCache and
// DirectIO, the mount code IOUring and ReadAheadKB), and what only the
// command line sets.
type Options struct {
	mountutil.Config
	// Debug logs every FUSE request.
	Debug bool
	// StaysOn says whether the policy keeps the file at rel (inode ino)
	// on the tier named tier: with [mount] passthrough, only such a file
	// gets kernel passthrough handles. nil: none does.
	StaysOn func(rel string, ino uint64, tier string) bool
}

// maxBackground is the mount's max_background: how many asynchronous
// requests (read-ahead READs) the kernel keeps in flight before it queues
// the rest; the congestion threshold is three quarters of it. With the
// kernel's default of 12, a reader of a file whose cache has holes (the
// pages dropped after unaligned appends, drop.go: one every batch) found
// the read-ahead congested after 9 one-page READs, and the kernel then
// threw the rest of its window away and read those pages later, one
// synchronous READ each. With 64 the holes of a window of a few MiB are
// all asked for at once (what that did for a Kafka consumer right behind
// its producer: docs/perf.md, 13).
const maxBackground = 64

// cacheTimeout is how long the kernel keeps a name's entry and a node's
// attributes without asking. Nothing changes them but requests through
// this mount, after which the kernel drops what it cached itself, and a
// move keeps the inode number, size and times; so the timeout only bounds
// how long a change made behind tierfs's back on a tier could go unseen.
// A negative entry keeps 1 s: a name made on a tier by hand (which the
// operator may do to repair) shows within a second.
const cacheTimeout = time.Hour

// Server is a mounted tierfs: the mount and what serves it (mountutil),
// and what this package decided from the kernel's answer at INIT.
type Server struct {
	*mountutil.Server
	writeback bool // the kernel caches writes (FUSE_WRITEBACK_CACHE agreed)
	fs        *FS
	stats     *iostats.Requests
	tk        *takeoverFS // on a supervised mount
}

// Stats counts the requests answered, by operation (for the metrics).
func (s *Server) Stats() *iostats.Requests {
	return s.stats
}

// Unmount unmounts the filesystem and waits for the serving to end.
func (s *Server) Unmount() error {
	if err := s.Server.Unmount(); err != nil {
		return err
	}
	s.Wait()
	return nil
}

// Wait waits until the filesystem is unmounted and every request served.
func (s *Server) Wait() {
	s.Server.Wait()
	s.fs.drop.stop()
}

// DirectIO reports whether files are opened for direct I/O.
func (s *Server) DirectIO() bool { return s.fs.openFlags&fuse.FOPEN_DIRECT_IO != 0 }

// WritebackCache reports whether the kernel caches writes and sends them
// later (asked for, and offered by the kernel).
func (s *Server) WritebackCache() bool { return s.writeback }

// Data paths, as DataPath names them.
const (
	DataPageCache = "page cache"
	DataWriteback = "write-back cache"
	DataDirectIO  = "direct I/O"
)

// DataPath says how file data moves between programs and the daemon:
// DataPageCache (writes pass through the kernel's page cache and are sent
// at once; reads are cached), DataWriteback (writes stay in the page cache
// until written back) or DataDirectIO (read and write bypass the page
// cache; sendfile and mmap use it). Direct I/O wins over the write-back
// cache for read and write.
func (s *Server) DataPath() string {
	switch {
	case s.DirectIO():
		return DataDirectIO
	case s.writeback:
		return DataWriteback
	}
	return DataPageCache
}

// DroppedPages sends the page drops still queued (drop.go) and counts
// the pages dropped from the kernel's cache since the mount.
func (s *Server) DroppedPages() uint64 { return s.fs.drop.sync() }

// Mount serves the store at mountpoint; the caller waits on the server.
func Mount(root *Node, mountpoint string, o Options) (*Server, error) {
	if saved, ok := mountutil.TakeoverConfig(); ok && saved != o.Config {
		root.fs.Log.Warn().Msg("takeover: [mount] differs from the one the mount was made with; serving with that one until the next mount")
		o.Config = saved
	}
	sec, long := time.Second, cacheTimeout
	mo := fuse.MountOptions{
		FsName:      "tierfs",
		Name:        "tierfs",
		AllowOther:  o.AllowOther,
		MaxWrite:    1 << 20,
		Debug:       o.Debug,
		DirectMount: true,
		// Locks stay with the kernel (Kafka's .lock is a POSIX lock).
		EnableLocks: false,
		// The daemon clears suid/sgid on writes (killprivFS), so the
		// kernel stops asking security.capability before every write.
		ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2,
		// Every change to a file's data comes through this mount (a
		// move copies the same bytes; nobody writes the backing), so
		// the kernel's page cache is never stale. FUSE_AUTO_INVAL_DATA
		// (go-fuse asks for it by default) made the kernel drop a file's
		// whole cache whenever a getattr showed a new mtime, that is, on
		// the first read after every write: a Kafka consumer reading
		// what the producer had just written got it from the daemon
		// instead of the page cache.
		DisabledCapabilities: fuse.CAP_AUTO_INVAL_DATA,
		// No READ is answered from an fd (the backing can move), so
		// there is nothing to splice. Without this go-fuse tried anyway
		// on every READ reply: a pipe grown, the header written into
		// it, then emptied again, three system calls for nothing.
		DisableSplice: true,
		// Up to maxBackground read-ahead READs in flight at once,
		// not the kernel's 12 (see maxBackground).
		MaxBackground: maxBackground,
	}
	if o.AllowOther {
		mo.Options = append(mo.Options, "default_permissions")
	}
	if o.WritebackCache {
		mo.ExtraCapabilities |= fuse.CAP_WRITEBACK_CACHE
	}
	if o.DirectIO {
		mo.ExtraCapabilities |= fuse.CAP_DIRECT_IO_ALLOW_MMAP
	}
	opts := &gofs.Options{
		MountOptions:    mo,
		EntryTimeout:    &long,
		AttrTimeout:     &long,
		NegativeTimeout: &sec,
		RootStableAttr:  &gofs.StableAttr{Ino: tiering.RootIno},
		NullPermissions: true,
	}
	// The node bridge wrapped in killprivFS, and that in statsFS, which
	// counts the requests.
	stats := newRequestStats()
	gen, supervised, err := mountutil.Supervised()
	if err != nil {
		return nil, err
	}
	var ms *mountutil.Server
	var tk *takeoverFS
	var cb *ptServer
	if o.Passthrough {
		// The bridge reaches the kernel through ptServer (passthrough.go);
		// a daemon that took over gives no new passthrough handles.
		cb = &ptServer{pt: &passthrough{staysOn: o.StaysOn, fresh: gen <= 1}, fs: root.fs}
	}
	if supervised {
		// A connection that outlives this daemon (takeover.go).
		opts.ExternalNodeID = true
		notify := &fusedev.Notifier{}
		opts.ServerCallbacks = notify
		if cb != nil {
			cb.k = notify
			opts.ServerCallbacks = cb
		}
		tk = newTakeoverFS(statsFS{killprivFS{gofs.NewNodeFS(root, opts)}, stats}, root.fs, gen)
		ms, err = mountutil.MountSupervised(mountpoint, tk, opts.MountOptions, o.Config, root.fs.Log, notify, tk.before)
	} else {
		if cb != nil {
			opts.ServerCallbacks = cb
		}
		var rawFS fuse.RawFileSystem = statsFS{killprivFS{gofs.NewNodeFS(root, opts)}, stats}
		if cb != nil {
			rawFS = initFS{rawFS, cb} // go-fuse's server to cb, not the bridge
		}
		ms, err = mountutil.Mount(mountpoint, rawFS, opts.MountOptions, o.Config, root.fs.Log)
	}
	if err != nil {
		return nil, err
	}
	s := &Server{Server: ms, fs: root.fs, stats: stats, tk: tk}
	// INIT is answered and nothing else served yet: settle what the
	// kernel's answer decides.
	k := ms.KernelSettings().Flags64()
	s.writeback = o.WritebackCache && k&fuse.CAP_WRITEBACK_CACHE != 0
	if o.DirectIO {
		if k&fuse.CAP_DIRECT_IO_ALLOW_MMAP != 0 {
			root.fs.openFlags = fuse.FOPEN_DIRECT_IO | fuse.FOPEN_KEEP_CACHE | noFlush
		} else {
			root.fs.Log.Warn().Msg("direct_io: the kernel cannot mmap files opened for direct I/O (FUSE_DIRECT_IO_ALLOW_MMAP, Linux 6.6); keeping the page cache")
		}
	}
	if !s.writeback && !s.DirectIO() {
		// Only then do writes leave pages partly written in the cache.
		root.fs.drop = newPageDropper()
	}
	if cb != nil {
		root.fs.pt = settlePassthrough(cb, k, root, supervised, s.writeback)
	}
	if err := ms.Start(); err != nil {
		root.fs.drop.stop()
		return nil, err
	}
	return s, nil
}
