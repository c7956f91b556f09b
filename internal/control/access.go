package control

// Who may do what over the control socket. A widened socket (control_mode
// giving others write) lets any local user connect, so every request is
// judged by the caller's credentials as the kernel recorded them at
// connect(2): root, the daemon's own user and members of control_group
// may do everything; anyone else sees and acts on only what it could see
// and change through the mount itself, and may not reload the daemon.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/mountutil"
)

// peer is the process at the other end of a control connection.
type peer struct {
	pid      int32
	uid, gid uint32 // effective, at connect(2)
	groups   []uint32
}

func (p peer) String() string { return "uid " + strconv.FormatUint(uint64(p.uid), 10) }

func (p peer) inGroup(gid uint32) bool {
	return p.gid == gid || slices.Contains(p.groups, gid)
}

// Access bits, as in access(2).
const (
	mayRead   = 4
	mayWrite  = 2
	maySearch = 1
)

// may reports whether p gets want (mayRead|mayWrite|maySearch) on a file
// with st's mode and owner, by the POSIX permission bits alone, as the
// kernel's default_permissions check does for a caller without
// capabilities. ACLs are out of scope: the mount does not enable them
// (no FUSE_POSIX_ACL), so the kernel never consults them either.
func (p peer) may(st *unix.Stat_t, want uint32) bool {
	var bits uint32
	switch {
	case p.uid == st.Uid:
		bits = st.Mode >> 6
	case p.inGroup(st.Gid):
		bits = st.Mode >> 3
	default:
		bits = st.Mode
	}
	return bits&7&want == want
}

// peerOf reads the credentials of c's peer: SO_PEERCRED for its ids and
// SO_PEERGROUPS for its supplementary groups. Both are what the kernel
// saved at connect(2), so a caller cannot change them afterwards and no
// pid can be reused in between (as reading /proc/PID/status could be).
func peerOf(c *net.UnixConn) (peer, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return peer{}, err
	}
	var p peer
	var opErr error
	err = rc.Control(func(fd uintptr) {
		var cred *unix.Ucred
		cred, opErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if opErr != nil {
			opErr = fmt.Errorf("SO_PEERCRED: %w", opErr)
			return
		}
		p = peer{pid: cred.Pid, uid: cred.Uid, gid: cred.Gid}
		p.groups, opErr = peerGroups(int(fd))
	})
	if err == nil {
		err = opErr
	}
	return p, err
}

// peerGroups is getsockopt(SO_PEERGROUPS), which x/sys/unix does not
// wrap; the kernel says how much room it needs when given too little.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 32)
	for {
		n := uint32(len(buf) * 4)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case e == unix.ERANGE && int(n/4) > len(buf):
			buf = make([]uint32, n/4)
		case e != 0:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", e)
		default:
			return buf[:n/4], nil
		}
	}
}

type peerKey struct{}

// callerOf is the peer a request came from; ok is false when the
// connection did not come through a connLimiter (nobody to judge).
func callerOf(ctx context.Context) (p peer, ok bool) {
	p, ok = ctx.Value(peerKey{}).(peer)
	return p, ok
}

// controlAccess decides what each caller may do.
type controlAccess struct {
	daemonUID uint32
	// group is control_group's gid; -1 when none is configured.
	group     int
	groupName string // as configured, for messages
	// allowOther: the mount lets users other than root in at all.
	allowOther bool
	// mount is where a caller's access to a path is judged; nil: no
	// mount (only privileged callers see paths).
	mount *mountView
}

func defaultAccess() *controlAccess {
	return &controlAccess{daemonUID: uint32(os.Geteuid()), group: -1}
}

// privileged callers may do everything: root, the daemon's own user
// (who could as well ptrace it) and control_group's members, whom the
// operator named for this.
func (a *controlAccess) privileged(p peer) bool {
	return p.uid == 0 || p.uid == a.daemonUID || (a.group >= 0 && p.inGroup(uint32(a.group)))
}

// forbiddenError is a refusal; its message says why, for the caller.
type forbiddenError struct{ msg string }

func (e *forbiddenError) Error() string { return "permission denied: " + e.msg }

// errNoMount says the mount cannot be consulted (detached, or gone).
var errNoMount = errors.New("the mount is not there any more (detached?)")

// paths starts judging p's access to paths in the mount, for one
// request.
func (a *controlAccess) paths(p peer) *pathCheck {
	return &pathCheck{a: a, p: p, stats: map[string]statResult{}}
}

// pathCheck judges one caller's access to paths in the mount. The modes
// and owners come from stat through the mount, not from the store: the
// kernel grants access on what the mount shows, which fs/ may present
// otherwise than the tiers' copies (the root, for one). Each path is
// statted once per request.
type pathCheck struct {
	a     *controlAccess
	p     peer
	stats map[string]statResult
}

type statResult struct {
	st  unix.Stat_t
	err error
}

func (c *pathCheck) stat(rel string) (unix.Stat_t, error) {
	if r, ok := c.stats[rel]; ok {
		return r.st, r.err
	}
	var r statResult
	r.st, r.err = c.a.mount.stat(splitRel(rel))
	c.stats[rel] = r
	return r.st, r.err
}

