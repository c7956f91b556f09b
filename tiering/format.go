package tiering

// What a tier directory holds, and how tierfs makes it its own:
//
//	PATH/            root:root 0700: nobody but the daemon reaches what is below
//	PATH/.tierfs/    tierfs's state: lock, format, ino, staging, journal, pool
//	PATH/data/       the tier's copy of the mount's root (its owner and mode)
//
// Tiers written by tierfs before this layout kept the mount's root in PATH
// itself and their attributes under user.tierfs.*; the first mount moves
// them (layOut, and the scan for the attributes) and records it in
// .tierfs/format, so that an existing deployment upgrades in place.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

const (
	lockFile   = "lock"
	formatFile = "format"
	// newRootDir is where the mount's root is assembled inside metaDir
	// before it is renamed to dataDir: a tier holding an entry named
	// "data" in the old layout keeps it.
	newRootDir = "newroot"
	// xattrRootTimes keeps the old root's times on newRootDir while
	// entries are moved into it (which changes its mtime).
	xattrRootTimes = "trusted.tierfs.roottimes"
)

// Formats of a tier directory (.tierfs/format; absent: formatOld).
const (
	formatOld     = 1 // the mount's root is PATH; attributes under user.tierfs.*
	formatData    = 2 // the mount's root is PATH/data; attributes not yet taken over
	formatTrusted = 3 // attributes under trusted.tierfs.*
)

// checkDistinct refuses a tier directory that another tier already is
// (the same directory through a bind mount or a second name).
func checkDistinct(t *Tier, prev []*Tier) error {
	for _, p := range prev {
		if p.dev == t.dev && p.ino == t.ino {
			return fmt.Errorf("%s is the same directory as tier %s (%s): give each tier its own directory", t.Path, p.Name, p.Path)
		}
	}
	return nil
}

// takeLock makes the daemon the tier's only user: a second daemon on the
// same tier would hand out the same inode numbers and move files under the
// first one's open handles. The lock goes with the process (flock), so a
// killed daemon leaves none behind.
func (t *Tier) takeLock(holder string) error {
	// Held read-only: a descriptor open for writing would keep the tier's
	// filesystem from being remounted read-only.
	fd, err := unix.Openat(t.meta, lockFile, unix.O_RDONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", filepath.Join(t.Path, metaDir, lockFile), err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		who := readHolder(fd)
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("%s is in use by another tierfs daemon (%s): unmount that mount first, or give this one other tier directories", t.Path, who)
		}
		return fmt.Errorf("lock %s: %w", filepath.Join(t.Path, metaDir, lockFile), err)
	}
	t.lock = fd
	if holder == "" {
		holder = "pid " + strconv.Itoa(os.Getpid())
	}
	if w, err := unix.Openat(t.meta, lockFile, unix.O_WRONLY|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
		_, _ = unix.Write(w, []byte(holder+"\n"))
		unix.Close(w)
	}
	return nil
}

func readHolder(fd int) string {
	b := make([]byte, 512)
	n, _ := unix.Pread(fd, b, 0)
	if s := strings.TrimSpace(string(b[:max(n, 0)])); s != "" {
		return s
	}
	return "holder unknown"
}

// LockHolder says which daemon holds the tier directory at path, without
// changing anything: "" when none does (or tierfs never used it).
func LockHolder(path string) string {
	fd, err := unix.Open(filepath.Join(path, metaDir, lockFile), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); err == nil {
		unix.Flock(fd, unix.LOCK_UN)
		return ""
	}
	return readHolder(fd)
}

// probeXattrs refuses a filesystem that cannot keep tierfs's attributes:
// a file moved there would lose its inode number at the next mount.
func (t *Tier) probeXattrs() error {
	const probe = trustedPrefix + "probe"
	err := unix.Fsetxattr(t.lock, probe, []byte{1}, 0)
	if err == nil {
		err = unix.Fremovexattr(t.lock, probe)
	}
	if err != nil {
		return noXattrs(t.Path, t.base, err)
	}
	return nil
}

