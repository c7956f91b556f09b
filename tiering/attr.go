package tiering

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// SetAttr lists the attributes to change; nil fields stay.
type SetAttr struct {
	Mode         *uint32
	UID, GID     *uint32
	Size         *int64
	Atime, Mtime *unix.Timespec // Nsec may be unix.UTIME_NOW
}

func (in *SetAttr) times() []unix.Timespec {
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if in.Atime != nil {
		ts[0] = *in.Atime
	}
	if in.Mtime != nil {
		ts[1] = *in.Mtime
	}
	return ts
}

func ownerArgs(in *SetAttr) (int, int) {
	uid, gid := -1, -1
	if in.UID != nil {
		uid = int(*in.UID)
	}
	if in.GID != nil {
		gid = int(*in.GID)
	}
	return uid, gid
}

// SetattrHandle changes attributes through an open handle.
func (h *Handle) Setattr(in SetAttr) (Attr, error) {
	f := h.f
	f.mu.RLock()
	err := f.setattrFd(&in)
	f.mu.RUnlock()
	if err != nil {
		return Attr{}, err
	}
	return h.Stat()
}

func (f *File) setattrFd(in *SetAttr) error {
	defer f.markMetaDirty()
	if in.Size != nil {
		if err := f.truncateLocked(*in.Size); err != nil {
			return err
		}
	}
	if in.Mode != nil {
		if err := unix.Fchmod(f.fd, *in.Mode&0o7777); err != nil {
			return err
		}
	}
	if in.UID != nil || in.GID != nil {
		uid, gid := ownerArgs(in)
		if err := unix.Fchown(f.fd, uid, gid); err != nil {
			return err
		}
	}
	if in.Atime != nil || in.Mtime != nil {
		if err := setTimesFd(f.fd, in.times()); err != nil {
			return err
		}
	}
	return nil
}

// Setattr changes attributes by name; a directory's copies on every tier
// change together.
func (s *Store) Setattr(p Path, in SetAttr) (Attr, error) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	ls, err := s.resolve(p)
	if err != nil {
		return Attr{}, err
	}
	defer ls.close()
	if ls[0].st.Mode&unix.S_IFMT == unix.S_IFREG {
		a, err := s.attrOf(&ls[0])
		if err != nil {
			return Attr{}, err
		}
		h, err := s.openLoc(&ls[0], a.Ino, p, unix.O_RDWR)
		if err == nil {
			defer h.Release()
			return h.Setattr(in)
		}
		if in.Size != nil {
			return Attr{}, err
		}
	}
	if in.Size != nil {
		return Attr{}, unix.EISDIR
	}
	for i := range ls {
		if err := setattrAt(&ls[i], &in); err != nil {
			return Attr{}, err
		}
		_ = unix.Fstatat(ls[i].dirfd, ls[i].name, &ls[i].st, unix.AT_SYMLINK_NOFOLLOW)
	}
	return s.attrOf(&ls[0])
}

// setattrAt changes a directory, symlink or special file by name. It acts
// on the object it opened without following it and found to be the one
// looked up, never on whatever the name leads to by then: a chmod that
// followed a symlink swapped in meanwhile would change any file on the host.
func setattrAt(l *loc, in *SetAttr) error {
	fd, err := openPathAt(l.dirfd, l.name, &l.st)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	isLink := l.st.Mode&unix.S_IFMT == unix.S_IFLNK
	if in.Mode != nil && !isLink {
		if err := unix.Fchmodat(fd, "", *in.Mode&0o7777, unix.AT_EMPTY_PATH); err != nil {
			return err
		}
	}
	if in.UID != nil || in.GID != nil {
		uid, gid := ownerArgs(in)
		if err := unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
			return err
		}
	}
	if in.Atime != nil || in.Mtime != nil {
		if err := unix.UtimesNanoAt(fd, "", in.times(), unix.AT_EMPTY_PATH); err != nil {
			return err
		}
	}
	return nil
}

// onObject runs fn with a path that names the object at l itself (see
// openPathAt), for the calls that take no O_PATH descriptor.
func onObject(l *loc, fn func(path string) error) error {
	fd, err := openPathAt(l.dirfd, l.name, &l.st)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return fn(fdPath(fd))
}

// reserved names are tierfs's own: never read, set or listed through the
// mount.
func reserved(name string) bool {
	return strings.HasPrefix(name, xattrPrefix) || strings.HasPrefix(name, trustedPrefix)
}

// notForwarded is the error for an attribute the mount does not pass to
// the backing: tierfs's own (reservedErr: ENODATA to a read, EPERM to a
// change) and POSIX ACLs (EOPNOTSUPP); nil for any other.
func notForwarded(name string, reservedErr error) error {
	switch {
	case reserved(name):
		return reservedErr
	case posixACL(name):
		return unix.EOPNOTSUPP
	}
	return nil
}

