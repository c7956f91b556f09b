package tiering

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tierfs/tierfs/pmem"
	"golang.org/x/sys/unix"
)

// Attr is the attributes of a file as tierfs shows them: the backing's
// stat with the tierfs inode number, and the tier that holds it.
type Attr struct {
	unix.Stat_t
	Tier int
}

// loc is one tier's copy of a name.
type loc struct {
	tier  *Tier
	dirfd int // the parent directory on that tier; owned by the loc
	name  string
	st    unix.Stat_t
}

type locs []loc

func (ls locs) close() {
	for _, l := range ls {
		closeQuiet(l.dirfd)
	}
}

func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

func validName(name string) error {
	if name == "" || name == "." || name == ".." {
		return unix.EINVAL
	}
	if len(name) > 255 {
		return unix.ENAMETOOLONG
	}
	return nil
}

// hidden reports whether comps (a parent) + name is tierfs's own state.
func hidden(dir []string, name string) bool { return len(dir) == 0 && name == metaDir }

func (s *Store) comps(p Path) ([]string, error) {
	c, ok := p.Components()
	if !ok {
		return nil, unix.ENOENT
	}
	for i, n := range c {
		if hidden(c[:i], n) {
			return nil, unix.ENOENT
		}
	}
	return c, nil
}

// locate finds name in directory dir on every tier, fastest first. Only a
// directory may have copies on several tiers: anything else found on two
// (once a committed move's superseded source is set aside) was put there
// behind tierfs's back, and serving either copy could hand one user's file
// to another, so the name is EIO until an operator removes one.
func (s *Store) locate(dir []string, name string) (locs, error) {
	ls, err := s.locateAll(dir, name)
	if err == nil && len(ls) > 1 {
		ls = s.dropPending(ls)
	}
	if err != nil || len(ls) < 2 || allDirs(ls) {
		return ls, err
	}
	ls = dropSuperseded(ls)
	if len(ls) < 2 || allDirs(ls) {
		return ls, nil
	}
	var tiers []string
	for i := range ls {
		tiers = append(tiers, ls[i].tier.Name)
	}
	ls.close()
	s.log.Error().Str("path", strings.Join(append(append([]string(nil), dir...), name), "/")).Strs("tiers", tiers).
		Msg("a name exists on several tiers without a tierfs marker (written behind tierfs's back?): answering EIO until one copy is removed from its tier")
	return nil, unix.EIO
}

func allDirs(ls locs) bool {
	for i := range ls {
		if !isDir(&ls[i].st) {
			return false
		}
	}
	return true
}

// dropSuperseded sets aside the copies that a committed move or rename
// marked as superseded by another tier that has a copy (the source of a
// move whose unlink is still to come).
func dropSuperseded(ls locs) locs {
	var keep locs
	for i, lost := range superseded(ls) {
		if lost != "" {
			closeQuiet(ls[i].dirfd)
			continue
		}
		keep = append(keep, ls[i])
	}
	return keep
}

// superseded says, for each copy, the tier that superseded it if that tier
// has a copy too ("" for a copy that is not a loser).
func superseded(ls locs) []string {
	has := map[string]bool{}
	for i := range ls {
		has[ls[i].tier.Name] = true
	}
	out := make([]string, len(ls))
	buf := make([]byte, 256)
	for i := range ls {
		if winner, ok := supersededBy(&ls[i], buf); ok && has[winner] && winner != ls[i].tier.Name {
			out[i] = winner
		}
	}
	return out
}

// supersededBy reads the marker of a losing copy: the winner's tier name.
func supersededBy(l *loc, buf []byte) (string, bool) {
	if l.st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", false
	}
	fd, err := openPathAt(l.dirfd, l.name, &l.st)
	if err != nil {
		return "", false
	}
	defer unix.Close(fd)
	n, err := unix.Getxattr(fdPath(fd), xattrSuperseded, buf)
	if err != nil {
		return "", false
	}
	return string(buf[:n]), true
}

// locateAll finds name in directory dir on every tier, fastest first, as
// it is on disk.
func (s *Store) locateAll(dir []string, name string) (locs, error) {
	var out locs
	for _, t := range s.tiers {
		fd, err := t.walk(dir, nil)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				continue
			}
			out.close()
			return nil, err
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			unix.Close(fd)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			out.close()
			return nil, err
		}
		out = append(out, loc{tier: t, dirfd: fd, name: name, st: st})
	}
	return out, nil
}

