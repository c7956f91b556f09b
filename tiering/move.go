package tiering

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tierfs/tierfs/pmem"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
)

// A move, step by step (commit.go has a method for each; docs/design.md
// the crash analysis). The namespace lock (Store.ns), which every
// operation of the mount takes, is held only for step 5 and the unlink of
// step 7: no copy, no fsync, no close that frees the source under it.
//
//  1. Register the file as open (so every handle shares its backing) and
//     start recording the ranges that writers touch.
//  2. Copy the data, sparse-aware, into .tierfs/staging/<ino> on the
//     destination tier, without stopping I/O, writing it out a window
//     behind the copy (writtenBehind), and fdatasync it; copy and flush
//     what was written meanwhile, in passes (File.converge).
//  3. Seal, under the file's write lock only: copy the ranges left, set
//     the size, mode, owner, times and user xattrs, fsync the copy.
//  4. With one name: mark the source superseded (xattr naming the
//     destination) and fsync it. From here to step 6 the file's reads,
//     writes and fallocates wait (File.sealed); a truncate, chmod or
//     xattr by name is recorded and has step 3 run again.
//  5. Commit, under ns and the file's write lock: nothing changed since
//     the seal, the name is still this file on the source; rename the
//     copy to it on the destination (the destination is the file now),
//     swap the backing of every handle to it. Release ns.
//  6. Still under the file's lock: fsync the destination's directory, so
//     that the rename is durable before any write lands on the copy and
//     before the source's unlink can be. Reads and writes go on.
//  7. Under ns again: unlink the source (an Unlink or Rename of its name
//     in between does it first: leftSource). Then, with no lock, fsync
//     its directory and close its last descriptor, which frees its pages.
//
// A file with several names moves with all of them: its step 5 is
// commitLinked's, under a journal record (linkmove.go).
//
// Recovery at mount deletes staging files (crash before step 5: the
// source is still the file), and resolves a name found on two tiers by
// deleting the copy marked superseded (crash after it); a marker whose
// winner does not exist is cleared (crash between marking and renaming,
// or a rename that did not reach the disk before step 6).

// FailPoint, when set, is called at each named step of a move or a
// rename-over, and when a write is in the backing but has not returned
// ("write:done"); tests set it to kill the process there, or to hold it.
var FailPoint func(step string)

func failPoint(step string) {
	if FailPoint != nil {
		FailPoint(step)
	}
}

// dirtySet is the byte ranges written while a move copies.
type dirtySet struct {
	ranges    [][2]int64
	all       bool // too many ranges: recopy everything
	sizeDirty bool
	meta      bool // mode, owner, times or xattrs changed
}

const maxDirtyRanges = 4096

func (f *File) recordDirty(from, to int64) {
	if to <= from {
		return
	}
	f.dmu.Lock()
	if d := f.dirty; d != nil && !d.all {
		if n := len(d.ranges); n > 0 && d.ranges[n-1][1] >= from && d.ranges[n-1][0] <= to {
			d.ranges[n-1][0] = min(d.ranges[n-1][0], from)
			d.ranges[n-1][1] = max(d.ranges[n-1][1], to)
		} else if n >= maxDirtyRanges {
			d.all = true
			d.ranges = nil
		} else {
			d.ranges = append(d.ranges, [2]int64{from, to})
		}
	}
	f.dmu.Unlock()
}

// markMetaDirty records a change of mode, owner, times or xattrs, which a
// move's commit must copy again.
func (f *File) markMetaDirty() {
	f.dmu.Lock()
	if f.dirty != nil {
		f.dirty.meta = true
	}
	f.dmu.Unlock()
}

func (f *File) markSizeDirty() {
	f.dmu.Lock()
	if f.dirty != nil {
		f.dirty.sizeDirty = true
	}
	f.dmu.Unlock()
}

// ErrBusy is returned when the file is already being moved.
var ErrBusy = fmt.Errorf("file is being moved: %w", unix.EBUSY)

// Move relocates the file at rel (relative to the mount root) to the tier
// named to. The file may be open, mapped and written throughout. A file
// already there is not an error.
func (s *Store) Move(rel string, to string) error {
	if err := s.MoveWith(context.Background(), rel, to, MoveOptions{}); !errors.Is(err, ErrAlreadyThere) {
		return err
	}
	return nil
}

