package fs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/fusedev"
)

// killprivFS negotiates FUSE_HANDLE_KILLPRIV_V2: the daemon, not the
// kernel, clears the set-user-ID and set-group-ID bits of a file written
// or truncated by a caller without CAP_FSETID, as the VFS does on a local
// filesystem (set-group-ID only with group execute). The kernel then sets
// SB_NOSEC on the mount and stops asking GETXATTR security.capability
// before every write (a round trip per write; see docs/perf.md).
//
// The kernel flags such requests: WRITE_KILL_SUIDGID on a write,
// FATTR_KILL_SUIDGID on a setattr that changes the size, OPEN_KILL_SUIDGID
// on an open or create with O_TRUNC. The rest of the contract is kept by
// the backing filesystem, which the daemon drives as root: its pwrite and
// ftruncate drop security.capability, and its fchown clears set-user-ID
// (and set-group-ID with group execute), for root too.
type killprivFS struct {
	fuse.RawFileSystem
}

// killSuidgid clears S_ISUID, and S_ISGID when S_IXGRP is set, of node
// h.NodeId through handle fh (0: any open one, else by name).
func (k killprivFS) killSuidgid(cancel <-chan struct{}, h *fuse.InHeader, fh uint64) fuse.Status {
	gin := fuse.GetAttrIn{InHeader: *h, Fh_: fh}
	if fh != 0 {
		gin.Flags_ = fuse.FUSE_GETATTR_FH
	}
	var a fuse.AttrOut
	if st := k.RawFileSystem.GetAttr(cancel, &gin, &a); !st.Ok() {
		return st
	}
	mode, ok := killedMode(a.Mode)
	if !ok {
		return fuse.OK
	}
	sin := fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: *h, Valid: fuse.FATTR_MODE, Mode: mode}}
	if fh != 0 {
		sin.Valid |= fuse.FATTR_FH
		sin.Fh = fh
	}
	return k.RawFileSystem.SetAttr(cancel, &sin, &a)
}

// killedMode is mode without the bits a write by an unprivileged caller
// clears; ok is false when nothing changes.
func killedMode(mode uint32) (uint32, bool) {
	if mode&unix.S_IFMT != unix.S_IFREG {
		return mode, false
	}
	kill := uint32(unix.S_ISUID)
	if mode&unix.S_IXGRP != 0 {
		kill |= unix.S_ISGID
	}
	if mode&kill == 0 {
		return mode, false
	}
	return mode &^ kill & 0o7777, true
}

func (k killprivFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := k.killSuidgid(cancel, &in.InHeader, in.Fh); !st.Ok() {
			return 0, st
		}
	}
	return k.RawFileSystem.Write(cancel, in, data)
}

// WritePayload is Write of data waiting in a pipe: go-fuse's bridge
// calls the file handle's Write with no data and the payload's channel,
// by which the handle finds the pipe (fileHandle.Write).
func (k killprivFS) WritePayload(in *fuse.WriteIn, p *fusedev.Payload) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := k.killSuidgid(p.Cancel, &in.InHeader, in.Fh); !st.Ok() {
			return 0, st
		}
	}
	return k.RawFileSystem.Write(p.Cancel, in, nil)
}

func (k killprivFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if st := k.killSuidgid(cancel, &in.InHeader, in.Fh); !st.Ok() {
			return 0, st
		}
	}
	return k.RawFileSystem.Writev(cancel, in, data)
}

func (k killprivFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 && in.Valid&fuse.FATTR_MODE == 0 {
		// Fold the kill into this request: one more attribute to set.
		gin := fuse.GetAttrIn{InHeader: in.InHeader}
		if fh, ok := in.GetFh(); ok {
			gin.Flags_, gin.Fh_ = fuse.FUSE_GETATTR_FH, fh
		}
		var a fuse.AttrOut
		if st := k.RawFileSystem.GetAttr(cancel, &gin, &a); !st.Ok() {
			return st
		}
		if mode, ok := killedMode(a.Mode); ok {
			in.Valid |= fuse.FATTR_MODE
			in.Mode = mode
		}
	}
	return k.RawFileSystem.SetAttr(cancel, in, out)
}

func (k killprivFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := k.RawFileSystem.Open(cancel, in, out)
	if st.Ok() && in.Mode&fuse.OPEN_KILL_SUIDGID != 0 {
		if kst := k.killSuidgid(cancel, &in.InHeader, out.Fh); !kst.Ok() {
			k.RawFileSystem.Release(cancel, &fuse.ReleaseIn{InHeader: in.InHeader, Fh: out.Fh, Flags: in.Flags})
			return kst
		}
	}
	return st
}

func (k killprivFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := k.RawFileSystem.Create(cancel, in, name, out)
	if st.Ok() && in.OpenFlags&fuse.OPEN_KILL_SUIDGID != 0 {
		h := in.InHeader
		h.NodeId = out.NodeId
		// The file may have existed (create without O_EXCL, O_TRUNC).
		if kst := k.killSuidgid(cancel, &h, out.Fh); !kst.Ok() {
			return kst
		}
	}
	return st
}
