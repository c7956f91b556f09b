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
//	Store.names   RWMutex. Shared, before ns, for what changes a file's
//	              names (unlink, rename, link); exclusive across the
//	              commit of a move of a file with several names and a
//	              rename over copies on other tiers, which fsync with ns
//	              free (linkmove.go, rename.go). With ns exclusive (or
//	              alone, exclusive) it guards the rename journal's state.
//	Store.ns      RWMutex. Exclusive for every change of the namespace
//	              (create, mkdir, unlink, rmdir, rename, link, symlink,
//	              mknod) and, in a move, to validate, rename and swap
//	              (then again to unlink the source); shared for lookups,
//	              getattr, readdir, open, setattr and xattrs. It guards
//	              what every Path implementation returns (fs renames its
//	              nodes under it), the sources moves and renames left
//	              (Store.left, commit.go) and the copies several-name moves
//	              have not committed (Store.pending, linkmove.go). A move
//	              copies, fsyncs and closes nothing under it, nor does a
//	              rename over a file on another tier that can be marked;
//	              a directory rename, and a rename over anything else on
//	              another tier, fsync under it (rename.go).
//	File.mu       RWMutex. Shared for I/O on the backing (pread, pwrite,
//	              ftruncate, fsync, fallocate); exclusive to swap the
//	              backing fd (move, spill, reopen for writing) and to
//	              seal or unseal the file (File.sealed: while a move
//	              commits, reads, writes, fallocates and fsyncs wait for
//	              it with no lock held; rlockIO).
//	File.dmu      Mutex for the dirty ranges recorded while a move copies.
//	File.acctMu   Mutex for the file's share of its tier's usage.
//	Store.openMu  Mutex for the table of open files and their ref counts,
//	              File.path and File.unlinked (set with ns held in either
//	              mode: an open records the name it used under ns shared),
//	              and for what getattr remembers of plain files
//	              (Store.plain, plain.go) and the files with no name left
//	              kept for a successor (Store.orphans, orphan.go); a leaf:
//	              nothing is taken while holding it (an unlink's rename
//	              into the orphan directory is made under it). It also
//	              counts a file's passthrough handles (File.pt,
//	              passthrough.go), so that the first is decided against
//	              the same reference count a writer and a move check.
//	Store.inoMu   Mutex for the inode counter; a leaf.
//	ptRegistry.mu Mutex for a supervised mount's passthrough registry
//	              (ptregistry.go), whose slots are written under it; a
//	              leaf, never taken with openMu held.
//	dirCache.mu   Mutex for a tier's open directories (dircache.go); a
//	              leaf.
package tiering