// MoveOptions shape one move.
type MoveOptions struct {
	// Ino, when non-zero, must be the file's inode number: a planner's
	// snapshot may be older than a rename or a replacement.
	Ino uint64
	// Reason is why the move was asked for, for the ledger ("" counts
	// as ReasonManual).
	Reason MoveReason
	// Limiter paces the bulk copy (shared by all moves for a bandwidth
	// cap); nil is unlimited.
	Limiter Pacer
	// Progress, if set, is told the bytes copied so far and the total.
	Progress func(done, total int64)
}

// ErrChanged is returned when the name no longer holds the file a move
// was planned for.
var ErrChanged = errors.New("file changed since it was planned")

// ErrGone is returned when the file was deleted while it was being moved
// (Kafka deletes segments at any time): there is nothing left to move.
// It is ENOENT to errors.Is, and not a failed move in the status.
var ErrGone = fmt.Errorf("file deleted while it was being moved: %w", unix.ENOENT)

// MoveWith is Move with options; ctx cancels the bulk copy. A file
// already on the tier is ErrAlreadyThere.
func (s *Store) MoveWith(ctx context.Context, rel string, to string, o MoveOptions) error {
	dest, err := s.TierByName(to)
	if err == nil {
		var f *File
		if f, err = s.acquire(RelPath(rel)); err == nil {
			defer s.release(f)
			if o.Ino == 0 || f.ino == o.Ino {
				return s.moveRecorded(ctx, f, dest, &o, rel)
			}
			err = ErrChanged
		}
	}
	s.ledger.skip(o.Reason, rel, err)
	return err
}

// acquire registers the file at p as open without a handle.
func (s *Store) acquire(p Path) (*File, error) {
	s.ns.RLock()
	defer s.ns.RUnlock()
	ls, err := s.resolve(p)
	if err != nil {
		return nil, err
	}
	defer ls.close()
	if ls[0].st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, unix.EINVAL
	}
	a, err := s.attrOf(&ls[0])
	if err != nil {
		return nil, err
	}
	return s.getFile(&ls[0], a.Ino, p)
}

// spill moves f off a full tier to another with room for it and for the
// want bytes a write still has to write: the slower tiers first, nearest
// first, then the faster ones, nearest first (a file the policy demoted
// goes no further up than it must; the policy may demote it again). The
// tiers in tried, which this write found full already, are not asked
// again: a write between two nearly full tiers must not move its file
// back and forth.
func (s *Store) spill(f *File, full *Tier, want int64, tried []*Tier) error {
	f.mu.RLock()
	cur := f.tier
	f.mu.RUnlock()
	if cur != full {
		return nil // someone moved it already: retry the write
	}
	f.acctMu.Lock()
	need := min(f.blocks, f.size) + want // sparse: its blocks; pmem: its logical size
	f.acctMu.Unlock()
	var last error = unix.ENOSPC
	for _, t := range s.spillOrder(full) {
		if slices.Contains(tried, t) {
			continue
		}
		if free := t.Free(); free <= 0 || free < need {
			continue
		}
		err := s.moveFile(f, t)
		if err == nil {
			s.log.Info().Str("path", s.currentName(f)).Str("from", full.Name).Str("to", t.Name).Uint64("ino", f.ino).Msg("tier full: file moved on")
			return nil
		}
		if errors.Is(err, ErrBusy) {
			return nil
		}
		last = err
		if !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.EDQUOT) {
			return err
		}
	}
	return last
}

// spillOrder is the tiers a file on full may spill to, in order.
func (s *Store) spillOrder(full *Tier) []*Tier {
	order := append([]*Tier(nil), s.tiers[full.Index+1:]...)
	for i := full.Index - 1; i >= 0; i-- {
		order = append(order, s.tiers[i])
	}
	return order
}

// moveFile is spill's move; a file some other move took there already
// is where spill wants it.
func (s *Store) moveFile(f *File, dest *Tier) error {
	err := s.moveRecorded(context.Background(), f, dest, &MoveOptions{Reason: ReasonSpill}, "")
	if errors.Is(err, ErrAlreadyThere) {
		return nil
	}
	return err
}

// moveFileWith moves f to dest, step by step (commit.go).
func (s *Store) moveFileWith(ctx context.Context, f *File, dest *Tier, o *MoveOptions) error {
	m, err := s.beginMove(f, dest, o)
	if m == nil {
		return err
	}
	err = m.run(ctx)
	m.end()
	return s.moveDone(f, m.src, dest, m.bytes, m.start, err)
}