// locatePath is locate for a full path; the root has no parent.
func (s *Store) locatePath(c []string) (locs, error) {
	if len(c) == 0 {
		var out locs
		for _, t := range s.tiers {
			fd, err := unix.Dup(t.root)
			if err != nil {
				out.close()
				return nil, err
			}
			var st unix.Stat_t
			if err := unix.Fstat(t.root, &st); err != nil {
				unix.Close(fd)
				out.close()
				return nil, err
			}
			out = append(out, loc{tier: t, dirfd: fd, name: ".", st: st})
		}
		return out, nil
	}
	ls, err := s.locate(c[:len(c)-1], c[len(c)-1])
	if err != nil {
		return nil, err
	}
	if len(ls) == 0 {
		return nil, unix.ENOENT
	}
	return ls, nil
}

// resolve finds every copy of p (the root: every tier's root).
func (s *Store) resolve(p Path) (locs, error) {
	c, err := s.comps(p)
	var ls locs
	if err == nil {
		ls, err = s.locatePath(c)
	}
	return s.resolveIdent(p, c, ls, err)
}

// primary is the copy that speaks for a name: for a directory the first
// tier's copy, for anything else its only copy (the first, should an
// interrupted commit have left two; recovery removes those at mount).
func (s *Store) attrOf(l *loc) (Attr, error) {
	a := Attr{Stat_t: l.st, Tier: l.tier.Index}
	a.Ctim = s.ct.shown(l.tier, &l.st)
	if l.name == "." {
		a.Ino = RootIno
		return a, nil
	}
	ino, err := s.inoOf(l.tier, l.dirfd, l.name, &l.st)
	if err != nil {
		return a, err
	}
	a.Ino = ino
	if mayBePMem(&l.st) {
		// A pmem file shows its logical size: the live one while open,
		// else the durable one.
		a.Size = s.pmemAttrSize(l, ino)
	}
	if l.st.Mode&unix.S_IFMT == unix.S_IFREG {
		s.openMu.Lock()
		f := s.open[ino]
		s.openMu.Unlock()
		if f != nil {
			a.Size = f.shownSize(a.Size)
		}
	}
	return a, nil
}

// Lookup returns the attributes of dir/name.
func (s *Store) Lookup(dir Path, name string) (Attr, error) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	d, err := s.comps(dir)
	if err != nil {
		return Attr{}, err
	}
	if hidden(d, name) {
		return Attr{}, unix.ENOENT
	}
	ls, err := s.locate(d, name)
	if err != nil {
		return Attr{}, err
	}
	defer ls.close()
	if len(ls) == 0 {
		return Attr{}, unix.ENOENT
	}
	return s.attrOf(&ls[0])
}

// Getattr returns the attributes of p.
func (s *Store) Getattr(p Path) (Attr, error) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	ls, err := s.resolve(p)
	if err != nil {
		return Attr{}, err
	}
	defer ls.close()
	return s.attrOf(&ls[0])
}

// DirEntry is one name in a directory listing.
type DirEntry struct {
	Name string
	Mode uint32 // file type bits
	Ino  uint64
}

// Readdir lists the union of the directory's copies on all tiers.
func (s *Store) Readdir(p Path) ([]DirEntry, error) { return s.readdir(p, readNames) }

// readdir lists with read: readNames for a program's readdir, which
// moves the directory's atime as a local one would; readNamesQuiet for
// tierfs's own walks (the policy's snapshot), which must not.
func (s *Store) readdir(p Path, read func(int) ([]string, error)) ([]DirEntry, error) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	c, err := s.comps(p)
	if err != nil {
		return nil, err
	}
	var out []DirEntry
	err = s.unionDir(c, read, func(t *Tier, dir int, n string) bool {
		var st unix.Stat_t
		if err := unix.Fstatat(dir, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return false // raced with nothing we know of: skip it
		}
		ino, err := s.inoOf(t, dir, n, &st)
		if err != nil {
			ino = 0
		}
		out = append(out, DirEntry{Name: n, Mode: st.Mode & unix.S_IFMT, Ino: ino})
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// unionDir reads directory c's copy on every tier that has one, in tier
// order, with read, and offers each name to take, less the hidden ones and
// those an earlier tier's copy already answered (take returned true).
// ENOENT when no tier has c. Caller holds ns.
func (s *Store) unionDir(c []string, read func(int) ([]string, error), take func(t *Tier, dir int, name string) bool) error {
	seen := map[string]bool{}
	found := false
	for _, t := range s.tiers {
		fd, err := t.walk(c, nil)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				continue
			}
			return err
		}
		found = true
		names, err := read(fd)
		if err != nil {
			unix.Close(fd)
			return err
		}
		for _, n := range names {
			if !seen[n] && !hidden(c, n) && take(t, fd, n) {
				seen[n] = true
			}
		}
		unix.Close(fd)
	}
	if !found {
		return unix.ENOENT
	}
	return nil
}

