package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/tierfs/tierfs/tiering"
)

// dirHandle is an open directory: a snapshot of the union of its copies,
// re-read on rewind, and fsyncdir on every tier's copy.
type dirHandle struct {
	node    *Node
	attr    tiering.Attr // at open: fstat of a directory removed since answers this
	entries []fuse.DirEntry
	pos     int
}

var (
	_ gofs.FileReaddirenter = (*dirHandle)(nil)
	_ gofs.FileSeekdirer    = (*dirHandle)(nil)
	_ gofs.FileFsyncdirer   = (*dirHandle)(nil)
	_ gofs.FileReleasedirer = (*dirHandle)(nil)
)

func (d *dirHandle) load() syscall.Errno {
	ents, err := d.node.fs.Store.Readdir(d.node)
	if err != nil {
		return d.node.errno("readdir", err)
	}
	d.entries = d.entries[:0]
	for _, e := range ents {
		d.entries = append(d.entries, fuse.DirEntry{Name: e.Name, Mode: e.Mode, Ino: e.Ino})
	}
	d.pos = 0
	return 0
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.pos >= len(d.entries) {
		return nil, 0
	}
	e := d.entries[d.pos]
	d.pos++
	e.Off = uint64(d.pos)
	return &e, 0
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 {
		return d.load()
	}
	if off > uint64(len(d.entries)) {
		return syscall.EINVAL
	}
	d.pos = int(off)
	return 0
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.node.errno("fsyncdir", d.node.fs.Store.Fsyncdir(d.node))
}

func (d *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {}
