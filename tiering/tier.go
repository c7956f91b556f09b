package tiering

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"

	"github.com/tierfs/tierfs/pmem"
	"golang.org/x/sys/unix"
)

// metaDir is the directory at the root of every tier that holds tierfs's own
// state; dataDir, beside it, is the tier's copy of the mount's root. The
// tier directory itself is root's alone (0700), so that nothing done to
// the mount's root (a chown for the broker) opens the tier to others.
const (
	metaDir = ".tierfs"
	dataDir = "data"
)

// Names of the extended attributes tierfs keeps on backing files. They are
// in the trusted namespace, which only CAP_SYS_ADMIN can write: a user who
// reaches a backing file can never forge an inode number or a marker.
const (
	xattrIno        = "trusted.tierfs.ino"        // 8 bytes, little endian: the tierfs inode number
	xattrSuperseded = "trusted.tierfs.superseded" // on the losing copy while a move or rename-over commits: the winning tier's name
	// XattrTier is the virtual attribute that names a file's tier.
	XattrTier = "user.tierfs.tier"
	// xattrPrefix and trustedPrefix are reserved: never forwarded to or
	// from the backing through the mount.
	xattrPrefix   = "user.tierfs."
	trustedPrefix = "trusted.tierfs."
)

// legacyXattrs are the names tierfs kept its attributes under before they
// moved to the trusted namespace, taken over once at the first mount
// (format.go).
var legacyXattrs = map[string]string{
	"user.tierfs.ino":        xattrIno,
	"user.tierfs.superseded": xattrSuperseded,
	"user.tierfs.size":       pmem.SizeXattr,
}

// Tier is one backing directory.
type Tier struct {
	Index    int
	Name     string
	Type     string
	Path     string
	capacity int64 // configured cap; 0 = backing filesystem size

	base int // O_DIRECTORY fd of Path, the tier directory
	root int // O_DIRECTORY fd of Path/data, the tier's copy of the mount's root
	meta int // O_DIRECTORY fd of Path/.tierfs
	// orphans is the O_DIRECTORY fd of Path/.tierfs/orphans: the open
	// files whose last name went (orphan.go).
	orphans int
	lock    int // Path/.tierfs/lock, flock'd for as long as the tier is open

	dev, ino uint64 // of the tier directory: the same directory twice is refused

	dirs dirCache // directories under root kept open (dircache.go)

	// legacy: the tier still has attributes under their old user.tierfs.
	// names, taken over by the scan at mount (format.go).
	legacy bool

	used  atomic.Int64 // bytes allocated by files tierfs holds here
	files atomic.Int64

	// What the mount read and wrote here (metrics): atomics, on the
	// request path.
	reads, readBytes, writtenBytes atomic.Int64

	// pool holds free preallocated segments on a pmem tier (pool.go);
	// nil elsewhere.
	pool    *pmem.Pool
	poolCfg pmem.Config
	minFree int64
	// kick wakes the pool's retargeter (pool.go); nil without a pool.
	kick chan struct{}
}

// openTier opens, locks and (at the first mount) lays out a tier: nothing
// in it is read or changed before its lock is held.
func openTier(i int, c TierConfig, o *Options, prev []*Tier) (*Tier, error) {
	t := &Tier{Index: i, Name: c.Name, Type: c.Type, Path: c.Path, capacity: int64(c.Capacity), base: -1, root: -1, meta: -1, lock: -1, orphans: -1}
	fail := func(err error) (*Tier, error) {
		t.close()
		return nil, fmt.Errorf("tier %s: %w", c.Name, err)
	}
	if owned, err := checkAncestors(c.Path); err != nil {
		return fail(err)
	} else if owned != "" {
		o.Log.Warn().Str("tier", c.Name).Msg(owned)
	}
	fd, err := unix.Open(c.Path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("open %s: %w", c.Path, err))
	}
	t.base = fd
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail(err)
	}
	t.dev, t.ino = st.Dev, st.Ino
	if err := checkDistinct(t, prev); err != nil {
		return fail(err)
	}
	if err := unix.Mkdirat(fd, metaDir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return fail(fmt.Errorf("mkdir %s/%s: %w", c.Path, metaDir, err))
	}
	m, err := unix.Openat(fd, metaDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("open %s/%s: %w", c.Path, metaDir, err))
	}
	t.meta = m
	if err := t.takeLock(o.Holder); err != nil {
		return fail(err)
	}
	if err := t.probeXattrs(); err != nil {
		return fail(err)
	}
	if err := t.layOut(o.Log); err != nil {
		return fail(err)
	}
	r, err := unix.Openat(fd, dataDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("open %s/%s: %w", c.Path, dataDir, err))
	}
	t.root = r
	for _, d := range []string{"staging", "journal"} {
		if err := unix.Mkdirat(m, d, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return fail(fmt.Errorf("mkdir %s: %w", d, err))
		}
	}
	if err := t.openOrphanDir(); err != nil {
		return fail(err)
	}
	return t, nil
}

