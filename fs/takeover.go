package fs

import (
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tierfs/tierfs/internal/fusedev"
	"github.com/tierfs/tierfs/tiering"
)

// takeoverFS lets a daemon answer for what its predecessors on the same
// FUSE connection handed the kernel (a supervised mount, internal/
// supervisor). Node IDs are tierfs inode numbers (go-fuse's
// ExternalNodeID), so a node ID the kernel holds names the same object in
// any daemon: one this daemon has not seen is found by its number (an
// index of the tiers, Store.InoIndex) and looked up from the root by
// name, as the kernel would have. A file handle carries the generation of
// the daemon that opened it and the open flags: this daemon's own map to
// go-fuse's handles; a predecessor's is opened again on first use, with
// the same flags less those that acted at open (O_CREAT, O_EXCL, O_TRUNC).
//
// Lookup counts: a node the kernel knew before this daemon started has a
// count only the dead daemon knew, so a daemon that took over answers no
// FORGET (its nodes stay until it exits), except to let an open file with
// no name left go (tiering/orphan.go). Every node the kernel learns
// comes from a reply this wrapper sees (a READDIRPLUS answer's entries
// read back), which is how it knows what go-fuse knows.
type takeoverFS struct {
	fuse.RawFileSystem
	fs  *FS
	gen uint64 // 16 bits: this daemon's, in every handle it gives
	// adopting: this daemon took over (generation above 1); the first
	// daemon's kernel knows nothing it did not hand out.
	adopting bool

	mu    sync.RWMutex
	known map[uint64]bool   // node IDs go-fuse's bridge has (adopting)
	fhs   map[uint64]uint64 // a predecessor's handle → ours, once opened
	// adoptMu serialises adoptions and the index they read.
	adoptMu sync.Mutex
	index   map[uint64][]string
	// adopted counts the nodes adopted (the tests' view of how often a
	// request named a node go-fuse did not know).
	adopted atomic.Uint64
}

const (
	fhBits   = 24
	fhMask   = 1<<fhBits - 1
	fhGenSh  = 48
	reopened = syscall.O_CREAT | syscall.O_EXCL | syscall.O_TRUNC
	// fhPassthrough, among a handle's open flags (no open flag has
	// this bit), marks a passthrough handle: its release ends its slot
	// in the passthrough registry.
	fhPassthrough = 1 << 23
	// uniqueResend is FUSE_UNIQUE_RESEND: set in the unique of a request
	// the kernel queued again for a successor.
	uniqueResend = 1 << 63
)

func newTakeoverFS(inner fuse.RawFileSystem, fsys *FS, gen int) *takeoverFS {
	return &takeoverFS{
		RawFileSystem: inner, fs: fsys, gen: uint64(gen) & 0xffff, adopting: gen > 1,
		known: map[uint64]bool{fuse.FUSE_ROOT_ID: true}, fhs: map[uint64]uint64{},
	}
}

// encode makes the kernel's handle for go-fuse's fh opened with flags.
func (t *takeoverFS) encode(fh uint64, flags uint32) (uint64, bool) {
	if fh == 0 {
		return 0, true
	}
	if fh > fhMask {
		return 0, false
	}
	return t.gen<<fhGenSh | uint64(flags&fhMask)<<fhBits | fh, true
}