// noXattrs explains a failed probe of trusted xattrs on the tier at path.
func noXattrs(path string, fd int, err error) error {
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) {
		return fmt.Errorf("%s is on a filesystem without trusted extended attributes (%s), where tierfs keeps inode numbers and move markers: put the tier on ext4, xfs, btrfs or tmpfs", path, fsType(fd))
	}
	return fmt.Errorf("%s: extended attributes: %w", path, err)
}

// fsType names the filesystem of fd for an error message.
func fsType(fd int) string {
	var st unix.Statfs_t
	if unix.Fstatfs(fd, &st) != nil {
		return "unknown type"
	}
	switch uint32(st.Type) {
	case 0x858458f6:
		return "ramfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case unix.FUSE_SUPER_MAGIC:
		return "fuse"
	case unix.PROC_SUPER_MAGIC:
		return "proc"
	}
	return fmt.Sprintf("filesystem type %#x", st.Type)
}

func readFormat(meta int) (int, error) {
	fd, err := unix.Openat(meta, formatFile, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return formatOld, nil
	}
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	b := make([]byte, 32)
	n, err := unix.Read(fd, b)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || v < formatData {
		return 0, fmt.Errorf("%s/%s: bad format %q", metaDir, formatFile, strings.TrimSpace(string(b[:n])))
	}
	if v > formatTrusted {
		return 0, fmt.Errorf("%s/%s: format %d is newer than this tierfs knows (%d): use the tierfs that wrote it", metaDir, formatFile, v, formatTrusted)
	}
	return v, nil
}

// writeFormat records the tier's format durably (write, fsync, rename).
func writeFormat(meta, v int) error {
	tmp := formatFile + ".tmp"
	fd, err := unix.Openat(meta, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	_, err = unix.Write(fd, []byte(strconv.Itoa(v)+"\n"))
	if err == nil {
		err = unix.Fsync(fd)
	}
	unix.Close(fd)
	if err == nil {
		err = unix.Renameat(meta, tmp, meta, formatFile)
	}
	if err == nil {
		err = fsyncDirAt(meta)
	}
	return err
}

// layOut brings the tier to the current layout and checks that it is
// root's alone. Every step can be cut by a crash and is taken again at the
// next mount: the mount's root is assembled in .tierfs/newroot (with the
// old root's owner, mode, times and xattrs), the tier directory is made
// root's, the old root's entries are renamed into newroot, the format is
// recorded, and newroot is renamed to data.
func (t *Tier) layOut(log zerolog.Logger) error {
	f, err := readFormat(t.meta)
	if err != nil {
		return err
	}
	t.legacy = f < formatTrusted
	if f < formatData {
		if err := t.moveIntoData(log); err != nil {
			return fmt.Errorf("laying out %s: %w", t.Path, err)
		}
	} else if err := checkOwned(t.Path, t.base); err != nil {
		return err
	}
	err = unix.Renameat2(t.meta, newRootDir, t.base, dataDir, unix.RENAME_NOREPLACE)
	if err == nil {
		if err = fsyncDirAt(t.base); err == nil {
			err = fsyncDirAt(t.meta)
		}
	} else if errors.Is(err, unix.ENOENT) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("laying out %s: %w", t.Path, err)
	}
	return nil
}