func (t *Tier) close() {
	t.dirs.forget(nil)
	for _, fd := range []*int{&t.orphans, &t.root, &t.meta, &t.base, &t.lock} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// Capacity is the configured cap, or the backing filesystem's size.
func (t *Tier) Capacity() int64 {
	if t.capacity > 0 {
		return t.capacity
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(t.root, &st); err != nil {
		return 0
	}
	return int64(st.Blocks) * st.Bsize
}

// Used is the space the files on this tier take.
func (t *Tier) Used() int64 { return t.used.Load() }

// Free is what can still be written here: the smaller of the room under the
// configured cap and what the backing filesystem has available, free pool
// slots included (they are room for segments).
func (t *Tier) Free() int64 {
	var st unix.Statfs_t
	if err := unix.Fstatfs(t.root, &st); err != nil {
		return 0
	}
	avail := int64(st.Bavail)*st.Bsize + t.poolFree()
	if t.capacity > 0 {
		if room := t.capacity - t.used.Load(); room < avail {
			avail = room
		}
	}
	if avail < 0 {
		avail = 0
	}
	return avail
}

// walk opens the directory named by comps on this tier and returns its fd
// (the caller closes it). With create, missing directories are made, copying
// mode, owner and inode number from what create returns for each depth;
// a directory that create knows on no tier is ENOENT, never made. A
// directory walked before is a dup of the descriptor kept (dircache.go).
func (t *Tier) walk(comps []string, create func(depth int) (dirMeta, bool)) (int, error) {
	if len(comps) == 0 {
		return unix.Dup(t.root)
	}
	key := dirKey(comps)
	fd, gen, ok, err := t.dirs.get(key)
	if ok {
		return fd, err
	}
	if fd, err = t.walkFrom(comps, create); err == nil {
		t.dirs.put(key, fd, gen)
	}
	return fd, err
}

func (t *Tier) walkFrom(comps []string, create func(depth int) (dirMeta, bool)) (int, error) {
	fd, err := unix.Dup(t.root)
	if err != nil {
		return -1, err
	}
	for i, c := range comps {
		nfd, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create != nil {
			m, ok := create(i)
			if !ok {
				// No tier has this directory: it is not in the namespace,
				// and a create must not bring it back.
				unix.Close(fd)
				return -1, unix.ENOENT
			}
			made := unix.Mkdirat(fd, c, m.mode&0o7777)
			if made == nil || errors.Is(made, unix.EEXIST) {
				nfd, err = unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err == nil && made == nil {
					// Through the descriptor, and only what we made.
					if err = madeByUs(nfd, unix.S_IFDIR); err == nil {
						_ = unix.Fchown(nfd, int(m.uid), int(m.gid))
						for _, x := range m.xattrs {
							_ = unix.Fsetxattr(nfd, x.name, x.value, 0)
						}
						// After the attributes: an access ACL sets the group bits.
						_ = unix.Fchmod(nfd, m.mode&0o7777)
						if m.ino != 0 {
							_ = setInoFd(nfd, m.ino)
						}
					} else {
						unix.Close(nfd)
					}
				}
			} else {
				err = made
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = nfd
	}
	return fd, nil
}

type dirMeta struct {
	mode     uint32
	uid, gid uint32
	ino      uint64
	xattrs   []xattrKV // the directory's own: none of tierfs's
}

func procPath(dirfd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
}

func getIno(dirfd int, name string) (uint64, error) {
	var b [8]byte
	n, err := unix.Lgetxattr(procPath(dirfd, name), xattrIno, b[:])
	if err != nil {
		return 0, err
	}
	if n != 8 {
		return 0, unix.ENODATA
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// setIno numbers the object at dirfd/name, which must still be the one st
// describes.
func setIno(dirfd int, name string, st *unix.Stat_t, ino uint64) error {
	fd, err := openPathAt(dirfd, name, st)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], ino)
	return unix.Setxattr(fdPath(fd), xattrIno, b[:], 0)
}

func getInoFd(fd int) (uint64, error) {
	var b [8]byte
	n, err := unix.Fgetxattr(fd, xattrIno, b[:])
	if err != nil {
		return 0, err
	}
	if n != 8 {
		return 0, unix.ENODATA
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

func setInoFd(fd int, ino uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], ino)
	return unix.Fsetxattr(fd, xattrIno, b[:], 0)
}

// derivedIno numbers objects that cannot carry an xattr (symlinks, device
// nodes, fifos): they never move, so tier and backing inode identify them.
func derivedIno(tier int, backing uint64) uint64 {
	return 1<<63 | uint64(tier)<<56 | backing&(1<<56-1)
}

func fsyncDirAt(dirfd int) error {
	err := unix.Fsync(dirfd)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EROFS) {
		return nil
	}
	return err
}

func closeQuiet(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}
