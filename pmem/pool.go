//go:build linux

package pmem

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// ErrEmpty is Take's answer when no slot is free: the caller creates the
// file the plain way.
var ErrEmpty = errors.New("pmem: pool is empty")

// ErrPoolClosed is returned by a closed Pool.
var ErrPoolClosed = errors.New("pmem: pool is closed")

// Pool file names. A slot is created as tmpPrefix+N, allocated, written
// with zeros, given a zero logical size and fsynced, and only then renamed
// to slotPrefix+N. A returned file is renamed in as tmpPrefix+N, zeroed the
// quick way (ZERO_RANGE, or PUNCH_HOLE and fallocate), fsynced and renamed
// to coldPrefix+N; Run later writes zeros over a cold slot and renames it
// to slotPrefix+N. So a crash leaves only whole, zeroed slot-N and cold-N
// files and tmp-N files that OpenPool removes, and no slot ever holds an
// earlier file's data under its name.
//
// Why write zeros when fallocate already reads back zeros: a page that is
// allocated but was never written must still be cleared when it is first
// touched, and a write fault through a mapping cannot skip that the way a
// whole-page pwrite does (on tmpfs; on a DAX filesystem it is worse, the
// first fault converts an unwritten extent, synchronously under MAP_SYNC).
// Writing the zeros in the background moves that cost off the write path:
// on the tmpfs here it is what makes mmap copies beat pwrite (see
// BenchmarkAppend).
const (
	slotPrefix = "slot-"
	coldPrefix = "cold-"
	tmpPrefix  = "tmp-"
)

// Slots is the number of free slots a pool on a tier of capacity bytes
// keeps: floor(PoolRatio·capacity / SegmentSize).
func (c Config) Slots(capacity int64) int {
	if capacity <= 0 || c.SegmentSize <= 0 {
		return 0
	}
	return int(math.Floor(c.PoolRatio * float64(capacity) / float64(c.SegmentSize)))
}

// Pool is a directory of preallocated SegmentSize files (slots) on a pmem
// tier, on the filesystem of the files that take them (Take and Return
// rename).
//
// Accounting: the pool aims at Target free slots. Take hands one out (it
// counts as used until it comes back) and wakes Run, which makes a new one,
// so the pool is refilled as segments are created; the space those use is
// the tier's, as for any file, and a fill that meets ENOSPC stops there.
// Return recycles a file as a free (cold) slot while the pool is short of
// Target, and otherwise just removes it; Run warms cold slots. SetTarget
// changes the target (to give space back to a tier that runs short).
// usedBytes counts slots taken and not returned since OpenPool.
//
// All methods are safe for concurrent use.
type Pool struct {
	dir    string
	dirfd  int
	seg    int64
	target int
	log    zerolog.Logger

	mu      sync.Mutex
	free    []int64 // numbers of the free slots written with zeros
	cold    []int64 // numbers of the free slots only zeroed by fallocate
	pending int     // slots being made, recycled, warmed or taken
	next    int64   // next slot number
	used    int64   // bytes taken and not returned
	duty    float64 // Run's share of wall time spent making slots
	closed  bool

	kick chan struct{}
	// idle is signalled (with mu) whenever pending drops.
	idle *sync.Cond
}

// pendingDone ends one piece of pending work. Caller holds mu.
func (p *Pool) pendingDone() {
	p.pending--
	p.idle.Broadcast()
}

