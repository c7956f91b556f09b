package tiering

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"time"

	"github.com/tierfs/tierfs/pmem"
	"golang.org/x/sys/unix"
)

// The pmem pool of a tier (package pmem): a pmem tier keeps free
// preallocated segment files in .tierfs/pool. A pool-shaped file
// (pmem.Config.PoolFiles, a Kafka segment by default) created on the tier
// takes one by rename instead of being created, and is written through a
// mapping (File.pm). Removing such a file (unlink, or the last step of a
// move off the tier) renames it back into the pool at once (Detach) and
// recycles it, zeroed, once nothing has it open any more.
//
// Space: a tier's used bytes are its files' (a taken slot counts whole);
// free slots are not used space but room, so Free adds them. The pool
// aims at PoolRatio of the capacity in free slots, but never more than the
// capacity leaves beside the files (retarget), so that files and free
// slots together fit. The target follows the tier's usage: every change
// of it (Tier.addUsed: a write, a truncate, a create, an unlink, a move
// in or out) wakes the tier's retargeter (runRetarget), which sets the
// target again in the background, and it also does so every
// retargetEvery for what tierfs does not see (other files on the backing
// filesystem).

const poolDir = "pool"

// openPools opens and starts the pool of every pmem tier.
func (s *Store) openPools() error {
	cfg := s.opts.PMem
	if cfg == nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.poolCancel = cancel
	for _, t := range s.tiers {
		if t.Type != TypePMem || cfg.PoolRatio <= 0 {
			continue
		}
		p, err := pmem.OpenPool(filepath.Join(t.Path, metaDir, poolDir), *cfg, t.Capacity(), s.log)
		if err != nil {
			return err
		}
		t.pool, t.poolCfg, t.minFree = p, *cfg, s.opts.MinFree
		t.kick = make(chan struct{}, 1)
		t.retarget()
		s.poolWG.Add(2)
		go func() {
			defer s.poolWG.Done()
			if err := p.Run(ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, pmem.ErrPoolClosed) {
				s.log.Error().Err(err).Str("tier", t.Name).Msg("pmem pool stopped")
			}
		}()
		go func() {
			defer s.poolWG.Done()
			t.runRetarget(ctx)
		}()
	}
	return nil
}

// closePools stops the pools' fill and waits for recycling in flight.
func (s *Store) closePools() {
	if s.poolCancel != nil {
		s.poolCancel()
	}
	s.poolWG.Wait()
	s.recycleWG.Wait()
	for _, t := range s.tiers {
		if t.pool != nil {
			t.pool.Close()
			t.pool = nil
		}
	}
}

// retarget sets the pool's target: PoolRatio of the capacity, at most
// what the files leave free, and never so much that the backing
// filesystem keeps less than a twentieth of itself (or MinFree) for other
// files.
func (t *Tier) retarget() {
	p := t.pool
	if p == nil {
		return
	}
	c := t.Capacity()
	room := c - t.used.Load()
	var st unix.Statfs_t
	if err := unix.Fstatfs(t.root, &st); err == nil {
		fsSize := int64(st.Blocks) * st.Bsize
		avail := int64(st.Bavail)*st.Bsize + t.poolFree()
		room = min(room, avail-max(fsSize/20, t.minFree))
	}
	want := min(int64(t.poolCfg.PoolRatio*float64(c)), room) / p.SegmentSize()
	want = max(want, 0)
	if int(want) != p.Target() {
		if _, err := p.SetTarget(int(want)); err != nil && !errors.Is(err, pmem.ErrPoolClosed) {
			// What could not be removed stays; OpenPool trims it later.
			return
		}
	}
}

// poolFree is the bytes of the tier's free pool slots.
func (t *Tier) poolFree() int64 {
	if t.pool == nil {
		return 0
	}
	_, free, _ := t.pool.Stats()
	return free
}

// takeSlot makes dir/name (dir's fd pfd) a pool file of t: a free slot
// renamed there, opened and mapped, given the inode number, mode and
// owner of a new file. ok is false when the file is not pool-shaped or the
// pool is empty: the caller creates it the plain way.
func (s *Store) takeSlot(t *Tier, pfd int, dir []string, name string, mode uint32, o Owner, ino uint64) (fd int, pm *pmem.File, ok bool, err error) {
	if t.pool == nil || len(dir) == 0 || !t.poolCfg.Matches(dir[len(dir)-1], name) {
		return -1, nil, false, nil
	}
	if err := t.pool.Take(pfd, name); err != nil {
		if errors.Is(err, pmem.ErrEmpty) || errors.Is(err, pmem.ErrPoolClosed) {
			return -1, nil, false, nil
		}
		return -1, nil, false, err
	}
	// The name is a pool file now, with the size attribute.
	s.forgetPlain(ino)
	undo := func(err error) (int, *pmem.File, bool, error) {
		if pm != nil {
			pm.Close()
		}
		if fd >= 0 {
			unix.Close(fd)
		}
		if d, derr := t.pool.Detach(pfd, name, nil); derr == nil {
			s.recycle(t, d)
		} else {
			_ = unix.Unlinkat(pfd, name, 0)
		}
		return -1, nil, false, err
	}
	fd, err = unix.Openat(pfd, name, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		fd = -1
		return undo(err)
	}
	if err := setInoFd(fd, ino); err != nil {
		return undo(err)
	}
	if err := unix.Fchmod(fd, mode&0o7777); err != nil {
		return undo(err)
	}
	if o.UID != 0 || o.GID != 0 {
		if err := unix.Fchown(fd, int(o.UID), int(o.GID)); err != nil {
			return undo(err)
		}
	}
	// The slot's times are those of its making.
	now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
	if err := setTimesFd(fd, now); err != nil {
		return undo(err)
	}
	if pm, err = pmem.OpenFile(fd); err != nil {
		pm = nil
		return undo(err)
	}
	return fd, pm, true, nil
}