// handle translates the kernel's handle kfh on node into go-fuse's,
// opening a predecessor's afresh; ok is false for a predecessor's handle
// that this daemon never opened when release is set (nothing to release).
func (t *takeoverFS) handle(kfh, node uint64, dir, release bool) (uint64, fuse.Status) {
	if kfh == 0 {
		return 0, fuse.OK
	}
	if kfh>>fhGenSh == t.gen {
		return kfh & fhMask, fuse.OK
	}
	t.mu.RLock()
	fh, ok := t.fhs[kfh]
	t.mu.RUnlock()
	if ok {
		if release {
			t.mu.Lock()
			delete(t.fhs, kfh)
			t.mu.Unlock()
		}
		return fh, fuse.OK
	}
	if release {
		return 0, fuse.ENOENT
	}
	t.adoptMu.Lock()
	defer t.adoptMu.Unlock()
	t.mu.RLock()
	fh, ok = t.fhs[kfh]
	t.mu.RUnlock()
	if ok {
		return fh, fuse.OK
	}
	in := fuse.OpenIn{InHeader: fuse.InHeader{NodeId: node}, Flags: uint32(kfh>>fhBits&fhMask) &^ (reopened | fhPassthrough)}
	var out fuse.OpenOut
	var st fuse.Status
	if dir {
		st = t.RawFileSystem.OpenDir(nil, &in, &out)
	} else {
		st = t.RawFileSystem.Open(nil, &in, &out)
	}
	if !st.Ok() {
		t.fs.Log.Warn().Uint64("ino", node).Uint64("fh", kfh).Err(syscall.Errno(st)).Msg("takeover: cannot open again a handle the previous daemon gave")
		return 0, st
	}
	t.mu.Lock()
	t.fhs[kfh] = out.Fh
	t.mu.Unlock()
	t.fs.Log.Debug().Uint64("ino", node).Uint64("fh", kfh).Msg("takeover: opened again a handle the previous daemon gave")
	return out.Fh, fuse.OK
}

// before makes sure go-fuse knows every node a request names (fusedev's
// Before hook).
func (t *takeoverFS) before(opcode uint32, nodes []uint64) fuse.Status {
	if !t.adopting {
		return fuse.OK
	}
	for _, id := range nodes {
		t.mu.RLock()
		k := t.known[id]
		t.mu.RUnlock()
		if !k {
			if st := t.adopt(id); !st.Ok() {
				return st
			}
		}
	}
	return fuse.OK
}

func (t *takeoverFS) markKnown(id uint64) {
	if !t.adopting || id == 0 {
		return
	}
	t.mu.Lock()
	t.known[id] = true
	t.mu.Unlock()
}

// adopt finds the object with inode number id by its name and looks it
// up from the root, as the kernel did with the daemon that handed it out.
func (t *takeoverFS) adopt(id uint64) fuse.Status {
	t.adoptMu.Lock()
	defer t.adoptMu.Unlock()
	t.mu.RLock()
	k := t.known[id]
	t.mu.RUnlock()
	if k {
		return fuse.OK
	}
	if t.fs.Store.Orphan(id) {
		// An open file whose last name went: kept under its number
		// for this (tiering/orphan.go), and known by it alone.
		var out fuse.EntryOut
		if st := t.RawFileSystem.Lookup(nil, &fuse.InHeader{NodeId: id}, ".", &out); !st.Ok() || out.NodeId != id {
			t.fs.Log.Warn().Uint64("ino", id).Err(syscall.Errno(st)).Msg("takeover: cannot adopt an open file with no name left; ESTALE")
			return fuse.Status(syscall.ESTALE)
		}
		t.markKnown(id)
		t.adopted.Add(1)
		t.fs.Log.Debug().Uint64("ino", id).Msg("takeover: adopted an open file with no name left")
		return fuse.OK
	}
	for fresh := false; ; fresh = true {
		if t.index == nil || fresh {
			idx, err := t.fs.Store.InoIndex()
			if err != nil {
				t.fs.Log.Error().Err(err).Msg("takeover: cannot index the tiers' inode numbers")
				return fuse.EIO
			}
			t.index = idx
		}
		if comps, ok := t.index[id]; ok {
			parent := uint64(fuse.FUSE_ROOT_ID)
			for _, c := range comps {
				var out fuse.EntryOut
				st := t.RawFileSystem.Lookup(nil, &fuse.InHeader{NodeId: parent}, c, &out)
				if !st.Ok() || out.NodeId == 0 {
					parent = 0
					break
				}
				parent = out.NodeId
				t.markKnown(parent)
			}
			if parent == id {
				t.adopted.Add(1)
				t.fs.Log.Debug().Uint64("ino", id).Strs("name", comps).Msg("takeover: adopted a node the previous daemon gave")
				return fuse.OK
			}
		}
		if fresh {
			// No name, and not kept as an orphan (a name that could not
			// be kept, or a daemon from before orphans): nothing is
			// left to serve.
			t.fs.Log.Warn().Uint64("ino", id).Msg("takeover: the kernel holds a node that has no name left; ESTALE")
			return fuse.Status(syscall.ESTALE)
		}
	}
}