// OpenPool opens (creating it if needed) the pool directory dir on a tier
// of capacity bytes. It removes what an interrupted fill or return left
// (tmp-*), slots of the wrong size (SegmentSize changed) and slots past the
// target (PoolRatio lowered), and checks that the filesystem keeps user
// xattrs, which the logical size of a pool file needs. It does not fill the
// pool: call Fill or Run.
func OpenPool(dir string, cfg Config, capacity int64, log zerolog.Logger) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pmem: pool: %w", err)
	}
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("pmem: pool: open %s: %w", dir, err)
	}
	p := &Pool{
		dir:    dir,
		dirfd:  dirfd,
		seg:    int64(cfg.SegmentSize),
		target: cfg.Slots(capacity),
		log:    log.With().Str("pool", dir).Logger(),
		duty:   0.5,
		kick:   make(chan struct{}, 1),
	}
	p.idle = sync.NewCond(&p.mu)
	if err := p.scan(); err != nil {
		unix.Close(dirfd)
		return nil, err
	}
	if err := p.probeXattr(); err != nil {
		unix.Close(dirfd)
		return nil, err
	}
	if _, err := p.trim(); err != nil {
		unix.Close(dirfd)
		return nil, err
	}
	p.log.Debug().Int("slots", len(p.free)+len(p.cold)).Int("target", p.target).Msg("pmem pool opened")
	return p, nil
}

// scan reads the directory: removes leftovers, collects the slots.
func (p *Pool) scan() error {
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return fmt.Errorf("pmem: pool: %w", err)
	}
	removed := 0
	remove := func(name, why string) error {
		if err := unix.Unlinkat(p.dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("pmem: pool: remove %s: %w", name, err)
		}
		p.log.Info().Str("file", name).Str("why", why).Msg("pmem pool: removed")
		removed++
		return nil
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, tmpPrefix):
			if err := remove(name, "left by an interrupted fill or return"); err != nil {
				return err
			}
		case strings.HasPrefix(name, slotPrefix), strings.HasPrefix(name, coldPrefix):
			cold := strings.HasPrefix(name, coldPrefix)
			n, err := strconv.ParseInt(name[len(slotPrefix):], 10, 64)
			if err != nil || n < 0 {
				p.log.Warn().Str("file", name).Msg("pmem pool: unknown file left alone")
				continue
			}
			p.next = max(p.next, n+1)
			var st unix.Stat_t
			if err := unix.Fstatat(p.dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("pmem: pool: %w", err)
			}
			if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != p.seg || st.Blocks*512 < p.seg {
				if err := remove(name, "not a whole slot of segment_size"); err != nil {
					return err
				}
				continue
			}
			if cold {
				p.cold = append(p.cold, n)
			} else {
				p.free = append(p.free, n)
			}
		default:
			p.log.Warn().Str("file", name).Msg("pmem pool: unknown file left alone")
		}
	}
	sort.Slice(p.free, func(i, j int) bool { return p.free[i] < p.free[j] })
	sort.Slice(p.cold, func(i, j int) bool { return p.cold[i] < p.cold[j] })
	if removed > 0 {
		return p.syncDir()
	}
	return nil
}

func (p *Pool) probeXattr() error {
	name := tmpPrefix + "probe"
	fd, err := unix.Openat(p.dirfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("pmem: pool: %w", err)
	}
	defer unix.Unlinkat(p.dirfd, name, 0)
	defer unix.Close(fd)
	if err := setSizeXattr(fd, 0); err != nil {
		return fmt.Errorf("pmem: pool %s: the filesystem must keep trusted xattrs: %w", p.dir, err)
	}
	return nil
}

// Dir returns the pool directory.
func (p *Pool) Dir() string { return p.dir }

// SegmentSize returns the size of one slot.
func (p *Pool) SegmentSize() int64 { return p.seg }

// Target returns the number of free slots the pool aims at.
func (p *Pool) Target() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.target
}

// Stats returns the number of free slots (cold ones included), their
// bytes, and the bytes of slots taken and not returned since OpenPool.
func (p *Pool) Stats() (slots, freeBytes, usedBytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := int64(len(p.free) + len(p.cold))
	return n, n * p.seg, p.used
}

// Cold returns the number of free slots not yet written with zeros (Run
// or Fill warms them).
func (p *Pool) Cold() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.cold)
}

// slotName is the name of slot n.
func slotName(n int64, cold bool) string {
	if cold {
		return coldPrefix + strconv.FormatInt(n, 10)
	}
	return slotPrefix + strconv.FormatInt(n, 10)
}