// moveDone ends a move: clears the moving state, counts it on the
// ledger, logs it. Caller may hold f.mu exclusively; moveDone does not
// take it.
func (s *Store) moveDone(f *File, src, dest *Tier, bytes int64, start time.Time, err error) error {
	f.dmu.Lock()
	f.dirty = nil
	f.dmu.Unlock()
	f.moving.Store(false)
	dur := time.Since(start)
	reason, name := s.ledger.done(f, src, dest, bytes, dur, err)
	ev := s.log.Debug()
	switch Outcome(err) {
	case OutcomeFailed:
		ev = s.log.Warn().Err(err)
	case OutcomeMoved:
	default:
		ev = ev.Err(err)
	}
	if name != "" {
		ev = ev.Str("path", name)
	}
	ev.Str("reason", string(reason)).Str("from", src.Name).Str("to", dest.Name).Uint64("ino", f.ino).Int64("bytes", bytes).Int64("dur_ms", dur.Milliseconds()).Msg("move")
	return err
}

// copier copies file data, paced by a limiter and cancellable; the zero
// value copies at full speed.
type copier struct {
	ctx      context.Context
	limiter  Pacer
	progress func(done, total int64)
	done     int64
	total    int64

	// writeBehind has the copy's pages written out as it goes, a window
	// behind (see writtenBehind); synced is where that has reached.
	writeBehind bool
	synced      int64
	// noCopyRange: copy_file_range refused these two files (tiers on
	// different filesystems); the next chunks go straight to splice.
	noCopyRange bool
}

// writeBehindWindow is how much of a copy may be queued for writing or
// dirty at once when the copy writes behind itself.
const writeBehindWindow = 8 << 20