// Node IDs the bridge hands out.

func (t *takeoverFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	st := t.RawFileSystem.Lookup(cancel, h, name, out)
	if st.Ok() {
		t.markKnown(out.NodeId)
	}
	return st
}

func (t *takeoverFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	st := t.RawFileSystem.Mknod(cancel, in, name, out)
	if st.Ok() {
		t.markKnown(out.NodeId)
	}
	return st
}

func (t *takeoverFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	st := t.RawFileSystem.Mkdir(cancel, in, name, out)
	if st.Ok() {
		t.markKnown(out.NodeId)
	}
	return st
}

func (t *takeoverFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	st := t.RawFileSystem.Link(cancel, in, name, out)
	if st.Ok() {
		t.markKnown(out.NodeId)
	}
	return st
}

func (t *takeoverFS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	st := t.RawFileSystem.Symlink(cancel, h, target, name, out)
	if st.Ok() {
		t.markKnown(out.NodeId)
	}
	return st
}

func (t *takeoverFS) Forget(nodeid, nlookup uint64) {
	if t.adopting {
		// Counts unknown: the node stays. But the kernel has let go of
		// the inode, so a file with no name left that it held can go.
		t.fs.Store.Forgotten(nodeid)
		return
	}
	t.RawFileSystem.Forget(nodeid, nlookup)
}

// Handles the bridge hands out.

func (t *takeoverFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := t.RawFileSystem.Create(cancel, in, name, out)
	if !st.Ok() {
		return st
	}
	t.markKnown(out.NodeId)
	kfh, ok := t.encode(out.Fh, in.Flags)
	if !ok {
		t.RawFileSystem.Release(cancel, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: out.NodeId}, Fh: out.Fh})
		return fuse.Status(syscall.EMFILE)
	}
	out.Fh = kfh
	return fuse.OK
}

func (t *takeoverFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if t.fs.pt != nil {
		return t.openPassthrough(cancel, in, out)
	}
	st := t.RawFileSystem.Open(cancel, in, out)
	if !st.Ok() {
		return st
	}
	kfh, ok := t.encode(out.Fh, in.Flags)
	if !ok {
		t.RawFileSystem.Release(cancel, &fuse.ReleaseIn{InHeader: in.InHeader, Fh: out.Fh})
		return fuse.Status(syscall.EMFILE)
	}
	out.Fh = kfh
	return fuse.OK
}

// openPassthrough is Open on a mount with passthrough: a passthrough
// handle is recorded in the registry (tiering/ptregistry.go) before the
// reply gives it to the kernel, an inode a predecessor gave passthrough
// handles gets their backing id, and an OPEN the kernel resends (the dead
// daemon recorded the handle but never answered) gets the handle recorded.
func (t *takeoverFS) openPassthrough(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := t.fs.Store
	unique := in.Unique &^ uniqueResend
	if in.Unique&uniqueResend != 0 {
		if kfh, id, ok := st.PassthroughByUnique(unique); ok {
			out.Fh, out.BackingID, out.OpenFlags = kfh, id, t.fs.pt.flags|fuse.FOPEN_PASSTHROUGH
			return fuse.OK
		}
	}
	var inherited int32
	held := false
	if tiering.ReadOnlyOpen(int(in.Flags)) {
		inherited, held = st.AcquireInherited(in.NodeId)
	}
	drop := func() {
		if !held {
			return
		}
		if id, last := st.DropPending(in.NodeId); last {
			t.fs.pt.cb.takeBack(id)
		}
	}
	s := t.RawFileSystem.Open(cancel, in, out)
	if !s.Ok() {
		drop()
		return s
	}
	pt := out.OpenFlags&fuse.FOPEN_PASSTHROUGH != 0
	flags := in.Flags
	if pt {
		flags |= fhPassthrough
	}
	kfh, ok := t.encode(out.Fh, flags)
	if !ok {
		t.RawFileSystem.Release(cancel, &fuse.ReleaseIn{InHeader: in.InHeader, Fh: out.Fh})
		drop()
		return fuse.Status(syscall.EMFILE)
	}
	if !pt {
		drop()
		out.Fh = kfh
		return fuse.OK
	}
	own := !held
	if held {
		out.BackingID = inherited // the bridge left it 0
	}
	if err := st.RecordPassthrough(in.NodeId, kfh, unique, out.BackingID, own); err != nil {
		t.RawFileSystem.Release(cancel, &fuse.ReleaseIn{InHeader: in.InHeader, Fh: out.Fh})
		drop()
		return fuse.Status(syscall.ENFILE)
	}
	out.Fh = kfh
	return fuse.OK
}