// SetFillDuty sets the share (0..1] of wall time Run spends making slots:
// after a slot that took d it sleeps d·(1-duty)/duty. The default is 0.5.
func (p *Pool) SetFillDuty(duty float64) {
	if !(duty > 0) || duty > 1 {
		duty = 1
	}
	p.mu.Lock()
	p.duty = duty
	p.mu.Unlock()
}

// Close releases the pool directory. Stop Run (cancel its context and wait
// for it) first; later calls fail with ErrPoolClosed.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrPoolClosed
	}
	p.closed = true
	return unix.Close(p.dirfd)
}

// reserve books a slot number for a new slot if the pool is short of its
// target.
func (p *Pool) reserve() (n int64, ok bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, false, ErrPoolClosed
	}
	if len(p.free)+len(p.cold)+p.pending >= p.target {
		return 0, false, nil
	}
	p.pending++
	n = p.next
	p.next++
	return n, true, nil
}

// reserveCold books a cold slot for warming.
func (p *Pool) reserveCold() (n int64, ok bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, false, ErrPoolClosed
	}
	if len(p.cold) == 0 {
		return 0, false, nil
	}
	n = p.cold[0]
	p.cold = p.cold[1:]
	p.pending++
	return n, true, nil
}

// work does one step of filling: warms a cold slot, else makes a slot if
// the pool is short. did is false when there was nothing to do.
func (p *Pool) work() (did bool, err error) {
	if n, ok, err := p.reserveCold(); err != nil {
		return false, err
	} else if ok {
		err := p.warm(n)
		p.mu.Lock()
		p.pendingDone()
		if err == nil {
			p.free = append(p.free, n)
		} else {
			p.cold = append(p.cold, n)
		}
		p.mu.Unlock()
		return true, err
	}
	n, ok, err := p.reserve()
	if err != nil || !ok {
		return false, err
	}
	err = p.makeSlot(n)
	p.settle(n, err == nil)
	return true, err
}

// settle ends a reservation; the slot is free if ok.
func (p *Pool) settle(n int64, ok bool) {
	p.mu.Lock()
	p.pendingDone()
	if ok {
		p.free = append(p.free, n)
	}
	p.mu.Unlock()
}

// Fill warms the cold slots and makes slots until the pool holds Target,
// at full speed, and returns when no slot is being made, warmed or
// recycled elsewhere (by Run, Return) either: then the pool holds Target
// warm free slots, or an error says why not. It stops at the first error
// (ENOSPC included: errors.Is(err, unix.ENOSPC)) or when ctx is done,
// keeping the slots made so far.
func (p *Pool) Fill(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		did, err := p.work()
		if err != nil {
			return err
		}
		if did {
			continue
		}
		p.mu.Lock()
		waited := false
		for p.pending > 0 && !p.closed {
			p.idle.Wait()
			waited = true
		}
		p.mu.Unlock()
		if !waited {
			return nil
		}
	}
}