// readNamesQuiet is readNames without moving the directory's atime
// (O_NOATIME, which root may always use): tierfs's own reads of a
// directory (recovery's scan, the policy's, rmdir's check) are not a
// program's, and must not show in its times.
func readNamesQuiet(fd int) ([]string, error) {
	q, err := unix.Open(fdPath(fd), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err != nil {
		return readNames(fd)
	}
	defer unix.Close(q)
	return readNames(q)
}

// readNames lists a directory fd's names, without "." and "..". The fd
// stays open. It reads through an open of its own (with fd's O_NOATIME):
// a dup would share its offset with fd, which listings read at once (the
// tier's root, a directory the tier keeps open: dircache.go).
func readNames(fd int) ([]string, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, err
	}
	d, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC|fl&unix.O_NOATIME, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(d), "dir")
	defer f.Close()
	return f.Readdirnames(-1)
}

// placement picks the tier for a new file: the first with room for an
// expected file, then the others in tier order (a write that finds one
// full spills on).
func (s *Store) placement() []*Tier {
	var order []*Tier
	var rest []*Tier
	for _, t := range s.tiers {
		need := s.opts.MinFree
		if t.Type == TypePMem && s.opts.SegmentSize > 0 {
			need = s.opts.SegmentSize
		}
		if t.Free() >= need {
			order = append(order, t)
		} else {
			rest = append(rest, t)
		}
	}
	return append(order, rest...)
}

// dirMetaFor copies the metadata of directory comps[:depth+1] from the
// first tier that has it, so that a directory made on another tier looks
// the same.
func (s *Store) dirMetaFor(comps []string) func(int) (dirMeta, bool) {
	return func(depth int) (dirMeta, bool) {
		ls, err := s.locate(comps[:depth], comps[depth])
		if err != nil || len(ls) == 0 {
			return dirMeta{}, false
		}
		defer ls.close()
		m := dirMeta{mode: ls[0].st.Mode & 0o7777, uid: ls[0].st.Uid, gid: ls[0].st.Gid}
		if ino, err := getIno(ls[0].dirfd, ls[0].name); err == nil {
			m.ino = ino
		}
		// Its extended attributes (a default ACL among them) too; one
		// that cannot be read is not copied, as by a move.
		_ = onObject(&ls[0], func(p string) (err error) {
			m.xattrs, err = ownXattrs(p)
			return err
		})
		return m, true
	}
}

// dirChanged shows a change to the entries of directory dir's copy on
// tier t through the copy that speaks for dir (the fastest tier's that has
// one, whose attributes getattr shows): a local directory's mtime and
// ctime both become the time of the change, and setting the mtime to now
// sets both. Nothing to do when t's copy speaks for dir. Best effort: the
// change itself is done. Caller holds ns exclusively.
func (s *Store) dirChanged(dir []string, t *Tier) {
	for _, u := range s.tiers {
		if u == t {
			return
		}
		fd, err := u.walk(dir, nil)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err == nil {
			// On the directory opened, never on what its name leads to.
			err = unix.UtimesNanoAt(fd, "", []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_NOW}}, unix.AT_EMPTY_PATH)
			unix.Close(fd)
		}
		if err != nil {
			s.log.Warn().Err(err).Str("tier", u.Name).Str("path", strings.Join(dir, "/")).
				Msg("cannot show a change to a directory's entries on another tier in its times")
		}
		return
	}
}

// Owner is who creates a file.
type Owner struct{ UID, GID uint32 }