func (t *Tier) moveIntoData(log zerolog.Logger) error {
	nr, err := t.newRoot()
	if err != nil {
		return err
	}
	defer unix.Close(nr)
	var st unix.Stat_t
	if err := unix.Fstat(t.base, &st); err != nil {
		return err
	}
	if st.Uid != 0 || st.Gid != 0 || st.Mode&0o7777 != 0o700 {
		if err := unix.Fchown(t.base, 0, 0); err != nil {
			return err
		}
		if err := unix.Fchmod(t.base, 0o700); err != nil {
			return err
		}
		log.Info().Str("tier", t.Name).Str("path", t.Path).Str("was", fmt.Sprintf("%04o %d:%d", st.Mode&0o7777, st.Uid, st.Gid)).
			Msg("tier directory made root's alone (0700); the mount's root keeps its owner and mode in data/")
	}
	names, err := readNames(t.base)
	if err != nil {
		return err
	}
	moved := 0
	for _, n := range names {
		if n == metaDir {
			continue
		}
		if err := unix.Renameat2(t.base, n, nr, n, unix.RENAME_NOREPLACE); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("move %s into the mount's root: %w", n, err)
		}
		moved++
	}
	if moved > 0 {
		log.Info().Str("tier", t.Name).Int("entries", moved).Msg("moved the tier's entries into data/ (first mount of this tierfs version)")
	}
	if err := restoreRootTimes(nr); err != nil {
		return err
	}
	if err := fsyncDirAt(nr); err != nil {
		return err
	}
	if err := fsyncDirAt(t.base); err != nil {
		return err
	}
	return writeFormat(t.meta, formatData)
}