// Run keeps the pool filled until ctx is done: it fills it, then makes a
// new slot whenever Take (or a failed Return, or SetTarget) leaves it
// short and warms the slots Return leaves cold, one slot at a time, paced
// by SetFillDuty. After an error (a full tier) it waits a while before
// trying again. It returns ctx's error.
func (p *Pool) Run(ctx context.Context) error {
	const retry = 10 * time.Second
	tick := time.NewTicker(retry)
	defer tick.Stop()
	var lastErr error
	for {
		failed := false
		for {
			start := time.Now()
			did, err := p.work()
			if errors.Is(err, ErrPoolClosed) {
				return err
			}
			if err == nil && !did {
				break
			}
			if err != nil {
				if lastErr == nil || lastErr.Error() != err.Error() {
					p.log.Warn().Err(err).Msg("pmem pool: cannot make a slot; retrying later")
				}
				lastErr = err
				failed = true
				break
			}
			lastErr = nil
			p.mu.Lock()
			duty := p.duty
			p.mu.Unlock()
			if pause := time.Duration(float64(time.Since(start)) * (1 - duty) / duty); pause > 0 {
				t := time.NewTimer(pause)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-t.C:
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		if failed {
			// Not woken by Take: a full tier stays full for a while.
			t := time.NewTimer(retry)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.kick:
			// A segment was just taken: its writer (and the broker's
			// other files of the roll) come first; refilling at once
			// would compete with them for CPU and memory bandwidth.
			t := time.NewTimer(RefillDelay)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		case <-tick.C:
		}
	}
}

// RefillDelay is how long Run waits after a Take (or a Return) before it
// makes slots again: rolls are rare and the pool holds many slots, so the
// refill never needs to compete with the roll that woke it.
var RefillDelay = 100 * time.Millisecond

func (p *Pool) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// makeSlot creates slot-n: tmp-n, allocated, logical size 0, fsynced,
// renamed.
func (p *Pool) makeSlot(n int64) (err error) {
	tmp, slot := tmpPrefix+strconv.FormatInt(n, 10), slotPrefix+strconv.FormatInt(n, 10)
	fd, err := unix.Openat(p.dirfd, tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("pmem: pool: create %s: %w", tmp, err)
	}
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
		if err != nil {
			unix.Unlinkat(p.dirfd, tmp, 0)
		}
	}()
	// fallocate first: ENOSPC now rather than half way through the
	// zeros.
	if err := allocate(fd, 0, p.seg); err != nil {
		return fmt.Errorf("pmem: pool: allocate %s: %w", tmp, err)
	}
	if !noWarm {
		if err := writeZeros(fd, 0, p.seg); err != nil {
			return fmt.Errorf("pmem: pool: zero %s: %w", tmp, err)
		}
	}
	if err := setSizeXattr(fd, 0); err != nil {
		return err
	}
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("pmem: pool: fsync %s: %w", tmp, err)
	}
	err = unix.Close(fd)
	fd = -1
	if err != nil {
		return fmt.Errorf("pmem: pool: close %s: %w", tmp, err)
	}
	if err := unix.Renameat(p.dirfd, tmp, p.dirfd, slot); err != nil {
		return fmt.Errorf("pmem: pool: rename %s: %w", tmp, err)
	}
	return p.syncDir()
}

// warm writes zeros over cold slot n and renames it to slot-n.
func (p *Pool) warm(n int64) error {
	cold := slotName(n, true)
	fd, err := unix.Openat(p.dirfd, cold, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("pmem: pool: open %s: %w", cold, err)
	}
	if !noWarm {
		err = writeZeros(fd, 0, p.seg)
	}
	if err == nil {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(p.dirfd, cold, p.dirfd, slotName(n, false))
	}
	if err != nil {
		return fmt.Errorf("pmem: pool: warm %s: %w", cold, err)
	}
	return p.syncDir()
}

// noWarm turns the writing of zeros off (benchmarks compare).
var noWarm = false

func (p *Pool) syncDir() error {
	if err := unix.Fsync(p.dirfd); err != nil {
		return fmt.Errorf("pmem: pool: fsync %s: %w", p.dir, err)
	}
	return nil
}

// Take renames a free slot to name in the directory dirfd, which must be
// on the pool's filesystem, and which must not already hold name (EEXIST:
// the rename is RENAME_NOREPLACE). The file is SegmentSize long, allocated,
// zeroed, has a logical size of 0 (open it with OpenFile) and no other
// xattr, and is mode 0600, owned by the pool's user: the caller sets mode,
// owner and its own attributes as after a create. Warm slots
// go first; a cold one is as good but its first writes are slower. With no free
// slot it returns ErrEmpty at once and the caller creates the file itself.
// Take does not fsync dirfd; the rename is atomic either way.
func (p *Pool) Take(dirfd int, name string) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrPoolClosed
	}
	var n int64
	cold := len(p.free) == 0
	switch {
	case !cold:
		n = p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
	case len(p.cold) > 0:
		n = p.cold[len(p.cold)-1]
		p.cold = p.cold[:len(p.cold)-1]
	default:
		p.mu.Unlock()
		p.wake()
		return ErrEmpty
	}
	p.pending++ // keeps a concurrent fill from replacing it before we know
	p.mu.Unlock()
	err := unix.Renameat2(p.dirfd, slotName(n, cold), dirfd, name, unix.RENAME_NOREPLACE)
	p.mu.Lock()
	p.pendingDone()
	switch {
	case err != nil && cold:
		p.cold = append(p.cold, n)
	case err != nil:
		p.free = append(p.free, n)
	default:
		p.used += p.seg
	}
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("pmem: pool: take %s: %w", name, err)
	}
	p.wake()
	return nil
}