// reach checks that the caller may look rel up, as the kernel's path walk
// would: search permission on every directory above it. It returns rel's
// attributes. A refusal does not say whether rel exists.
func (c *pathCheck) reach(rel string) (unix.Stat_t, error) {
	if c.a.mount == nil {
		return unix.Stat_t{}, errNoMount
	}
	if !c.a.allowOther {
		return unix.Stat_t{}, &forbiddenError{"the mount is not shared with other users (mount.allow_other is off), so only root and control_group may ask about its files"}
	}
	comps := splitRel(rel)
	for i := range comps {
		dir := strings.Join(comps[:i], "/")
		st, err := c.stat(dir)
		if err != nil {
			return st, err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return st, unix.ENOTDIR
		}
		if !c.p.may(&st, maySearch) {
			return st, &forbiddenError{fmt.Sprintf("%s may not search %s", c.p, displayRel(dir))}
		}
	}
	return c.stat(rel)
}

// listable checks that the caller may list dir's entries with their
// sizes: reach it, and read and search it (ls -l needs both: read for the
// names, search to stat them).
func (c *pathCheck) listable(dir string) error {
	st, err := c.reach(dir)
	if err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR && !c.p.may(&st, mayRead|maySearch) {
		return &forbiddenError{fmt.Sprintf("%s may not list %s", c.p, displayRel(dir))}
	}
	return nil
}

// writable checks that the caller could change the file rel through the
// mount: reach it and have write permission on it. migrate, pin and
// unpin change where a file lives, so they ask what changing it does.
func (c *pathCheck) writable(rel string) error {
	st, err := c.reach(rel)
	if err != nil {
		return err
	}
	if !c.p.may(&st, mayWrite) {
		return &forbiddenError{fmt.Sprintf("%s may not write %s (migrate, pin and unpin need write permission on the file through the mount)", c.p, rel)}
	}
	return nil
}

// visible reports whether the caller could see rel through the mount
// (stat it).
func (c *pathCheck) visible(rel string) bool {
	_, err := c.reach(rel)
	return err == nil
}

// parentListable is memoized listable for the directories holding the
// entries of a listing.
func (c *pathCheck) parentListable(memo map[string]bool, rel string) bool {
	dir := parentRel(rel)
	ok, seen := memo[dir]
	if !seen {
		ok = c.listable(dir) == nil
		memo[dir] = ok
	}
	return ok
}

func splitRel(rel string) []string {
	if rel == "" {
		return nil
	}
	return strings.Split(rel, "/")
}

func parentRel(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return ""
}

// mountView stats paths through the mount the daemon serves.
type mountView struct {
	path string
	// dev is the mount's device number: a path resolving elsewhere (the
	// mount detached, another mount on top) is not the mount's.
	dev uint64
}

// newMountView records the mount at mp, which must be up.
func newMountView(mp string) (*mountView, error) {
	var st unix.Stat_t
	if err := unix.Stat(mp, &st); err != nil {
		return nil, err
	}
	return &mountView{path: mp, dev: st.Dev}, nil
}

// stat returns the attributes the mount reports for the path made of
// comps, following no symlink: each component is opened with
// O_PATH|O_NOFOLLOW below the one before, so a name swapped for a
// symlink cannot lead the walk out of the tree the caller asked about.
func (v *mountView) stat(comps []string) (unix.Stat_t, error) {
	var st unix.Stat_t
	const dirFlags = unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Open(v.path, dirFlags, 0)
	if err != nil {
		return st, errNoMount
	}
	defer func() { unix.Close(fd) }()
	if err := unix.Fstat(fd, &st); err != nil || st.Dev != v.dev {
		return st, errNoMount
	}
	for i, name := range comps {
		if i == len(comps)-1 {
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return st, err
			}
			break
		}
		nfd, err := unix.Openat(fd, name, dirFlags, 0)
		if errors.Is(err, unix.ELOOP) {
			err = unix.ENOTDIR // a symlink where a directory was
		}
		if err != nil {
			return st, err
		}
		unix.Close(fd)
		fd = nfd
	}
	if st.Dev != v.dev {
		return st, unix.ENOENT // another mount on top: not what tierfs lists
	}
	return st, nil
}

// WarnAccess says in the log what a widened control socket lets
// others do.
func WarnAccess(m mountutil.Config, gid int, log zerolog.Logger) {
	if mode := m.SocketMode(); mode&0o002 != 0 {
		log.Warn().Str("control_mode", fmt.Sprintf("%04o", mode)).
			Msg("the control socket is world-writable (mount.control_mode): any local user may connect; each sees and acts on only the files it could through the mount, and reload stays root's and control_group's")
	}
	if gid >= 0 {
		if _, err := user.LookupGroupId(strconv.Itoa(gid)); err != nil {
			log.Warn().Int("gid", gid).Msg("mount.control_group: no group in the group database has this gid; only processes already holding it are its members")
		}
	}
}