// newRoot opens .tierfs/newroot, making it first (as newroot.tmp, then
// renamed, so that it never exists without the old root's attributes).
func (t *Tier) newRoot() (int, error) {
	open := func() (int, error) {
		return unix.Openat(t.meta, newRootDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if fd, err := open(); !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	tmp := newRootDir + ".tmp"
	if err := unix.Unlinkat(t.meta, tmp, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return -1, err
	}
	if err := unix.Mkdirat(t.meta, tmp, 0o700); err != nil {
		return -1, err
	}
	fd, err := unix.Openat(t.meta, tmp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	err = unix.Fstat(t.base, &st)
	if err == nil {
		err = copyXattrs(fd, t.base, func(name string) bool { return !strings.HasPrefix(name, trustedPrefix) })
	}
	if err == nil {
		err = saveRootTimes(fd, &st)
	}
	if err == nil {
		err = unix.Fchown(fd, int(st.Uid), int(st.Gid))
	}
	if err == nil {
		err = unix.Fchmod(fd, st.Mode&0o7777)
	}
	if err == nil {
		err = unix.Fsync(fd)
	}
	unix.Close(fd)
	if err == nil {
		err = unix.Renameat(t.meta, tmp, t.meta, newRootDir)
	}
	if err == nil {
		err = fsyncDirAt(t.meta)
	}
	if err != nil {
		return -1, err
	}
	return open()
}

func saveRootTimes(fd int, st *unix.Stat_t) error {
	v := fmt.Sprintf("%d.%09d %d.%09d", st.Atim.Sec, st.Atim.Nsec, st.Mtim.Sec, st.Mtim.Nsec)
	return unix.Fsetxattr(fd, xattrRootTimes, []byte(v), 0)
}

// restoreRootTimes gives newroot the old root's times once the entries
// are in (the renames changed its mtime).
func restoreRootTimes(fd int) error {
	b := make([]byte, 64)
	n, err := unix.Fgetxattr(fd, xattrRootTimes, b)
	if errors.Is(err, unix.ENODATA) {
		return nil
	}
	if err != nil {
		return err
	}
	var as, an, ms, mn int64
	if _, err := fmt.Sscanf(string(b[:n]), "%d.%d %d.%d", &as, &an, &ms, &mn); err != nil {
		return fmt.Errorf("%s: %q: %w", xattrRootTimes, b[:n], err)
	}
	if err := setTimesFd(fd, []unix.Timespec{{Sec: as, Nsec: an}, {Sec: ms, Nsec: mn}}); err != nil {
		return err
	}
	return unix.Fremovexattr(fd, xattrRootTimes)
}

// checkOwned refuses a tier directory that someone other than root owns
// or can enter: what is below it is every user's data, reachable without
// the mount's permission checks.
func checkOwned(path string, fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Uid != 0 || st.Mode&0o077 != 0 {
		return fmt.Errorf("%s is open to other users (owner uid %d, mode %04o): tierfs's tier directories must be root's alone; run: chown root: %s && chmod 0700 %s",
			path, st.Uid, st.Mode&0o7777, path, path)
	}
	return nil
}

// checkAncestors refuses a tier directory whose parents anyone could
// rename it out of (and put something else in its place): a parent
// writable by group or others must be sticky and root's. A parent that
// another user owns is that user's to trust, so it is only reported
// (owned, for a warning).
func checkAncestors(path string) (owned string, err error) {
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", err
	}
	for d := filepath.Dir(p); ; d = filepath.Dir(d) {
		var st unix.Stat_t
		if err := unix.Lstat(d, &st); err != nil {
			return "", err
		}
		if st.Mode&0o022 != 0 && (st.Mode&unix.S_ISVTX == 0 || st.Uid != 0) {
			return "", fmt.Errorf("%s lies in %s, which other users can change (owner uid %d, mode %04o): a tier directory's parents must not be writable by others",
				path, d, st.Uid, st.Mode&0o7777)
		}
		if st.Uid != 0 && owned == "" {
			owned = fmt.Sprintf("%s lies in %s, owned by uid %d, who can move it away", path, d, st.Uid)
		}
		if d == "/" || d == "." {
			return owned, nil
		}
	}
}

// copyXattrs copies the extended attributes of src that keep says to dst
// (both fds of files or directories).
func copyXattrs(dst, src int, keep func(string) bool) error {
	list, err := readXattr(func(b []byte) (int, error) { return unix.Flistxattr(src, b) })
	if errors.Is(err, unix.ENOTSUP) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, name := range strings.Split(string(list), "\x00") {
		if name == "" || !keep(name) {
			continue
		}
		v, err := readXattr(func(b []byte) (int, error) { return unix.Fgetxattr(src, name, b) })
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("copy xattr %s: %w", name, err)
		}
		if err := unix.Fsetxattr(dst, name, v, 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("copy xattr %s: %w", name, err)
		}
	}
	return nil
}

// takeOverLegacy moves tierfs's attributes of the object at dirfd/name
// from their old user.tierfs.* names to the trusted ones: the new one is
// set before the old one goes, so a crash in between only repeats it.
func takeOverLegacy(dirfd int, name string, st *unix.Stat_t) error {
	fd, err := openPathAt(dirfd, name, st)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return takeOverLegacyFd(fd)
}

func takeOverLegacyFd(fd int) error {
	p := fdPath(fd)
	b := make([]byte, 256)
	for old, cur := range legacyXattrs {
		n, err := unix.Getxattr(p, old, b)
		if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", old, err)
		}
		if _, err := unix.Getxattr(p, cur, nil); errors.Is(err, unix.ENODATA) {
			if err := unix.Setxattr(p, cur, b[:n], 0); err != nil {
				return fmt.Errorf("set %s: %w", cur, err)
			}
		}
		if err := unix.Removexattr(p, old); err != nil && !errors.Is(err, unix.ENODATA) {
			return fmt.Errorf("remove %s: %w", old, err)
		}
	}
	return nil
}

// openPathAt opens dirfd/name without following it (O_PATH) and checks
// that it is still the object st describes: a name swapped since it was
// looked up (only possible behind tierfs's back) is ENOENT, never acted on.
func openPathAt(dirfd int, name string, st *unix.Stat_t) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if st != nil && (now.Dev != st.Dev || now.Ino != st.Ino) {
		unix.Close(fd)
		return -1, unix.ENOENT
	}
	return fd, nil
}

// fdPath names the object fd is open on, for the calls that have no fd
// form for O_PATH descriptors (xattrs, chmod before fchmodat2): the
// kernel resolves it to that very object, whatever its name is now.
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
