package fs

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tierfs/tierfs/internal/fusedev"
	"github.com/tierfs/tierfs/internal/iostats"
)

// statsFS counts every request the node bridge answers, by operation:
// how long it took and the error it answered (internal/iostats: atomics,
// no lock, no allocation). It wraps the bridge that both transports call,
// /dev/fuse and io_uring, so that both are counted the same.
type statsFS struct {
	fuse.RawFileSystem
	st *iostats.Requests
}

// The operations counted, in the order of reqNames.
const (
	reqLookup = iota
	reqGetattr
	reqSetattr
	reqMknod
	reqMkdir
	reqUnlink
	reqRmdir
	reqRename
	reqLink
	reqSymlink
	reqReadlink
	reqAccess
	reqGetxattr
	reqListxattr
	reqSetxattr
	reqRemovexattr
	reqCreate
	reqTmpfile
	reqOpen
	reqRead
	reqLseek
	reqGetlk
	reqSetlk
	reqSetlkw
	reqWrite
	reqCopyFileRange
	reqIoctl
	reqFlush
	reqFsync
	reqFallocate
	reqOpendir
	reqReaddir
	reqReaddirplus
	reqFsyncdir
	reqStatfs
	reqStatx
	reqForget
	reqRelease
	reqReleasedir
)

// reqNames name the operations in the metrics (FUSE's opcode names, in
// lower case; WRITE counts both of go-fuse's write calls).
var reqNames = []string{
	"lookup", "getattr", "setattr", "mknod", "mkdir", "unlink", "rmdir",
	"rename", "link", "symlink", "readlink", "access", "getxattr",
	"listxattr", "setxattr", "removexattr", "create", "tmpfile", "open",
	"read", "lseek", "getlk", "setlk", "setlkw", "write", "copy_file_range",
	"ioctl", "flush", "fsync", "fallocate", "opendir", "readdir",
	"readdirplus", "fsyncdir", "statfs", "statx", "forget", "release",
	"releasedir",
}

// newRequestStats makes the counters of a mount's requests.
func newRequestStats() *iostats.Requests { return iostats.NewRequests(reqNames) }

func (s statsFS) done(op int, start time.Time, st fuse.Status) {
	s.st.Done(op, time.Since(start), int32(st))
}

func (s statsFS) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Lookup(cancel, header, name, out)
	s.done(reqLookup, t, st)
	return st
}

func (s statsFS) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.GetAttr(cancel, input, out)
	s.done(reqGetattr, t, st)
	return st
}

func (s statsFS) SetAttr(cancel <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.SetAttr(cancel, input, out)
	s.done(reqSetattr, t, st)
	return st
}

func (s statsFS) Mknod(cancel <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Mknod(cancel, input, name, out)
	s.done(reqMknod, t, st)
	return st
}

func (s statsFS) Mkdir(cancel <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Mkdir(cancel, input, name, out)
	s.done(reqMkdir, t, st)
	return st
}

func (s statsFS) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Unlink(cancel, header, name)
	s.done(reqUnlink, t, st)
	return st
}

func (s statsFS) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Rmdir(cancel, header, name)
	s.done(reqRmdir, t, st)
	return st
}

func (s statsFS) Rename(cancel <-chan struct{}, input *fuse.RenameIn, oldName string, newName string) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Rename(cancel, input, oldName, newName)
	s.done(reqRename, t, st)
	return st
}

func (s statsFS) Link(cancel <-chan struct{}, input *fuse.LinkIn, filename string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Link(cancel, input, filename, out)
	s.done(reqLink, t, st)
	return st
}

func (s statsFS) Symlink(cancel <-chan struct{}, header *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Symlink(cancel, header, pointedTo, linkName, out)
	s.done(reqSymlink, t, st)
	return st
}

func (s statsFS) Readlink(cancel <-chan struct{}, header *fuse.InHeader) ([]byte, fuse.Status) {
	t := time.Now()
	r, st := s.RawFileSystem.Readlink(cancel, header)
	s.done(reqReadlink, t, st)
	return r, st
}

func (s statsFS) Access(cancel <-chan struct{}, input *fuse.AccessIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Access(cancel, input)
	s.done(reqAccess, t, st)
	return st
}

func (s statsFS) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	t := time.Now()
	r, st := s.RawFileSystem.GetXAttr(cancel, header, attr, dest)
	s.done(reqGetxattr, t, st)
	return r, st
}

func (s statsFS) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	t := time.Now()
	r, st := s.RawFileSystem.ListXAttr(cancel, header, dest)
	s.done(reqListxattr, t, st)
	return r, st
}

func (s statsFS) SetXAttr(cancel <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.SetXAttr(cancel, input, attr, data)
	s.done(reqSetxattr, t, st)
	return st
}

