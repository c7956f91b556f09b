package tiering

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/tierfs/tierfs/pmem"
	"golang.org/x/sys/unix"
)

// move is one move of an open file in flight. Its methods are the steps
// in move.go's list, in order; each ends at the failure point the crash
// table in docs/design.md names.
type move struct {
	s         *Store
	f         *File
	src, dest *Tier
	o         *MoveOptions
	start     time.Time

	sfd       int    // the destination's staging directory
	staging   string // the copy's name in it
	dfd       int    // the copy; the file's backing once committed
	srcfd     int    // the source, read without touching its atime
	srcShared bool   // srcfd is the file's own descriptor
	pfd       int    // the destination's copy of the name's directory

	st        unix.Stat_t   // the source, as the last seal found it
	shown     unix.Timespec // the ctime the file showed before the move marked it
	names     [][]string    // several names: what the lock-free walk found
	marked    bool          // the source carries the marker (one name)
	committed bool          // the destination is the file
	bytes     int64
	left      *leftSource // the source, still under its name (step 7)
	release   []func()    // what frees the source: once every lock is dropped
}

// commitTries bounds the seals of one move: a file truncated, chmodded or
// given xattrs by name between every seal and its commit stays where it is.
const commitTries = 8

// errKeptChanging ends a move whose file changed between each seal and
// its commit; like a move already in progress, a write that wanted it
// (spill) tries again.
var errKeptChanging = fmt.Errorf("file kept changing while its move committed: %w", ErrBusy)