// chownNew gives the symlink or special file just made at dirfd/name to
// its owner, through a descriptor of it that is checked to be what was
// made (a hard link to a root file put in its place must not change hands).
func chownNew(dirfd int, name string, ft uint32, o Owner) error {
	if o.UID == 0 && o.GID == 0 {
		return nil
	}
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := madeByUs(fd, ft); err != nil {
		return err
	}
	return unix.Fchownat(fd, "", int(o.UID), int(o.GID), unix.AT_EMPTY_PATH)
}

// Create makes and opens a regular file (or opens the existing one when
// flags lack O_EXCL and the name exists).
func (s *Store) Create(dir Path, name string, flags int, mode uint32, o Owner) (*Handle, Attr, error) {
	if err := validName(name); err != nil {
		return nil, Attr{}, err
	}
	s.ns.Lock()
	defer s.ns.Unlock()
	d, err := s.comps(dir)
	if err != nil {
		return nil, Attr{}, err
	}
	if hidden(d, name) {
		return nil, Attr{}, unix.EPERM
	}
	ls, err := s.locate(d, name)
	if err != nil {
		return nil, Attr{}, err
	}
	if len(ls) > 0 {
		defer ls.close()
		return s.openExisting(&ls[0], childPath{dir, name}, flags)
	}
	var lastErr error = unix.ENOSPC
	for _, t := range s.placement() {
		h, a, next, err := s.createOn(t, d, childPath{dir, name}, name, flags, mode, o)
		if err == nil {
			return h, a, nil
		}
		if !next {
			return nil, Attr{}, err
		}
		lastErr = err
	}
	return nil, Attr{}, lastErr
}

// noRoom says a tier could not take a new file: the next may.
func noRoom(err error) bool { return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) }

// openExisting is Create of a name that exists: an open, unless O_EXCL.
// Caller holds ns.
func (s *Store) openExisting(l *loc, p Path, flags int) (*Handle, Attr, error) {
	if flags&unix.O_EXCL != 0 {
		return nil, Attr{}, unix.EEXIST
	}
	a, err := s.attrOf(l)
	if err != nil {
		return nil, Attr{}, err
	}
	h, err := s.openLoc(l, a.Ino, p, flags)
	if err != nil {
		return nil, Attr{}, err
	}
	return h, a, nil
}

// createOn makes the new file p (name in directory d) on tier t, a pool
// slot where t has one for it, and opens it. next says the tier had no
// room for it: the next one is asked. Caller holds ns exclusively.
func (s *Store) createOn(t *Tier, d []string, p Path, name string, flags int, mode uint32, o Owner) (h *Handle, a Attr, next bool, err error) {
	pfd, err := t.walk(d, s.dirMetaFor(d))
	if err != nil {
		return nil, Attr{}, noRoom(err), err
	}
	defer unix.Close(pfd)
	ino, err := s.allocIno()
	if err != nil {
		return nil, Attr{}, false, err
	}
	fd, pm, slot, err := s.takeSlot(t, pfd, d, name, mode, o, ino)
	if err != nil {
		return nil, Attr{}, false, err
	}
	var st unix.Stat_t
	if slot {
		if err := unix.Fstat(fd, &st); err != nil {
			pm.Close()
			unix.Close(fd)
			return nil, Attr{}, false, err
		}
	} else {
		pm = nil
		if fd, err = createFileAt(pfd, name, mode, o, ino); err == nil {
			if err = unix.Fstat(fd, &st); err != nil {
				unix.Close(fd)
				_ = unix.Unlinkat(pfd, name, 0)
			}
		}
		if err != nil {
			return nil, Attr{}, noRoom(err), err
		}
	}
	t.files.Add(1)
	s.dirChanged(d, t)
	st.Ino = ino
	f := s.registerNew(ino, t, fd, pm, p, &st)
	if pm != nil {
		st.Size = pm.Size()
	}
	return &Handle{f: f, flags: flags}, Attr{Stat_t: st, Tier: t.Index}, false, nil
}