// writtenBehind starts writeback of [off,end), just copied, and waits
// for what lies more than a window before end. Left to the kernel, a
// lone copy to a slow disk dirties pages until the dirty limit throttles
// it, and the flusher writes them in bursts with the disk idle between,
// so a lone move leaves part of the disk's bandwidth unused (docs/perf.md,
// 9). With the copy feeding the disk itself, it always has a window
// queued, and the final fdatasync finds little left to do. A file system
// without sync_file_range (EINVAL, ENOSYS) is left to the kernel.
func (c *copier) writtenBehind(dst int, off, end int64) error {
	if !c.writeBehind {
		return nil
	}
	err := unix.SyncFileRange(dst, off, end-off, unix.SYNC_FILE_RANGE_WRITE)
	if err == nil && end-writeBehindWindow > c.synced {
		upTo := end - writeBehindWindow
		err = unix.SyncFileRange(dst, c.synced, upTo-c.synced,
			unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
		c.synced = upTo
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.ESPIPE) {
		c.writeBehind = false
		return nil
	}
	return err
}

// chunk is the most copied between two pacing decisions.
const chunk = 1 << 20

func copySparse(dst, src int, size int64) error {
	return (&copier{}).sparse(dst, src, size)
}

// recopyAll copies src to dst again whole: a sparse copy over the old
// one would leave the old bytes where src has a hole now.
func recopyAll(dst, src int, size int64) error {
	if err := unix.Ftruncate(dst, 0); err != nil {
		return err
	}
	return copySparse(dst, src, size)
}

func copyRange(dst, src int, from, to int64) error {
	return (&copier{}).rangeAt(dst, src, from, to)
}

// sparse copies [0,size) of src to dst, skipping holes.
func (c *copier) sparse(dst, src int, size int64) error {
	off := int64(0)
	for off < size {
		data, err := unix.Seek(src, off, unix.SEEK_DATA)
		if err != nil {
			if errors.Is(err, unix.ENXIO) {
				break // only a hole is left
			}
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				return c.rangeAt(dst, src, off, size)
			}
			return err
		}
		if data >= size {
			break
		}
		failPoint("copy:data")
		hole, err := unix.Seek(src, data, unix.SEEK_HOLE)
		if errors.Is(err, unix.ENXIO) {
			// Truncated below data since SEEK_DATA: the writes record
			// it, and the commit copies what is left and sets the size.
			break
		}
		if err != nil {
			return err
		}
		if hole > size {
			hole = size
		}
		if err := c.rangeAt(dst, src, data, hole); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// rangeAt copies [from,to) at the same offsets, with copy_file_range
// where the kernel can and a read/write loop where it cannot.
func (c *copier) rangeAt(dst, src int, from, to int64) error {
	off := from
	for off < to {
		n := min(to-off, chunk)
		if c.ctx != nil {
			if err := c.ctx.Err(); err != nil {
				return err
			}
		}
		if c.limiter != nil && c.limiter.Limit() != rate.Inf {
			n = min(n, int64(max(c.limiter.Burst(), 1)))
			if err := c.limiter.WaitN(ctxOr(c.ctx), int(n)); err != nil {
				return err
			}
		}
		m, err := c.copyChunk(dst, src, off, n)
		if err != nil {
			return err
		}
		if m == 0 {
			return nil // source shorter than expected: size is set later
		}
		if err := c.writtenBehind(dst, off, off+m); err != nil {
			return err
		}
		off += m
		c.done += m
		if c.progress != nil {
			c.progress(c.done, c.total)
		}
	}
	return nil
}

func ctxOr(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}

// copyChunk copies up to n bytes at off: copy_file_range until it is
// refused for these files, then splice, or read/write.
func (c *copier) copyChunk(dst, src int, off, n int64) (int64, error) {
	for !c.noCopyRange {
		roff, woff := off, off
		m, err := unix.CopyFileRange(src, &roff, dst, &woff, int(n), 0)
		if err == nil {
			return int64(m), nil
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if !errors.Is(err, unix.EXDEV) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) {
			return 0, err
		}
		c.noCopyRange = true
	}
	// Tiers on different filesystems (tmpfs to xfs): the kernel copies
	// once through a pipe, or, where a filesystem cannot splice, a
	// read/write loop copies twice.
	m, err := copySplice(dst, src, off, n)
	if errors.Is(err, errNoSplice) {
		if err := copyLoop(dst, src, off, off+n); err != nil {
			return 0, err
		}
		return n, nil
	}
	return m, err
}

var errNoSplice = errors.New("no splice between these files")

// copySplice copies up to n bytes at off from src to dst, at the same
// offsets, through a pipe: splice moves references to src's pages into
// the pipe and copies them once into dst, where a read/write loop copies
// twice (in and out of a buffer) and takes twice the CPU a move competes
// for with the application. It returns the bytes copied (fewer at src's
// end) or errNoSplice when a file cannot splice, before copying any.
func copySplice(dst, src int, off, n int64) (int64, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return 0, err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	// A pipe as large as a chunk where allowed (pipe-max-size, 1 MiB by
	// default); a smaller one only means more turns.
	unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, chunk)
	roff, woff := off, off
	var done int64
	for done < n {
		k, err := unix.Splice(src, &roff, p[1], nil, int(n-done), unix.SPLICE_F_MOVE)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return done, spliceErr(err, done)
		}
		if k == 0 {
			break // src ends here
		}
		for k > 0 {
			w, err := unix.Splice(p[0], nil, dst, &woff, int(k), unix.SPLICE_F_MOVE)
			if err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return done, spliceErr(err, done)
			}
			k -= w
			done += w
		}
	}
	return done, nil
}

// spliceErr is what copySplice returns for a failed splice after done
// bytes: errNoSplice when nothing is copied yet and a file cannot splice.
func spliceErr(err error, done int64) error {
	if done == 0 && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
		return errNoSplice
	}
	return err
}

func copyLoop(dst, src int, from, to int64) error {
	buf := make([]byte, 1<<20)
	for off := from; off < to; {
		n, err := unix.Pread(src, buf[:min(int64(len(buf)), to-off)], off)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		if n == 0 {
			return nil
		}
		for w := 0; w < n; {
			m, err := unix.Pwrite(dst, buf[w:n], off+int64(w))
			if err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return err
			}
			w += m
		}
		off += int64(n)
	}
	return nil
}

// nameOf is the name of f, whose backing st describes on src: comps, the
// name it was last known by, if that still is it; else the name a walk of
// src finds (a name given by a move by path does not follow renames, nor
// does one that was unlinked while another name was left), which f then
// keeps. nil if it has none. Caller holds ns and f.mu.
func (s *Store) nameOf(f *File, src *Tier, st *unix.Stat_t, comps []string) []string {
	if len(comps) > 0 {
		ls, err := s.locate(comps[:len(comps)-1], comps[len(comps)-1])
		if err == nil {
			same := len(ls) == 1 && ls[0].tier == src && ls[0].st.Dev == st.Dev && ls[0].st.Ino == st.Ino
			ls.close()
			if same {
				return comps
			}
		}
	}
	names, err := findNames(src, st.Dev, st.Ino, 1)
	if err != nil || len(names) == 0 {
		return nil
	}
	s.openMu.Lock()
	if !f.unlinked {
		f.path = RelPath(strings.Join(names[0], "/"))
	}
	s.openMu.Unlock()
	return names[0]
}