// posixACL names the attributes that hold POSIX ACLs. The mount does not
// enforce ACLs (the kernel checks the mode bits), so it does not store
// them either, as a filesystem mounted noacl: an ACL that is kept but not
// enforced would promise what it does not do.
func posixACL(name string) bool {
	return name == "system.posix_acl_access" || name == "system.posix_acl_default"
}

// Getxattr reads an extended attribute; XattrTier names the file's tier
// (for a directory, the tiers that hold a copy, comma separated).
func (s *Store) Getxattr(p Path, name string, dest []byte) (int, error) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	ls, err := s.resolve(p)
	if err != nil {
		return 0, err
	}
	defer ls.close()
	if name == XattrTier {
		var names []string
		for i := range ls {
			names = append(names, ls[i].tier.Name)
		}
		if !isDir(&ls[0].st) {
			names = names[:1]
		}
		v := strings.Join(names, ",")
		if len(dest) == 0 {
			return len(v), nil
		}
		if len(dest) < len(v) {
			return 0, unix.ERANGE
		}
		return copy(dest, v), nil
	}
	if err := notForwarded(name, unix.ENODATA); err != nil {
		return 0, err
	}
	var n int
	err = onObject(&ls[0], func(p string) (err error) {
		n, err = unix.Getxattr(p, name, dest)
		return err
	})
	return n, err
}

// GetxattrOpen answers Getxattr for inode ino from its open backing, if
// it is open: no path walk. The kernel asks for security.capability before
// every write (FUSE clears SB_NOSEC), so this is on the write path. ok is
// false when ino is not open (or was released meanwhile): ask Getxattr.
// The fd is read under the file's read lock, so a move that swapped the
// backing is seen at once.
func (s *Store) GetxattrOpen(ino uint64, name string, dest []byte) (n int, ok bool, err error) {
	s.openMu.Lock()
	f := s.open[ino]
	s.openMu.Unlock()
	if f == nil {
		return 0, false, nil
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.fd < 0 {
		return 0, false, nil
	}
	if name == XattrTier {
		return xattrValue(f.tier.Name, dest)
	}
	if err := notForwarded(name, unix.ENODATA); err != nil {
		return 0, true, err
	}
	n, err = unix.Fgetxattr(f.fd, name, dest)
	return n, true, err
}

func xattrValue(v string, dest []byte) (int, bool, error) {
	if len(dest) == 0 {
		return len(v), true, nil
	}
	if len(dest) < len(v) {
		return 0, true, unix.ERANGE
	}
	return copy(dest, v), true, nil
}

// Listxattr lists the file's own extended attributes (none of tierfs's).
func (s *Store) Listxattr(p Path, dest []byte) (int, error) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	ls, err := s.resolve(p)
	if err != nil {
		return 0, err
	}
	defer ls.close()
	var buf []byte
	err = onObject(&ls[0], func(pp string) error {
		buf, err = readXattr(func(b []byte) (int, error) { return unix.Listxattr(pp, b) })
		return err
	})
	if err != nil {
		return 0, err
	}
	var out []byte
	for _, a := range strings.Split(string(buf), "\x00") {
		if a == "" || reserved(a) || posixACL(a) {
			continue
		}
		out = append(out, a...)
		out = append(out, 0)
	}
	if len(dest) == 0 {
		return len(out), nil
	}
	if len(dest) < len(out) {
		return 0, unix.ERANGE
	}
	return copy(dest, out), nil
}

// xattrKV is one extended attribute.
type xattrKV struct {
	name  string
	value []byte
}

// ownXattrs reads the extended attributes of the object at path, but
// tierfs's own.
func ownXattrs(path string) ([]xattrKV, error) {
	list, err := readXattr(func(b []byte) (int, error) { return unix.Listxattr(path, b) })
	if err != nil {
		return nil, err
	}
	var out []xattrKV
	for _, name := range strings.Split(string(list), "\x00") {
		if name == "" || reserved(name) {
			continue
		}
		v, err := readXattr(func(b []byte) (int, error) { return unix.Getxattr(path, name, b) })
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("xattr %s: %w", name, err)
		}
		out = append(out, xattrKV{name, v})
	}
	return out, nil
}

// readXattr reads an extended attribute's value, or a list of names, with
// read (a nil buffer asks the size). It asks again when what it reads grew
// between the size and the read (ERANGE): a tier's file changes its
// attributes while a move copies them, and one left out or a move failed
// for it would show.
func readXattr(read func([]byte) (int, error)) ([]byte, error) {
	for try := 0; ; try++ {
		sz, err := read(nil)
		if err != nil || sz == 0 {
			return nil, err
		}
		b := make([]byte, sz)
		n, err := read(b)
		if errors.Is(err, unix.ERANGE) && try < 8 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return b[:n], nil
	}
}

