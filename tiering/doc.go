// Package tiering owns the namespace of a tierfs mount spread over its tiers:
// which tier holds each file, the backing of every open file (one per inode,
// swappable under its lock), tierfs inode numbers, crash recovery, and
// Move, which relocates a file between tiers while it stays open.
//
// It knows nothing of FUSE: package fs translates kernel requests into calls
// here. Every backing path is reached with *at() system calls on directory
// file descriptors, one component at a time, so no path string ever
// approaches PATH_MAX.
//
// Lock discipline (taken in this order, never the reverse):
//
//	Store.ns      RWMutex. Exclusive for every change of the namespace
//	              (create, mkdir, unlink, rmdir, rename, link, symlink,
//	              mknod) and for the commit step of a move; shared for
//	              lookups, getattr, readdir, open, setattr and xattrs.
//	              It also guards every File.path and Path implementation,
//	              and the rename journal's state (journal.go).
//	File.mu       RWMutex. Shared for I/O on the backing (pread, pwrite,
//	              ftruncate, fsync, fallocate); exclusive to swap the
//	              backing fd (move, spill, reopen for writing).
//	File.dmu      Mutex for the dirty ranges recorded while a move copies.
//	File.acctMu   Mutex for the file's share of its tier's usage.
//	Store.openMu  Mutex for the table of open files and their ref counts,
//	              and for what getattr remembers of plain files
//	              (Store.plain, plain.go); a leaf: nothing is taken while
//	              holding it.
//	Store.inoMu   Mutex for the inode counter; a leaf.
package tiering