// Return takes the file name in dirfd back (whatever its size, from the
// pool or not): Detach, then Recycle. It takes about as long as
// fallocating the segment (BenchmarkSegmentRoll): call it off any
// latency-critical path, or Detach there and Recycle later.
//
// The caller must make sure that nothing still has the file open or mapped
// (a File on it must be closed first).
func (p *Pool) Return(dirfd int, name string) error {
	d, err := p.Detach(dirfd, name, nil)
	if err != nil {
		return err
	}
	return d.Recycle()
}

// Detached is a file renamed into the pool and not yet recycled. A crash
// before Recycle leaves a tmp-N that OpenPool removes.
type Detached struct {
	p       *Pool
	n       int64
	tmp     string
	recycle bool
	done    bool
}

// Detach renames the file name in dirfd into the pool at once, out of
// every namespace the tier shows (the unlink of a segment, as quick as a
// rename), and books it as returned. Files still open on it keep working:
// call Recycle once the last of them is closed and unmapped, to resize it
// to SegmentSize, zero and reallocate it (ZERO_RANGE, or PUNCH_HOLE then
// fallocate), give it a logical size of 0, strip its other xattrs, chmod
// 0600 and chown it to us, fsync it and rename it to a fresh cold slot, so
// that a recycled slot never shows the old file's data or metadata. If the
// pool is at Target, Recycle removes the file instead. Detach does not
// fsync dirfd. With want, the file must be that one (device and inode):
// what the rename took is checked, and put back if it is another, since
// recycling zeroes it.
func (p *Pool) Detach(dirfd int, name string, want *unix.Stat_t) (*Detached, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fmt.Errorf("pmem: pool: return %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("pmem: pool: return %s: not a regular file: %w", name, unix.EINVAL)
	}
	if want == nil {
		want = &st
	}
	if st.Dev != want.Dev || st.Ino != want.Ino {
		return nil, fmt.Errorf("pmem: pool: return %s: another file now: %w", name, unix.ESTALE)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrPoolClosed
	}
	p.used = max(0, p.used-p.seg)
	n := p.next
	p.next++
	recycle := len(p.free)+len(p.cold)+p.pending < p.target
	if recycle {
		p.pending++
	}
	p.mu.Unlock()
	d := &Detached{p: p, n: n, tmp: tmpPrefix + strconv.FormatInt(n, 10), recycle: recycle}
	if err := unix.Renameat2(dirfd, name, p.dirfd, d.tmp, unix.RENAME_NOREPLACE); err != nil {
		if recycle {
			p.settle(n, false)
		}
		return nil, fmt.Errorf("pmem: pool: return %s: %w", name, err)
	}
	var got unix.Stat_t
	if err := unix.Fstatat(p.dirfd, d.tmp, &got, unix.AT_SYMLINK_NOFOLLOW); err != nil || got.Dev != want.Dev || got.Ino != want.Ino {
		// Swapped between the stat and the rename: not ours to zero.
		_ = unix.Renameat2(p.dirfd, d.tmp, dirfd, name, unix.RENAME_NOREPLACE)
		if recycle {
			p.settle(n, false)
		}
		return nil, fmt.Errorf("pmem: pool: return %s: another file now: %w", name, unix.ESTALE)
	}
	return d, nil
}