// isPoolFile reports whether dirfd/name is a pmem file t's pool can take
// back.
func (t *Tier) isPoolFile(dirfd int, name string, st *unix.Stat_t) bool {
	if t.pool == nil || st.Nlink > 1 {
		return false
	}
	_, ok := pmemSizeAt(dirfd, name, st)
	return ok
}

// How the tier's retargeter paces itself: after setting the target it
// waits retargetSpacing before it answers another wake-up (a burst of
// writes wakes it at every one), and with none it sets the target every
// retargetEvery anyway.
const (
	retargetSpacing = 50 * time.Millisecond
	retargetEvery   = 5 * time.Second
)

// runRetarget sets the pool's target whenever the tier's usage changed
// (retargetSoon), and every retargetEvery, until ctx ends. The trim a
// retarget may do (unlinking slots of up to segment_size) is thus no
// work for a writer, or for a caller that holds the namespace lock.
func (t *Tier) runRetarget(ctx context.Context) {
	every := time.NewTicker(retargetEvery)
	defer every.Stop()
	spacing := time.NewTimer(retargetSpacing)
	spacing.Stop()
	defer spacing.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		case <-every.C:
		}
		t.retarget()
		spacing.Reset(retargetSpacing)
		select {
		case <-ctx.Done():
			return
		case <-spacing.C:
		}
	}
}

// retargetSoon wakes the tier's retargeter, if it has a pool; it never
// blocks, and wake-ups that come while one is pending are one.
func (t *Tier) retargetSoon() {
	select {
	case t.kick <- struct{}{}: // a nil kick (no pool) is never ready
	default:
	}
}

// addUsed changes the tier's usage by d bytes; the pool's target follows.
func (t *Tier) addUsed(d int64) {
	t.used.Add(d)
	if d != 0 {
		t.retargetSoon()
	}
}

// recycle zeroes a detached pool file in the background and gives it back
// to the pool.
func (s *Store) recycle(t *Tier, d *pmem.Detached) {
	s.recycleWG.Add(1)
	go func() {
		defer s.recycleWG.Done()
		if err := d.Recycle(); err != nil && !errors.Is(err, pmem.ErrPoolClosed) {
			s.log.Warn().Err(err).Str("tier", t.Name).Msg("pmem pool: recycle a returned file")
		}
		t.retarget()
	}()
}

// pmemSizeAt is the logical size of a file that is not open, if it is a
// pmem file.
func pmemSizeAt(dirfd int, name string, st *unix.Stat_t) (int64, bool) {
	if !mayBePMem(st) {
		return 0, false
	}
	size, ok, err := pmem.SizeAt(procPath(dirfd, name))
	if err != nil || !ok || size > st.Size {
		return 0, false
	}
	return size, true
}

// inflight counts work in progress; unlike a sync.WaitGroup, Wait may run
// while work is being added.
type inflight struct {
	mu   sync.Mutex
	n    int
	idle *sync.Cond
}

func (w *inflight) Add(d int) {
	w.mu.Lock()
	w.n += d
	if w.n == 0 && w.idle != nil {
		w.idle.Broadcast()
	}
	w.mu.Unlock()
}

func (w *inflight) Done() { w.Add(-1) }

// Wait returns once nothing is in flight.
func (w *inflight) Wait() {
	w.mu.Lock()
	if w.idle == nil {
		w.idle = sync.NewCond(&w.mu)
	}
	for w.n > 0 {
		w.idle.Wait()
	}
	w.mu.Unlock()
}

// SettlePools waits until every returned pool file has been recycled,
// then fills every pool to its target (what the pools' background fill
// would do in time). For tests and tools that need a known pool state.
func (s *Store) SettlePools(ctx context.Context) error {
	s.recycleWG.Wait()
	for _, t := range s.tiers {
		if t.pool == nil {
			continue
		}
		t.retarget()
		if err := t.pool.Fill(ctx); err != nil && !errors.Is(err, unix.ENOSPC) {
			return err
		}
	}
	return nil
}