func (t *takeoverFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := t.RawFileSystem.OpenDir(cancel, in, out)
	if !st.Ok() {
		return st
	}
	kfh, ok := t.encode(out.Fh, in.Flags)
	if !ok {
		t.RawFileSystem.ReleaseDir(&fuse.ReleaseIn{InHeader: in.InHeader, Fh: out.Fh})
		return fuse.Status(syscall.EMFILE)
	}
	out.Fh = kfh
	return fuse.OK
}

// Requests that carry a handle.

func (t *takeoverFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.Flags_&fuse.FUSE_GETATTR_FH != 0 {
		fh, st := t.handle(in.Fh_, in.NodeId, false, false)
		if !st.Ok() {
			return st
		}
		in.Fh_ = fh
	}
	return t.RawFileSystem.GetAttr(cancel, in, out)
}

func (t *takeoverFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.Valid&fuse.FATTR_FH != 0 {
		fh, st := t.handle(in.Fh, in.NodeId, false, false)
		if !st.Ok() {
			return st
		}
		in.Fh = fh
	}
	return t.RawFileSystem.SetAttr(cancel, in, out)
}

func (t *takeoverFS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	if in.GetattrFlags&fuse.FUSE_GETATTR_FH != 0 {
		fh, st := t.handle(in.Fh, in.NodeId, false, false)
		if !st.Ok() {
			return st
		}
		in.Fh = fh
	}
	return t.RawFileSystem.Statx(cancel, in, out)
}

func (t *takeoverFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	fh, st := t.handle(in.Fh, in.NodeId, false, false)
	if !st.Ok() {
		return nil, st
	}
	in.Fh = fh
	return t.RawFileSystem.Read(cancel, in, buf)
}

func (t *takeoverFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	fh, st := t.handle(in.Fh, in.NodeId, false, false)
	if !st.Ok() {
		return 0, st
	}
	in.Fh = fh
	return t.RawFileSystem.Write(cancel, in, data)
}

// Each layer between fusedev and go-fuse's bridge passes a pipe's payload
// on (statsFS and takeoverFS assert the one below does).
var (
	_ fusedev.PayloadWriter = (*takeoverFS)(nil)
	_ fusedev.PayloadWriter = statsFS{}
	_ fusedev.PayloadWriter = killprivFS{}
)

// WritePayload is Write of data waiting in a pipe (fusedev).
func (t *takeoverFS) WritePayload(in *fuse.WriteIn, p *fusedev.Payload) (uint32, fuse.Status) {
	fh, st := t.handle(in.Fh, in.NodeId, false, false)
	if !st.Ok() {
		return 0, st
	}
	in.Fh = fh
	return t.RawFileSystem.(fusedev.PayloadWriter).WritePayload(in, p)
}

func (t *takeoverFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	fh, st := t.handle(in.Fh, in.NodeId, false, false)
	if !st.Ok() {
		return 0, st
	}
	in.Fh = fh
	return t.RawFileSystem.Writev(cancel, in, data)
}

func (t *takeoverFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	fh, st := t.handle(in.Fh, in.NodeId, false, false)
	if !st.Ok() {
		return st
	}
	in.Fh = fh
	return t.RawFileSystem.Lseek(cancel, in, out)
}