// createFileAt makes and opens name in pfd with the inode number ino
// and its owner; a file it could not finish is removed.
func createFileAt(pfd int, name string, mode uint32, o Owner, ino uint64) (int, error) {
	fd, err := unix.Openat(pfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, mode&0o7777)
	if err != nil {
		return -1, err
	}
	err = setInoFd(fd, ino)
	if err == nil && (o.UID != 0 || o.GID != 0) {
		err = unix.Fchown(fd, int(o.UID), int(o.GID))
	}
	if err != nil {
		unix.Close(fd)
		_ = unix.Unlinkat(pfd, name, 0)
		return -1, err
	}
	return fd, nil
}

// childPath names dir/name; it follows dir's renames.
type childPath struct {
	dir  Path
	name string
}

func (c childPath) Components() ([]string, bool) {
	d, ok := c.dir.Components()
	if !ok {
		return nil, false
	}
	return append(append([]string(nil), d...), c.name), true
}

// freeNameLocked resolves dir for a new entry name, which must exist on
// no tier. Caller holds ns exclusively.
func (s *Store) freeNameLocked(dir Path, name string) ([]string, error) {
	d, err := s.comps(dir)
	if err != nil {
		return nil, err
	}
	if hidden(d, name) {
		return nil, unix.EPERM
	}
	ls, err := s.locate(d, name)
	if err != nil {
		return nil, err
	}
	if len(ls) > 0 {
		ls.close()
		return nil, unix.EEXIST
	}
	return d, nil
}

// Mkdir makes a directory on the first tier that takes it.
func (s *Store) Mkdir(dir Path, name string, mode uint32, o Owner) (Attr, error) {
	if err := validName(name); err != nil {
		return Attr{}, err
	}
	s.ns.Lock()
	defer s.ns.Unlock()
	d, err := s.freeNameLocked(dir, name)
	if err != nil {
		return Attr{}, err
	}
	t, pfd, err := s.makeOnFirst(s.tiers, d, func(pfd int) error { return unix.Mkdirat(pfd, name, mode&0o7777) })
	if err != nil {
		return Attr{}, err
	}
	st, ino, err := s.finishMkdir(pfd, name, mode, o)
	if err != nil {
		_ = unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR)
		t.forgetDir(d, name)
		unix.Close(pfd)
		return Attr{}, err
	}
	unix.Close(pfd)
	s.dirChanged(d, t)
	st.Ino = ino
	return Attr{Stat_t: st, Tier: t.Index}, nil
}

// finishMkdir numbers, chowns and chmods the directory just made at
// pfd/name through a descriptor of it, never by name: a name swapped for a
// symlink meanwhile would otherwise lead the chmod anywhere.
func (s *Store) finishMkdir(pfd int, name string, mode uint32, o Owner) (unix.Stat_t, uint64, error) {
	var st unix.Stat_t
	fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return st, 0, err
	}
	defer unix.Close(fd)
	if err := madeByUs(fd, unix.S_IFDIR); err != nil {
		return st, 0, err
	}
	ino, err := s.allocIno()
	if err == nil {
		err = setInoFd(fd, ino)
	}
	if err == nil && (o.UID != 0 || o.GID != 0) {
		err = unix.Fchown(fd, int(o.UID), int(o.GID))
	}
	if err == nil {
		// mkdir applies the umask-free mode but drops S_ISGID etc. on
		// some filesystems; set it exactly.
		err = unix.Fchmod(fd, mode&0o7777)
	}
	if err == nil {
		err = unix.Fstat(fd, &st)
	}
	return st, ino, err
}

// makeOnFirst makes an entry with mk in directory d of the first of tiers
// that has room for it, and returns that tier and the directory's
// descriptor, open. Caller holds ns exclusively.
func (s *Store) makeOnFirst(tiers []*Tier, d []string, mk func(pfd int) error) (*Tier, int, error) {
	var lastErr error = unix.ENOSPC
	for _, t := range tiers {
		pfd, err := t.walk(d, s.dirMetaFor(d))
		if err == nil {
			if err = mk(pfd); err == nil {
				return t, pfd, nil
			}
			unix.Close(pfd)
		}
		if !noRoom(err) {
			return nil, -1, err
		}
		lastErr = err
	}
	return nil, -1, lastErr
}

// madeByUs checks that fd is what the daemon (root) just created, of type
// ft, before it is given to its owner: not something put in its place.
func madeByUs(fd int, ft uint32) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != ft || st.Uid != uint32(os.Geteuid()) || (ft != unix.S_IFDIR && st.Nlink != 1) {
		return fmt.Errorf("the entry just created was replaced: %w", unix.EIO)
	}
	return nil
}