// Setxattr sets an extended attribute, on every copy of a directory. The
// copy the mount shows judges XATTR_CREATE and XATTR_REPLACE; the others
// take the value whatever they had.
func (s *Store) Setxattr(p Path, name string, data []byte, flags int) error {
	if err := notForwarded(name, unix.EPERM); err != nil {
		return err
	}
	first := true
	return s.eachCopy(p, func(l *loc) error {
		f := flags
		if !first {
			f &^= unix.XATTR_CREATE | unix.XATTR_REPLACE
		}
		first = false
		defer s.xattrChanged(l)
		return onObject(l, func(pp string) error { return unix.Setxattr(pp, name, data, f) })
	})
}

// Removexattr removes an extended attribute from every copy: ENODATA
// only when none had it (a copy made before copies took their
// directory's attributes may lack it).
func (s *Store) Removexattr(p Path, name string) error {
	if err := notForwarded(name, unix.EPERM); err != nil {
		return err
	}
	removed := false
	err := s.eachCopy(p, func(l *loc) error {
		defer s.xattrChanged(l)
		err := onObject(l, func(pp string) error { return unix.Removexattr(pp, name) })
		if errors.Is(err, unix.ENODATA) {
			return nil
		}
		if err == nil {
			removed = true
		}
		return err
	})
	if err == nil && !removed {
		return unix.ENODATA
	}
	return err
}

// xattrChanged tells the open file at l, if any, that its xattrs may have
// changed: a move sealed meanwhile must copy them again.
func (s *Store) xattrChanged(l *loc) {
	if l.st.Mode&unix.S_IFMT != unix.S_IFREG {
		return
	}
	ino, err := getIno(l.dirfd, l.name)
	if err != nil {
		return
	}
	s.openMu.Lock()
	f := s.open[ino]
	s.openMu.Unlock()
	if f != nil {
		f.markMetaDirty()
	}
}

func (s *Store) eachCopy(p Path, fn func(*loc) error) error {
	s.ns.RLock()
	defer s.ns.RUnlock()
	c, err := s.comps(p)
	if err != nil {
		return err
	}
	ls, err := s.locatePath(c)
	if err != nil {
		return err
	}
	defer ls.close()
	if !isDir(&ls[0].st) {
		ls = ls[:1]
	}
	for i := range ls {
		if err := fn(&ls[i]); err != nil {
			return err
		}
	}
	return nil
}

// StatFS is the sum of the tiers.
type StatFS struct {
	Bsize                 uint32
	Blocks, Bfree, Bavail uint64
	Files, Ffree          uint64
	NameLen               uint32
}

// Statfs reports the tiers' capacity and free space added up. Tiers on
// one filesystem (by st_dev: two directories of one disk, or a bind
// mount) count its size, free space and inodes once; their capacities
// still cap what they add.
func (s *Store) Statfs() (StatFS, error) {
	const bs = 4096
	out := StatFS{Bsize: bs, NameLen: 255}
	type filesystem struct{ size, avail, capacity, free int64 }
	byDev := map[uint64]*filesystem{}
	var order []*filesystem
	for _, t := range s.tiers {
		var st unix.Statfs_t
		if err := unix.Fstatfs(t.root, &st); err != nil {
			return out, err
		}
		var sb unix.Stat_t
		if err := unix.Fstat(t.root, &sb); err != nil {
			return out, err
		}
		fs, seen := byDev[sb.Dev]
		if !seen {
			fs = &filesystem{size: int64(st.Blocks) * st.Bsize, avail: int64(st.Bavail) * st.Bsize}
			byDev[sb.Dev] = fs
			order = append(order, fs)
			out.Files += st.Files
			out.Ffree += st.Ffree
		}
		fs.capacity += t.Capacity()
		fs.free += t.Free()
		// A pmem tier's free pool slots are room for segments (Free
		// counts them) though the filesystem sees them used.
		fs.avail += t.poolFree()
	}
	for _, fs := range order {
		out.Blocks += uint64(min(fs.capacity, fs.size)) / bs
		free := uint64(max(min(fs.free, fs.avail), 0)) / bs
		out.Bfree += free
		out.Bavail += free
	}
	return out, nil
}

// Fsyncdir makes a directory durable on every tier that has a copy.
func (s *Store) Fsyncdir(p Path) error {
	s.ns.RLock()
	defer s.ns.RUnlock()
	c, err := s.comps(p)
	if err != nil {
		return err
	}
	found := false
	for _, t := range s.tiers {
		fd, err := t.walk(c, nil)
		if err != nil {
			continue
		}
		found = true
		err = fsyncDirAt(fd)
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	if !found {
		return unix.ENOENT
	}
	return nil
}

// setTimesFd is futimens(2): utimensat on the fd's /proc link.
func setTimesFd(fd int, ts []unix.Timespec) error {
	return unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), ts, 0)
}