func (t *takeoverFS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	fh, st := t.handle(in.Fh, in.NodeId, false, false)
	if !st.Ok() {
		return st
	}
	in.Fh = fh
	return t.RawFileSystem.GetLk(cancel, in, out)
}

func (t *takeoverFS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	fh, st := t.handle(in.Fh, in.NodeId, false, false)
	if !st.Ok() {
		return st
	}
	in.Fh = fh
	return t.RawFileSystem.SetLk(cancel, in)
}

func (t *takeoverFS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	fh, st := t.handle(in.Fh, in.NodeId, false, false)
	if !st.Ok() {
		return st
	}
	in.Fh = fh
	return t.RawFileSystem.SetLkw(cancel, in)
}

func (t *takeoverFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	kfh := in.Fh
	fh, st := t.handle(in.Fh, in.NodeId, false, true)
	if st.Ok() { // else a predecessor's handle this daemon never opened
		in.Fh = fh
		t.RawFileSystem.Release(cancel, in)
	}
	if kfh>>fhBits&fhPassthrough != 0 {
		if id, last := t.fs.Store.ReleasePassthrough(kfh); last {
			t.fs.pt.cb.takeBack(id)
		}
	}
}

func (t *takeoverFS) ReleaseDir(in *fuse.ReleaseIn) {
	fh, st := t.handle(in.Fh, in.NodeId, true, true)
	if !st.Ok() {
		return
	}
	in.Fh = fh
	t.RawFileSystem.ReleaseDir(in)
}

func (t *takeoverFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	fh, st := t.handle(in.Fh, in.NodeId, false, false)
	if !st.Ok() {
		return st
	}
	in.Fh = fh
	return t.RawFileSystem.Flush(cancel, in)
}

func (t *takeoverFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	fh, st := t.handle(in.Fh, in.NodeId, false, false)
	if !st.Ok() {
		return st
	}
	in.Fh = fh
	return t.RawFileSystem.Fsync(cancel, in)
}

func (t *takeoverFS) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	fh, st := t.handle(in.Fh, in.NodeId, true, false)
	if !st.Ok() {
		return st
	}
	in.Fh = fh
	return t.RawFileSystem.FsyncDir(cancel, in)
}

func (t *takeoverFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	fh, st := t.handle(in.Fh, in.NodeId, false, false)
	if !st.Ok() {
		return st
	}
	in.Fh = fh
	return t.RawFileSystem.Fallocate(cancel, in)
}

func (t *takeoverFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	fh, st := t.handle(in.Fh, in.NodeId, true, false)
	if !st.Ok() {
		return st
	}
	in.Fh = fh
	return t.RawFileSystem.ReadDir(cancel, in, out)
}

func (t *takeoverFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	fh, st := t.handle(in.Fh, in.NodeId, true, false)
	if !st.Ok() {
		return st
	}
	in.Fh = fh
	st = t.RawFileSystem.ReadDirPlus(cancel, in, out)
	if st.Ok() && t.adopting {
		// Each entry carries the node ID the bridge looked up, known
		// to the kernel once the reply is written.
		_, entries, err := fuse.ParseDirLookupEntries(out.Bytes())
		if err != nil {
			t.fs.Log.Error().Err(err).Msg("takeover: cannot read back a READDIRPLUS answer")
			return fuse.EIO
		}
		for i := range entries {
			t.markKnown(entries[i].NodeId)
		}
	}
	return st
}

func (t *takeoverFS) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	fin, st := t.handle(in.FhIn, in.NodeId, false, false)
	if !st.Ok() {
		return 0, st
	}
	fout, st := t.handle(in.FhOut, in.NodeIdOut, false, false)
	if !st.Ok() {
		return 0, st
	}
	in.FhIn, in.FhOut = fin, fout
	return t.RawFileSystem.CopyFileRange(cancel, in)
}

func (t *takeoverFS) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	fh, st := t.handle(in.Fh, in.NodeId, false, false)
	if !st.Ok() {
		return st
	}
	in.Fh = fh
	return t.RawFileSystem.Ioctl(cancel, in, inbuf, out, outbuf)
}
