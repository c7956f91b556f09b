package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tierfs/tierfs/internal/fusedev"
	"github.com/tierfs/tierfs/tiering"
)

// fileHandle is an open file. It has no PassthroughFd (ptHandle, for
// files that cannot move, has) and never answers with ReadResultFd: its
// backing can move.
type fileHandle struct {
	h    *tiering.Handle
	node *Node
}

var (
	_ gofs.FileReader    = (*fileHandle)(nil)
	_ gofs.FileWriter    = (*fileHandle)(nil)
	_ gofs.FileFsyncer   = (*fileHandle)(nil)
	_ gofs.FileFlusher   = (*fileHandle)(nil)
	_ gofs.FileReleaser  = (*fileHandle)(nil)
	_ gofs.FileGetattrer = (*fileHandle)(nil)
	_ gofs.FileSetattrer = (*fileHandle)(nil)
	_ gofs.FileAllocater = (*fileHandle)(nil)
	_ gofs.FileLseeker   = (*fileHandle)(nil)
)

func (f *fileHandle) errno(op string, err error) syscall.Errno {
	return toErrno(f.node.fs.Log, op, err)
}

func (f *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.node.fs.Reads.Add(1)
	n, err := f.h.Read(dest, off)
	if err != nil {
		return nil, f.errno("read", err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	var n int
	var err error
	if p := payloadOf(ctx, data); p != nil {
		n, err = f.h.WritePipe(p.Fd, p.Len, off)
	} else {
		n, err = f.h.Write(data, off)
	}
	if err != nil && n == 0 {
		return 0, f.errno("write", err)
	}
	f.node.fs.drop.wrote(f.node, off, n)
	return uint32(n), 0
}

// payloadOf returns the pipe a WRITE's data waits in when the bridge
// passed none (killprivFS.WritePayload), or nil.
func payloadOf(ctx context.Context, data []byte) *fusedev.Payload {
	if len(data) != 0 {
		return nil
	}
	if c, ok := ctx.(*fuse.Context); ok {
		return fusedev.PayloadOf(c.Cancel)
	}
	return nil
}

func (f *fileHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return f.errno("fsync", f.h.Fsync(flags&1 != 0))
}

// Flush is close(2) of one descriptor: data is already with the backing,
// so there is nothing to report (close errors only for real data loss).
func (f *fileHandle) Flush(ctx context.Context) syscall.Errno { return 0 }

func (f *fileHandle) Release(ctx context.Context) syscall.Errno {
	f.h.Release()
	return 0
}

func (f *fileHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	a, err := f.h.Stat()
	if err != nil {
		return f.errno("fgetattr", err)
	}
	fillAttr(&a, &out.Attr)
	return 0
}

func (f *fileHandle) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.node.Setattr(ctx, f, in, out)
}

func (f *fileHandle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	return f.errno("fallocate", f.h.Allocate(int64(off), int64(size), mode))
}

func (f *fileHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	n, err := f.h.Lseek(int64(off), int(whence))
	if err != nil {
		return 0, f.errno("lseek", err)
	}
	return uint64(n), 0
}