func (s statsFS) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.RemoveXAttr(cancel, header, attr)
	s.done(reqRemovexattr, t, st)
	return st
}

func (s statsFS) Create(cancel <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Create(cancel, input, name, out)
	s.done(reqCreate, t, st)
	return st
}

func (s statsFS) Tmpfile(cancel <-chan struct{}, input *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Tmpfile(cancel, input, out)
	s.done(reqTmpfile, t, st)
	return st
}

func (s statsFS) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Open(cancel, input, out)
	s.done(reqOpen, t, st)
	return st
}

func (s statsFS) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t := time.Now()
	r, st := s.RawFileSystem.Read(cancel, input, buf)
	s.done(reqRead, t, st)
	return r, st
}

func (s statsFS) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Lseek(cancel, in, out)
	s.done(reqLseek, t, st)
	return st
}

func (s statsFS) GetLk(cancel <-chan struct{}, input *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.GetLk(cancel, input, out)
	s.done(reqGetlk, t, st)
	return st
}

func (s statsFS) SetLk(cancel <-chan struct{}, input *fuse.LkIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.SetLk(cancel, input)
	s.done(reqSetlk, t, st)
	return st
}

func (s statsFS) SetLkw(cancel <-chan struct{}, input *fuse.LkIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.SetLkw(cancel, input)
	s.done(reqSetlkw, t, st)
	return st
}

func (s statsFS) Write(cancel <-chan struct{}, input *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	t := time.Now()
	r, st := s.RawFileSystem.Write(cancel, input, data)
	s.done(reqWrite, t, st)
	return r, st
}

// WritePayload counts a WRITE whose data is in a pipe, when the file
// system below takes one (killprivFS).
func (s statsFS) WritePayload(in *fuse.WriteIn, p *fusedev.Payload) (uint32, fuse.Status) {
	t := time.Now()
	r, st := s.RawFileSystem.(fusedev.PayloadWriter).WritePayload(in, p)
	s.done(reqWrite, t, st)
	return r, st
}

func (s statsFS) Writev(cancel <-chan struct{}, input *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	t := time.Now()
	r, st := s.RawFileSystem.Writev(cancel, input, data)
	s.done(reqWrite, t, st)
	return r, st
}

func (s statsFS) CopyFileRange(cancel <-chan struct{}, input *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	t := time.Now()
	r, st := s.RawFileSystem.CopyFileRange(cancel, input)
	s.done(reqCopyFileRange, t, st)
	return r, st
}

func (s statsFS) Ioctl(cancel <-chan struct{}, input *fuse.IoctlIn, inbuf []byte, output *fuse.IoctlOut, outbuf []byte) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Ioctl(cancel, input, inbuf, output, outbuf)
	s.done(reqIoctl, t, st)
	return st
}

func (s statsFS) Flush(cancel <-chan struct{}, input *fuse.FlushIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Flush(cancel, input)
	s.done(reqFlush, t, st)
	return st
}

func (s statsFS) Fsync(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Fsync(cancel, input)
	s.done(reqFsync, t, st)
	return st
}

func (s statsFS) Fallocate(cancel <-chan struct{}, input *fuse.FallocateIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Fallocate(cancel, input)
	s.done(reqFallocate, t, st)
	return st
}

func (s statsFS) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.OpenDir(cancel, input, out)
	s.done(reqOpendir, t, st)
	return st
}

func (s statsFS) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.ReadDir(cancel, input, out)
	s.done(reqReaddir, t, st)
	return st
}

func (s statsFS) ReadDirPlus(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.ReadDirPlus(cancel, input, out)
	s.done(reqReaddirplus, t, st)
	return st
}

func (s statsFS) FsyncDir(cancel <-chan struct{}, input *fuse.FsyncIn) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.FsyncDir(cancel, input)
	s.done(reqFsyncdir, t, st)
	return st
}

func (s statsFS) StatFs(cancel <-chan struct{}, input *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.StatFs(cancel, input, out)
	s.done(reqStatfs, t, st)
	return st
}

func (s statsFS) Statx(cancel <-chan struct{}, input *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	t := time.Now()
	st := s.RawFileSystem.Statx(cancel, input, out)
	s.done(reqStatx, t, st)
	return st
}

func (s statsFS) Forget(nodeid, nlookup uint64) {
	t := time.Now()
	s.RawFileSystem.Forget(nodeid, nlookup)
	s.done(reqForget, t, fuse.OK)
}

func (s statsFS) Release(cancel <-chan struct{}, input *fuse.ReleaseIn) {
	t := time.Now()
	s.RawFileSystem.Release(cancel, input)
	s.done(reqRelease, t, fuse.OK)
}

func (s statsFS) ReleaseDir(input *fuse.ReleaseIn) {
	t := time.Now()
	s.RawFileSystem.ReleaseDir(input)
	s.done(reqReleasedir, t, fuse.OK)
}