// convergePasses bounds the passes of converge: a file written faster
// than the copy goes is left to step 3.
const convergePasses = 3

// converge copies the ranges written since the bulk copy from src to dst
// and flushes them, pass after pass until a pass finds none, holding no
// lock while it copies. Taking the set of ranges waits for the writes
// that recorded them (they hold f.mu shared from the record to the
// write), so that what a pass copies is what they wrote; writes after
// that go to the next set.
func (f *File) converge(dst, src int) error {
	for range convergePasses {
		f.mu.Lock()
		f.dmu.Lock()
		d := f.dirty
		f.dirty = &dirtySet{}
		f.dmu.Unlock()
		f.mu.Unlock()
		if d == nil || (!d.all && len(d.ranges) == 0 && !d.sizeDirty) {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Fstat(src, &st); err != nil {
			return err
		}
		size := st.Size
		f.mu.RLock()
		if live, ok := f.liveSize(); ok {
			size = live
		}
		f.mu.RUnlock()
		var err error
		if d.all {
			err = recopyAll(dst, src, size)
		} else {
			for _, r := range d.ranges {
				if err = copyRange(dst, src, r[0], min(r[1], size)); err != nil {
					break
				}
			}
		}
		if err == nil && d.sizeDirty {
			// The copy takes the size the source had when this set was
			// taken: a cut's bytes must not wait in the copy for the file
			// to grow back over them (what changed it since is in the next
			// set).
			err = unix.Ftruncate(dst, size)
		}
		if err == nil {
			err = unix.Fdatasync(dst)
		}
		// A set whose size changed must be judged at the commit again.
		if d.sizeDirty {
			f.markSizeDirty()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// noatime opens fd's file again for reading without updating its atime
// (root may: O_NOATIME needs CAP_FOWNER); fd itself where it cannot.
func noatime(fd int) int {
	r, err := unix.Open(fdPath(fd), unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err != nil {
		return fd
	}
	return r
}

func closeIfNot(fd, other int) {
	if fd != other {
		unix.Close(fd)
	}
}

// dirTimes is a directory's atime and mtime, for setDirTimes.
func dirTimes(fd int) []unix.Timespec {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return nil
	}
	return []unix.Timespec{st.Atim, st.Mtim}
}

// shownDirTimes is dirTimes of the copy of dir that the mount shows (the
// first tier's that has one).
func (s *Store) shownDirTimes(dir []string) []unix.Timespec {
	for _, t := range s.tiers {
		if fd, err := t.walk(dir, nil); err == nil {
			defer unix.Close(fd)
			return dirTimes(fd)
		}
	}
	return nil
}

// shownCtimeFd is the ctime shown for the object open as fd on tier t.
func (s *Store) shownCtimeFd(t *Tier, fd int) unix.Timespec {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return unix.Timespec{}
	}
	return s.ct.shown(t, &st)
}

// shownDirCtime is the ctime shown for directory dir (its first copy's).
func (s *Store) shownDirCtime(dir []string) unix.Timespec {
	for _, t := range s.tiers {
		if fd, err := t.walk(dir, nil); err == nil {
			defer unix.Close(fd)
			return s.shownCtimeFd(t, fd)
		}
	}
	return unix.Timespec{}
}

// setDirTimes puts back what dirTimes read, on the directory fd is.
func setDirTimes(fd int, ts []unix.Timespec) {
	if ts != nil {
		_ = unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH)
	}
}

// copyMeta gives dst the source's mode, owner, xattrs (tierfs's inode
// number among them; not the move's marker nor a pmem size, which the copy,
// a plain file, does not have) and times.
func copyMeta(dst, src int, st *unix.Stat_t) error {
	if err := unix.Fchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := unix.Fchmod(dst, st.Mode&0o7777); err != nil {
		return err
	}
	if err := copyXattrs(dst, src, func(name string) bool { return name != xattrSuperseded && name != pmem.SizeXattr }); err != nil {
		return err
	}
	return setTimesFd(dst, []unix.Timespec{st.Atim, st.Mtim})
}