// Symlink makes a symbolic link on the first tier that takes it; links
// never move.
func (s *Store) Symlink(dir Path, name, target string, o Owner) (Attr, error) {
	return s.makeSpecial(dir, name, unix.S_IFLNK, o, func(pfd int) error { return unix.Symlinkat(target, pfd, name) })
}

// Mknod makes a device node, fifo or socket.
func (s *Store) Mknod(dir Path, name string, mode uint32, dev uint64, o Owner) (Attr, error) {
	if mode&unix.S_IFMT == unix.S_IFREG || mode&unix.S_IFMT == 0 {
		// A regular file made by mknod: give it an inode number like any.
		h, a, err := s.Create(dir, name, unix.O_EXCL|unix.O_RDWR, mode, o)
		if err != nil {
			return a, err
		}
		h.Release()
		return a, nil
	}
	return s.makeSpecial(dir, name, mode&unix.S_IFMT, o, func(pfd int) error { return unix.Mknodat(pfd, name, mode, int(dev)) })
}

func (s *Store) makeSpecial(dir Path, name string, ft uint32, o Owner, mk func(pfd int) error) (Attr, error) {
	if err := validName(name); err != nil {
		return Attr{}, err
	}
	s.ns.Lock()
	defer s.ns.Unlock()
	d, err := s.freeNameLocked(dir, name)
	if err != nil {
		return Attr{}, err
	}
	t, pfd, err := s.makeOnFirst(s.placement(), d, mk)
	if err != nil {
		return Attr{}, err
	}
	defer unix.Close(pfd)
	if err := chownNew(pfd, name, ft, o); err != nil {
		_ = unix.Unlinkat(pfd, name, 0)
		return Attr{}, err
	}
	return s.madeAttr(d, t, pfd, name)
}

// madeAttr notes that directory d changed on t, where name was just made
// in pfd, and answers the new entry's attributes. Caller holds ns.
func (s *Store) madeAttr(d []string, t *Tier, pfd int, name string) (Attr, error) {
	s.dirChanged(d, t)
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return Attr{}, err
	}
	l := loc{tier: t, dirfd: pfd, name: name, st: st}
	return s.attrOf(&l)
}