// Recycle makes the detached file a cold slot (or removes it, see
// Detach). Nothing may have the file open or mapped any more. Only the
// first call does anything.
func (d *Detached) Recycle() error {
	if d.done {
		return nil
	}
	d.done = true
	p := d.p
	if !d.recycle {
		if err := unix.Unlinkat(p.dirfd, d.tmp, 0); err != nil {
			return fmt.Errorf("pmem: pool: remove %s: %w", d.tmp, err)
		}
		return nil
	}
	err := p.recycle(d.n, d.tmp)
	p.mu.Lock()
	p.pendingDone()
	if err == nil {
		p.cold = append(p.cold, d.n)
	}
	p.mu.Unlock()
	p.wake()
	if err != nil {
		unix.Unlinkat(p.dirfd, d.tmp, 0)
		return fmt.Errorf("pmem: pool: recycle %s: %w", d.tmp, err)
	}
	return nil
}

func (p *Pool) recycle(n int64, tmp string) error {
	fd, err := unix.Openat(p.dirfd, tmp, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}()
	if err := unix.Ftruncate(fd, p.seg); err != nil {
		return err
	}
	if err := zeroFile(fd, 0, p.seg); err != nil {
		return err
	}
	if err := scrubMeta(fd); err != nil {
		return err
	}
	if err := setSizeXattr(fd, 0); err != nil {
		return err
	}
	if err := unix.Fsync(fd); err != nil {
		return err
	}
	err = unix.Close(fd)
	fd = -1
	if err != nil {
		return err
	}
	if err := unix.Renameat(p.dirfd, tmp, p.dirfd, slotName(n, true)); err != nil {
		return err
	}
	return p.syncDir()
}

// SetTarget changes the number of free slots the pool aims at (for
// instance to give space back to a tier that runs short) and removes the
// free slots past it at once. It returns how many it removed. Run makes
// new slots if the target went up.
func (p *Pool) SetTarget(target int) (int, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, ErrPoolClosed
	}
	p.target = max(target, 0)
	p.mu.Unlock()
	p.wake()
	return p.trim()
}

// trim removes the free slots past the target, cold ones first, the
// newest first.
func (p *Pool) trim() (int, error) {
	p.mu.Lock()
	k := max(0, min(len(p.free)+len(p.cold), len(p.free)+len(p.cold)+p.pending-p.target))
	var victims []string
	for ; k > 0 && len(p.cold) > 0; k-- {
		victims = append(victims, slotName(p.cold[len(p.cold)-1], true))
		p.cold = p.cold[:len(p.cold)-1]
	}
	for ; k > 0; k-- {
		victims = append(victims, slotName(p.free[len(p.free)-1], false))
		p.free = p.free[:len(p.free)-1]
	}
	p.mu.Unlock()
	for i, name := range victims {
		if err := unix.Unlinkat(p.dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			// What is left stays on disk; OpenPool will find it.
			return i, fmt.Errorf("pmem: pool: remove a slot: %w", err)
		}
	}
	if len(victims) > 0 {
		p.log.Info().Int("removed", len(victims)).Msg("pmem pool: slots past the target removed")
	}
	return len(victims), nil
}

// scrubMeta gives a returned file the metadata of a fresh slot: no
// extended attribute of its earlier life (a user's data, tierfs's inode
// number) survives, and it is mode 0600, owned by us where we may chown.
func scrubMeta(fd int) error {
	for {
		n, err := unix.Flistxattr(fd, nil)
		if err != nil {
			if errors.Is(err, unix.ENOTSUP) {
				break
			}
			return fmt.Errorf("flistxattr: %w", err)
		}
		if n == 0 {
			break
		}
		buf := make([]byte, n)
		n, err = unix.Flistxattr(fd, buf)
		if errors.Is(err, unix.ERANGE) {
			continue // grew under us
		}
		if err != nil {
			return fmt.Errorf("flistxattr: %w", err)
		}
		for _, name := range strings.Split(string(buf[:n]), "\x00") {
			if name == "" || name == SizeXattr {
				continue
			}
			if err := unix.Fremovexattr(fd, name); err != nil && !errors.Is(err, unix.ENODATA) {
				return fmt.Errorf("fremovexattr %s: %w", name, err)
			}
		}
		break
	}
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return fmt.Errorf("fchmod: %w", err)
	}
	if err := unix.Fchown(fd, os.Geteuid(), os.Getegid()); err != nil && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("fchown: %w", err)
	}
	return nil
}