// beginMove is step 1; nil, without an error, when f is on dest already.
func (s *Store) beginMove(f *File, dest *Tier, o *MoveOptions) (*move, error) {
	start := time.Now()
	if !f.moving.CompareAndSwap(false, true) {
		return nil, ErrBusy
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tier == dest {
		f.moving.Store(false)
		return nil, nil
	}
	f.dmu.Lock()
	f.dirty = &dirtySet{}
	f.dmu.Unlock()
	return &move{s: s, f: f, src: f.tier, dest: dest, o: o, start: start,
		staging: strconv.FormatUint(f.ino, 10), sfd: -1, dfd: -1, srcfd: -1, pfd: -1}, nil
}

// run takes the move through steps 2 to 7.
func (m *move) run(ctx context.Context) error {
	if err := m.stage(); err != nil {
		return err
	}
	if err := m.copyBulk(ctx); err != nil {
		return err
	}
	if err := m.f.converge(m.dfd, m.srcfd); err != nil {
		return err
	}
	failPoint("move:converged")
	if m.st.Nlink > 1 {
		// Several names: found before the namespace is locked, checked
		// at the commit (linkmove.go).
		m.names = m.s.linkNames(m.src, &m.st)
		failPoint("link-move:found")
	}
	for try := 1; ; try++ {
		if err := m.seal(); err != nil {
			return err
		}
		again, err := m.commit()
		if !again {
			return err
		}
		if try == commitTries {
			return errKeptChanging
		}
	}
}

// stage opens the copy, .tierfs/staging/<ino> on the destination.
func (m *move) stage() error {
	sfd, err := unix.Openat(m.dest.meta, "staging", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	m.sfd = sfd
	dfd, err := unix.Openat(sfd, m.staging, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	m.dfd = dfd
	failPoint("move:staged")
	return nil
}

// copyBulk is step 2's copy, while I/O goes on: holding the read lock
// only keeps the fd from being closed; writers proceed and record ranges.
func (m *move) copyBulk(ctx context.Context) error {
	f := m.f
	f.mu.RLock()
	// A descriptor of its own that does not touch the source's atime: a
	// move must not change what stat shows.
	m.srcfd = noatime(f.fd)
	m.srcShared = m.srcfd == f.fd
	var st unix.Stat_t
	err := unix.Fstat(m.srcfd, &st)
	if err == nil {
		if size, ok := f.liveSize(); ok {
			st.Size = size // a pmem file: the logical size only
		}
		cp := &copier{ctx: ctx, limiter: m.o.Limiter, progress: m.o.Progress, total: st.Size, writeBehind: true}
		err = cp.sparse(m.dfd, m.srcfd, st.Size)
	}
	f.mu.RUnlock()
	if err == nil {
		// The bulk of the copy is flushed with no lock held: on a slow
		// tier this takes the copy's size over its bandwidth.
		err = unix.Fdatasync(m.dfd)
	}
	if err != nil {
		return err
	}
	failPoint("move:copied")
	if m.dest.capacity > 0 && m.dest.used.Load()+st.Blocks*512 > m.dest.capacity {
		return unix.ENOSPC
	}
	m.st = st
	return nil
}

// seal is steps 3 and 4. It seals the file first, holding its write
// lock an instant: from there its reads, writes, fallocates and fsyncs
// wait (rlockIO) for the commit, with no lock held, so that the copy,
// the fsyncs and the marking run with no lock at all. What else changes
// the file meanwhile (a truncate, chmod or xattr by name, which hold ns
// shared and must not wait for a commit that waits for ns) is recorded,
// and the commit seals again.
func (m *move) seal() error {
	s, f := m.s, m.f
	f.mu.Lock()
	s.openMu.Lock()
	gone := f.unlinked && m.o.Reason != ReasonSpill // only a spill moves an orphan
	orphan := f.unlinked
	s.openMu.Unlock()
	if gone {
		f.mu.Unlock()
		return ErrGone
	}
	f.dmu.Lock()
	d := f.dirty
	f.dirty = &dirtySet{} // what changes from here on, for the commit
	f.dmu.Unlock()
	fd := f.fd
	live, isPM := f.liveSize()
	if f.sealed == nil {
		f.sealed = make(chan struct{})
	}
	f.mu.Unlock()

	if err := unix.Fstat(fd, &m.st); err != nil {
		return err
	}
	if m.marked && m.st.Nlink > 1 {
		// Linked since the last seal: a file with several names is
		// marked at its commit point only (linkmove.go).
		if err := m.unmark(); err != nil {
			return err
		}
	}
	shown := s.ct.shown(m.src, &m.st)
	if isPM {
		m.st.Size = live
	}
	var err error
	switch {
	case d == nil:
	case d.all:
		err = recopyAll(m.dfd, m.srcfd, m.st.Size)
	default:
		for _, r := range d.ranges {
			if err = copyRange(m.dfd, m.srcfd, r[0], min(r[1], m.st.Size)); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = unix.Ftruncate(m.dfd, m.st.Size)
	}
	if err == nil {
		err = copyMeta(m.dfd, fd, &m.st)
	}
	if err == nil {
		err = unix.Fsync(m.dfd)
	}
	if err != nil {
		return err
	}
	m.shown = shown
	failPoint("move:synced")
	if m.st.Nlink == 1 && !orphan { // an orphan's name is no name in the mount
		if !m.marked {
			if err := m.mark(); err != nil {
				return err
			}
		}
		failPoint("move:marked")
	}
	return nil
}

// mark sets the source's marker and makes it durable: it must be on disk
// before the rename is. The source's descriptor stays while the file is
// sealed: only the move swaps it, and the move holds a reference.
func (m *move) mark() error {
	fd := m.sourceFd()
	// Under ns shared: a rename that replaced the source (renameOver)
	// marked it for its own winner, and unlinks it once that is durable;
	// then the file has no name, and a spill moves it as such.
	m.s.ns.RLock()
	if m.s.replacedMeanwhile(m.src, &m.st) {
		m.s.ns.RUnlock()
		return errReplaced
	}
	m.s.ct.hold(m.src, &m.st, m.shown)
	err := unix.Fsetxattr(fd, xattrSuperseded, []byte(m.dest.Name), 0)
	// The marker changes the source's ctime, which a program must not see.
	m.s.ct.keep(m.src, fd, m.shown)
	m.s.ns.RUnlock()
	if err != nil {
		return err
	}
	m.marked = true
	if err := unix.Fsync(fd); err != nil {
		return errors.Join(err, m.unmark())
	}
	return nil
}

// unmark takes the marker off the source again, durably: a stale marker
// would have recovery take a later move of the file with several names
// for committed.
func (m *move) unmark() error {
	fd := m.sourceFd()
	m.s.ns.RLock()
	if m.s.replacedMeanwhile(m.src, &m.st) {
		// The marker is a rename's now (renameOver), which the source's
		// unlink takes with it.
		m.s.ns.RUnlock()
		m.marked = false
		return nil
	}
	m.s.ct.hold(m.src, &m.st, m.shown)
	err := unix.Fremovexattr(fd, xattrSuperseded)
	m.s.ct.keep(m.src, fd, m.shown)
	m.s.ns.RUnlock()
	if err == nil || errors.Is(err, unix.ENODATA) {
		err = unix.Fsync(fd)
	}
	if err != nil {
		m.s.log.Error().Err(err).Str("tier", m.src.Name).Uint64("ino", m.f.ino).Msg("cannot take a failed move's marker off its source; the next mount clears it")
		return err
	}
	m.marked = false
	return nil
}

// sourceFd is the source's descriptor, before the commit swaps it.
func (m *move) sourceFd() int {
	m.f.mu.RLock()
	defer m.f.mu.RUnlock()
	return m.f.fd
}

// commit is steps 5 to 7. again says the file changed since the seal:
// seal again. The file stays sealed until the rename is durable.
func (m *move) commit() (again bool, err error) {
	if m.st.Nlink > 1 {
		// Several names, all on src: they move together (linkmove.go).
		again, err = m.commitLinked()
		if !again {
			m.unseal()
		}
		return again, err
	}
	s, f := m.s, m.f
	s.ns.Lock()
	f.mu.Lock()
	again, err = m.commitLocked()
	f.mu.Unlock()
	s.ns.Unlock()
	if m.left != nil {
		m.durable()
	}
	if !again {
		f.mu.Lock()
		close(f.sealed)
		f.sealed = nil
		f.mu.Unlock()
	}
	if m.left != nil {
		m.dropSource()
	}
	return again, err
}

// commitLocked is step 5 of a file with one name (the seal's: one with
// several is commitLinked's). Caller holds ns and f.mu exclusively.
func (m *move) commitLocked() (again bool, err error) {
	s, f := m.s, m.f
	if f.changedSinceSeal() {
		return true, nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return false, err
	}
	if st.Nlink != m.st.Nlink {
		return true, nil // linked or unlinked since the seal
	}
	comps, orphan := m.name()
	if orphan || st.Nlink == 0 {
		if m.o.Reason != ReasonSpill {
			// Deleted meanwhile: only a write that needs room moves it.
			return false, ErrGone
		}
		return false, m.commitOrphan()
	}
	if comps = s.nameOf(f, m.src, &st, comps); comps == nil {
		return false, ErrGone
	}
	dir, name := comps[:len(comps)-1], comps[len(comps)-1]
	ls, err := s.checkName(f, m.src, &st, dir, name)
	if err != nil {
		return false, err
	}
	defer ls.close()
	// The directory's copies keep their times: the entry leaves one and
	// enters the other, which a program must not see.
	destTimes := &keptTimes{t: m.dest}
	s.keepTimes(destTimes, dir)
	defer s.restoreTimes(destTimes)
	left := &leftSource{t: m.src, name: name, dev: st.Dev, ino: st.Ino,
		times: dirTimes(ls[0].dirfd), ctime: s.shownCtimeFd(m.src, ls[0].dirfd), durable: make(chan struct{})}
	if m.pfd, err = m.dest.walk(dir, s.dirMetaFor(dir)); err != nil {
		return false, err
	}
	if err := unix.Renameat(m.sfd, m.staging, m.pfd, name); err != nil {
		return false, err
	}
	m.committed = true
	failPoint("move:renamed")

	// The copy shows the source's ctime.
	s.ct.keep(m.dest, m.dfd, m.shown)
	old, oldPM := s.swapTo(f, m.src, m.dest, m.dfd, true)
	failPoint("move:swapped")
	m.bytes = m.st.Size
	m.release = append(m.release, func() {
		if oldPM != nil {
			oldPM.Close()
		}
		unix.Close(old)
	})
	// The source stays under its name, marked (lookups skip it), until
	// the rename is durable.
	left.pool = oldPM != nil && m.src.pool != nil
	left.dirfd, ls[0].dirfd = ls[0].dirfd, -1
	s.left = append(s.left, left)
	m.left = left
	return false, nil
}

// name is the name the file was last known by, a hint (nameOf checks it,
// and walks for the name the file has when the hint is gone: a node whose
// name went, and that the kernel forgot meanwhile, can say none), and
// whether the file has no name left. Caller holds ns.
func (m *move) name() (comps []string, unlinked bool) {
	s, f := m.s, m.f
	s.openMu.Lock()
	p, unlinked := f.path, f.unlinked
	s.openMu.Unlock()
	if p != nil && !unlinked {
		if c, ok := p.Components(); ok {
			comps = c
		}
	}
	return comps, unlinked
}

// commitOrphan commits the spill of an open file whose last name went:
// its copy takes the file's name in the destination's orphan directory
// and the source's goes, before the handles take the copy (orphan.go). A
// daemon killed in between leaves both names, with the same bytes (the
// file is sealed): its successor keeps one. Nothing is fsynced: the name
// is for a successor on the same running kernel. It is not counted among
// its tier's files. Caller holds ns and f.mu exclusively.
func (m *move) commitOrphan() error {
	s, f := m.s, m.f
	s.openMu.Lock()
	o := s.orphans[f.ino]
	s.openMu.Unlock()
	var srcDet *pmem.Detached
	if o != nil && m.dest.orphans < 0 {
		return fmt.Errorf("spill of an open file with no name left: tier %s has no orphan directory (read-only at mount): %w", m.dest.Name, unix.EROFS)
	}
	if o != nil {
		name := orphanName(f.ino)
		if err := unix.Renameat2(m.sfd, m.staging, m.dest.orphans, name, unix.RENAME_NOREPLACE); err != nil {
			return fmt.Errorf("spill of an open file with no name left: keep its copy's name: %w", err)
		}
		var nst unix.Stat_t
		_ = unix.Fstat(m.dfd, &nst)
		src := *o
		s.openMu.Lock()
		o.tier, o.dev, o.ino = m.dest, nst.Dev, nst.Ino
		s.openMu.Unlock()
		// The source's descriptor and mapping are closed after the
		// commit, and a pool file is recycled only then.
		srcDet = s.removeOrphan(&src, f.ino, false)
	} else {
		_ = unix.Unlinkat(m.sfd, m.staging, 0)
	}
	s.ct.keep(m.dest, m.dfd, m.shown)
	old, oldPM := s.swapTo(f, m.src, m.dest, m.dfd, false)
	m.committed = true
	m.bytes = m.st.Size
	s.openMu.Lock()
	det := f.detached // the pool's hold on the source, now free
	f.detached = nil
	s.openMu.Unlock()
	if det == nil {
		det = srcDet
	}
	m.release = append(m.release, func() {
		if oldPM != nil {
			oldPM.Close()
		}
		unix.Close(old)
		if det != nil {
			s.recycle(m.src, det)
		}
	})
	return nil
}

// checkName locates dir/name, which must be f, whose backing st
// describes, on t alone. Caller holds ns.
func (s *Store) checkName(f *File, t *Tier, st *unix.Stat_t, dir []string, name string) (locs, error) {
	ls, err := s.locate(dir, name)
	if err != nil {
		return nil, err
	}
	if len(ls) != 1 || ls[0].tier != t {
		ls.close()
		return nil, fmt.Errorf("name %q is not where the file is: %w", name, unix.ESTALE)
	}
	if ino, _ := getIno(ls[0].dirfd, name); ino != f.ino || ls[0].st.Dev != st.Dev || ls[0].st.Ino != st.Ino {
		ls.close()
		return nil, fmt.Errorf("name %q is another file now: %w", name, unix.ESTALE)
	}
	return ls, nil
}

// durable is step 6: the rename reaches the disk before any write or
// fsync of the file goes on (it is still sealed) and before the source's
// unlink can. No lock is held.
func (m *move) durable() {
	if err := fsyncDirAt(m.pfd); err != nil {
		// The rename may not be durable; the source still is the file
		// after a crash, and recovery resolves either way.
		m.s.log.Error().Err(err).Str("tier", m.dest.Name).Msg("fsync directory after move")
	}
	_ = fsyncDirAt(m.sfd)
	close(m.left.durable)
	failPoint("move:durable")
}

// dropSource is step 7: the source's unlink under ns (unless an Unlink or
// Rename of its name did it first), then its directory's fsync with no
// lock held.
func (m *move) dropSource() {
	s, l := m.s, m.left
	s.ns.Lock()
	s.dropSourceLocked(l)
	s.ns.Unlock()
	_ = fsyncDirAt(l.dirfd)
	unix.Close(l.dirfd)
	if l.detached != nil {
		m.release = append(m.release, func() { s.recycle(m.src, l.detached) })
	}
	failPoint("move:unlinked")
}

// end releases what the move holds, with no lock held (and unseals the
// file if a step failed while it was sealed): the staged copy of
// a move that did not commit (and the source's marker), or, after a
// commit, the source's last descriptors, whose close frees its pages
// (tens of ms for a large file on tmpfs, which no one else waits for).
func (m *move) end() {
	m.unseal()
	if !m.committed {
		if m.marked {
			_ = m.unmark()
		}
		if m.dfd >= 0 {
			unix.Close(m.dfd)
			_ = unix.Unlinkat(m.sfd, m.staging, 0)
		}
	}
	closeQuiet(m.pfd)
	closeQuiet(m.sfd)
	if m.committed {
		failPoint("move:release")
	}
	for _, fn := range m.release {
		fn()
	}
	if !m.srcShared {
		closeQuiet(m.srcfd)
	}
}

// leftSource is the source of a committed one-name move (or a copy a
// rename replaced on another tier: renameOver), marked, still under its
// name on its tier until the rename on the destination (the winner's
// tier) is durable: its unlink must not reach the disk first. Lookups
// skip it (its winner has the name); an Unlink or Rename of its name
// removes it first (settleLeftAt), as it would otherwise outlive the
// name's copy on the destination. Guarded by ns (Store.left).
type leftSource struct {
	t        *Tier
	dirfd    int // its directory, owned by the move
	name     string
	dev, ino uint64
	pool     bool            // a pool file: back into the pool
	times    []unix.Timespec // its directory's, to put back
	ctime    unix.Timespec
	durable  chan struct{} // closed once the destination's directory is fsynced
	done     bool
	detached *pmem.Detached
	// replaced: not a move's source but a copy a rename replaced
	// (renameOver), st its stat: it goes as an unlink's would, with its
	// usage.
	replaced bool
	st       unix.Stat_t
}

// dropSourceLocked removes l, once the rename it waits for is durable,
// if its name still holds it. Caller holds ns exclusively.
func (s *Store) dropSourceLocked(l *leftSource) {
	if l.done {
		return
	}
	<-l.durable
	l.done = true
	s.left = slices.DeleteFunc(s.left, func(x *leftSource) bool { return x == l })
	var st unix.Stat_t
	if err := unix.Fstatat(l.dirfd, l.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Dev != l.dev || st.Ino != l.ino {
		return // not there any more
	}
	if l.replaced {
		if err := s.removeFileLocked(&loc{tier: l.t, dirfd: l.dirfd, name: l.name, st: l.st}); err != nil {
			s.log.Error().Err(err).Str("tier", l.t.Name).Str("name", l.name).Msg("unlink the copy a rename replaced; recovery removes it at next mount")
		}
		return
	}
	removed := false
	if l.pool {
		if d, err := l.t.pool.Detach(l.dirfd, l.name, &st); err == nil {
			l.detached, removed = d, true
		}
	}
	if !removed {
		if err := unix.Unlinkat(l.dirfd, l.name, 0); err != nil {
			s.log.Error().Err(err).Str("tier", l.t.Name).Str("name", l.name).Msg("unlink moved source; recovery removes it at next mount")
			return
		}
	}
	if now := dirTimes(l.dirfd); now == nil || l.times == nil || now[0] != l.times[0] || now[1] != l.times[1] {
		setDirTimes(l.dirfd, l.times)
		s.ct.keep(l.t, l.dirfd, l.ctime)
	}
}

// errReplaced ends a move whose source a rename replaced while it
// sealed; like a move already in progress, a write that wanted it
// (spill) tries again, and finds it with no name once the rename is
// durable.
var errReplaced = fmt.Errorf("file replaced by a rename while it moved: %w", ErrBusy)

// replacedMeanwhile says whether the backing st describes on t is a copy
// that a rename replaced and that waits for its unlink (Store.left).
// Caller holds ns.
func (s *Store) replacedMeanwhile(t *Tier, st *unix.Stat_t) bool {
	for _, l := range s.left {
		if l.replaced && l.t == t && l.dev == st.Dev && l.ino == st.Ino {
			return true
		}
	}
	return false
}

// settleLeftAt removes the source a move left at dir/name, if any, before
// an Unlink or Rename of that name: left there, it would be the name's
// only copy once the destination's goes. Caller holds ns exclusively.
func (s *Store) settleLeftAt(dir []string, name string) {
	for _, l := range slices.Clone(s.left) {
		if l.name != name {
			continue
		}
		fd, err := l.t.walk(dir, nil)
		if err != nil {
			continue
		}
		var a, b unix.Stat_t
		same := unix.Fstat(fd, &a) == nil && unix.Fstat(l.dirfd, &b) == nil && a.Dev == b.Dev && a.Ino == b.Ino
		unix.Close(fd)
		if same {
			s.dropSourceLocked(l)
		}
	}
}

// changedSinceSeal says whether anything was recorded against f since a
// move sealed it. Caller holds f.mu exclusively.
func (f *File) changedSinceSeal() bool {
	f.dmu.Lock()
	defer f.dmu.Unlock()
	d := f.dirty
	return d != nil && (d.all || len(d.ranges) > 0 || d.sizeDirty || d.meta)
}

// rlockIO takes f.mu shared for a read, write, fallocate or fsync, once
// no move has the file sealed. Never called with ns held: the commit that
// unseals it takes ns.
func (f *File) rlockIO() {
	for {
		f.mu.RLock()
		ch := f.sealed
		if ch == nil {
			return
		}
		f.mu.RUnlock()
		<-ch
	}
}