// Readlink reads a symbolic link.
func (s *Store) Readlink(p Path) (string, error) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	ls, err := s.resolve(p)
	if err != nil {
		return "", err
	}
	defer ls.close()
	fd, err := openPathAt(ls[0].dirfd, ls[0].name, &ls[0].st)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, 4096)
	for {
		n, err := unix.Readlinkat(fd, "", buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Link makes a hard link on the tier that holds the target: a file's names
// are all on its tier, and a move takes them all (linkmove.go).
func (s *Store) Link(target Path, dir Path, name string) (Attr, error) {
	if err := validName(name); err != nil {
		return Attr{}, err
	}
	s.names.RLock()
	defer s.names.RUnlock()
	s.ns.Lock()
	defer s.ns.Unlock()
	d, err := s.comps(dir)
	if err != nil {
		return Attr{}, err
	}
	if hidden(d, name) {
		return Attr{}, unix.EPERM
	}
	src, err := s.resolve(target)
	if err != nil {
		return Attr{}, err
	}
	defer src.close()
	if isDir(&src[0].st) {
		return Attr{}, unix.EPERM
	}
	ex, err := s.locate(d, name)
	if err != nil {
		return Attr{}, err
	}
	if len(ex) > 0 {
		ex.close()
		return Attr{}, unix.EEXIST
	}
	t := src[0].tier
	pfd, err := t.walk(d, s.dirMetaFor(d))
	if err != nil {
		return Attr{}, err
	}
	defer unix.Close(pfd)
	// The link is made to the object looked up, not to whatever has its
	// name by now.
	sfd, err := openPathAt(src[0].dirfd, src[0].name, &src[0].st)
	if err != nil {
		return Attr{}, err
	}
	defer unix.Close(sfd)
	if err := unix.Linkat(sfd, "", pfd, name, unix.AT_EMPTY_PATH); err != nil {
		return Attr{}, err
	}
	return s.madeAttr(d, t, pfd, name)
}

// Unlink removes a name that is not a directory. commit runs under the
// namespace lock once the name is gone, so the caller can update its view.
func (s *Store) Unlink(dir Path, name string, commit func()) error {
	s.names.RLock()
	defer s.names.RUnlock()
	s.ns.Lock()
	defer s.ns.Unlock()
	s.nameDrops.Add(1)
	d, err := s.comps(dir)
	if err != nil {
		return err
	}
	if hidden(d, name) {
		return unix.ENOENT
	}
	s.settleLeftAt(d, name)
	ls, err := s.locate(d, name)
	if err != nil {
		return err
	}
	defer ls.close()
	if len(ls) == 0 {
		return unix.ENOENT
	}
	if isDir(&ls[0].st) {
		return unix.EISDIR
	}
	for i := range ls {
		if err := s.removeFileLocked(&ls[i]); err != nil {
			return err
		}
		s.dirChanged(d, ls[i].tier)
	}
	if commit != nil {
		commit()
	}
	return nil
}

// removeFileLocked unlinks one backing copy and settles the accounting.
func (s *Store) removeFileLocked(l *loc) error {
	var ino uint64
	if l.st.Mode&unix.S_IFMT == unix.S_IFREG {
		ino, _ = getIno(l.dirfd, l.name)
		s.forgetPlain(ino)
	}
	last := l.st.Nlink <= 1
	if l.st.Mode&unix.S_IFMT == unix.S_IFREG && last && ino != 0 && s.orphanLocked(l, ino) {
		l.tier.files.Add(-1)
		return nil // its space is freed when the orphan goes
	}
	// A pool file goes back to the pool (a rename), to be recycled
	// once nothing has it open.
	var detached *pmem.Detached
	if l.st.Mode&unix.S_IFMT == unix.S_IFREG && l.tier.isPoolFile(l.dirfd, l.name, &l.st) {
		d, err := l.tier.pool.Detach(l.dirfd, l.name, &l.st)
		if err != nil && !errors.Is(err, pmem.ErrPoolClosed) {
			return err
		}
		detached = d
	}
	if detached == nil {
		if err := unix.Unlinkat(l.dirfd, l.name, 0); err != nil {
			return err
		}
	}
	if l.st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	if last {
		l.tier.files.Add(-1)
	}
	s.openMu.Lock()
	f := s.open[ino]
	if f != nil && f.tier == l.tier && last {
		f.unlinked = true
		f.path = nil
		f.detached = detached
		s.openMu.Unlock()
		return nil // its space is freed when the last handle goes
	}
	s.openMu.Unlock()
	if last {
		l.tier.addUsed(-usedBytes(&l.st))
	}
	if detached != nil {
		s.recycle(l.tier, detached)
	}
	return nil
}

// Rmdir removes an empty directory from every tier.
func (s *Store) Rmdir(dir Path, name string, commit func()) error {
	s.ns.Lock()
	defer s.ns.Unlock()
	s.nameDrops.Add(1)
	d, err := s.comps(dir)
	if err != nil {
		return err
	}
	if hidden(d, name) {
		return unix.EPERM
	}
	ls, err := s.locate(d, name)
	if err != nil {
		return err
	}
	defer ls.close()
	if len(ls) == 0 {
		return unix.ENOENT
	}
	for i := range ls {
		if !isDir(&ls[i].st) {
			return unix.ENOTDIR
		}
		empty, err := dirEmpty(ls[i].dirfd, name)
		if err != nil {
			return err
		}
		if !empty {
			return unix.ENOTEMPTY
		}
	}
	// Slowest tier first: the fastest tier's copy speaks for the directory
	// until the last moment.
	for i := len(ls) - 1; i >= 0; i-- {
		err := unix.Unlinkat(ls[i].dirfd, name, unix.AT_REMOVEDIR)
		ls[i].tier.forgetDir(d, name)
		if err != nil {
			return err
		}
		s.dirChanged(d, ls[i].tier)
	}
	if commit != nil {
		commit()
	}
	return nil
}

func dirEmpty(pfd int, name string) (bool, error) {
	fd, err := unix.Openat(pfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	names, err := readNamesQuiet(fd)
	if err != nil {
		return false, err
	}
	return len(names) == 0, nil
}
