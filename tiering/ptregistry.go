package tiering

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// The passthrough registry of a supervised mount: every passthrough handle
// the kernel holds, with its inode and backing id, kept in a file a
// successor reads (.tierfs/passthrough on the first tier), because the
// kernel keeps one backing per inode while any passthrough handle of it is
// open and refuses an open of that inode with another backing or none. A
// successor answers a read-only open of such an inode with the same id,
// refuses writers and moves as the predecessor did (passthroughHeld), and
// takes the id back from the kernel when the last of those handles is
// released.
//
// Each slot is written with one pwrite(2) (a kill -9 lands between system
// calls, never inside one), before the reply that hands the kernel the
// handle; a slot records the OPEN's unique, so that an OPEN the kernel
// resends to a successor (the reply never came) is answered with the same
// handle and nothing is counted twice. A slot whose backing id is being
// taken back is marked closing first: a successor that finds one takes the
// id back again (ENOENT if done) and frees the slot.

const (
	ptSlots    = 4096
	ptSlotSize = 32
	ptFile     = "passthrough"

	ptFree    = 0
	ptLive    = 1
	ptClosing = 2
)

// ErrPassthroughFull is RecordPassthrough's answer when every slot holds a
// handle.
var ErrPassthroughFull = fmt.Errorf("%d passthrough handles open: %w", ptSlots, unix.ENFILE)

type ptSlot struct {
	ino, kfh, unique uint64
	id               int32
	state            uint32
}

// ptEntry is an inode with passthrough handles the registry knows of.
type ptEntry struct {
	id      int32
	slots   int
	pending int  // opens decided, not yet recorded (inherited only)
	own     bool // its id is go-fuse's bridge's, which takes it back
}

type ptRegistry struct {
	mu      sync.Mutex
	fd      int
	slots   []ptSlot
	free    []int
	byKfh   map[uint64]int
	byUniq  map[uint64]int
	byIno   map[uint64]*ptEntry
	closing map[int32]bool
}

func (s *ptSlot) encode() []byte {
	b := make([]byte, ptSlotSize)
	binary.LittleEndian.PutUint64(b[0:], s.ino)
	binary.LittleEndian.PutUint64(b[8:], s.kfh)
	binary.LittleEndian.PutUint64(b[16:], s.unique)
	binary.LittleEndian.PutUint32(b[24:], uint32(s.id))
	binary.LittleEndian.PutUint32(b[28:], s.state)
	return b
}

// OpenPassthroughRegistry opens the registry of a supervised mount with
// passthrough: empty on a fresh mount; on a takeover, the predecessors'
// handles, whose inodes become inherited, and the ids of slots left
// closing, which are returned for the caller to take back from the kernel
// (their slots are freed once it has, by FinishClose).
func (s *Store) OpenPassthroughRegistry(takeover bool) (closing []int32, err error) {
	meta := s.tiers[0].meta
	r := &ptRegistry{fd: -1, slots: make([]ptSlot, ptSlots), byKfh: map[uint64]int{}, byUniq: map[uint64]int{}, byIno: map[uint64]*ptEntry{}, closing: map[int32]bool{}}
	if takeover {
		closing, err = r.load(meta)
		if err != nil {
			s.log.Error().Err(err).Msg("passthrough: the predecessor's registry cannot be read; opens of files it gave passthrough handles may fail with EIO until they close")
		}
	}
	if r.fd < 0 {
		_ = unix.Unlinkat(meta, ptFile, 0)
		fd, err := unix.Openat(meta, ptFile, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("passthrough registry: %w", err)
		}
		if err := unix.Ftruncate(fd, ptSlots*ptSlotSize); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("passthrough registry: %w", err)
		}
		r.fd = fd
	}
	for i := ptSlots - 1; i >= 0; i-- {
		if r.slots[i].state == ptFree {
			r.free = append(r.free, i)
		}
	}
	s.ptReg.Store(r)
	return closing, nil
}

// settlePassthroughRegistry runs at mount: a fresh mount removes the
// registry an earlier mount left (the kernel holds no passthrough handle
// of a new connection, and a successor must not take that one's slots for
// its predecessor's); a daemon that takes over keeps it for
// OpenPassthroughRegistry.
func (s *Store) settlePassthroughRegistry() error {
	if s.opts.TakingOver {
		return nil
	}
	if err := unix.Unlinkat(s.tiers[0].meta, ptFile, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("tier %s: remove an earlier mount's passthrough registry: %w", s.tiers[0].Name, err)
	}
	return nil
}

// load reads the registry a predecessor left: only a regular file of ours
// with one link and the registry's size is trusted.
func (r *ptRegistry) load(meta int) ([]int32, error) {
	fd, err := unix.Openat(meta, ptFile, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil // a predecessor without passthrough
		}
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 || st.Uid != uint32(unix.Geteuid()) || st.Size != ptSlots*ptSlotSize {
		unix.Close(fd)
		return nil, fmt.Errorf("%s is not the registry tierfs writes (mode %o, %d links, owner %d, %d bytes)", ptFile, st.Mode, st.Nlink, st.Uid, st.Size)
	}
	b := make([]byte, ptSlots*ptSlotSize)
	if _, err := unix.Pread(fd, b, 0); err != nil {
		unix.Close(fd)
		return nil, err
	}
	var closing []int32
	for i := range r.slots {
		o := b[i*ptSlotSize:]
		sl := ptSlot{ino: binary.LittleEndian.Uint64(o[0:]), kfh: binary.LittleEndian.Uint64(o[8:]),
			unique: binary.LittleEndian.Uint64(o[16:]), id: int32(binary.LittleEndian.Uint32(o[24:])), state: binary.LittleEndian.Uint32(o[28:])}
		switch sl.state {
		case ptLive:
			r.slots[i] = sl
			r.byKfh[sl.kfh] = i
			r.byUniq[sl.unique] = i
			e := r.byIno[sl.ino]
			if e == nil {
				e = &ptEntry{id: sl.id}
				r.byIno[sl.ino] = e
			}
			e.slots++
		case ptClosing:
			r.slots[i] = sl
			if !r.closing[sl.id] {
				r.closing[sl.id] = true
				closing = append(closing, sl.id)
			}
		}
	}
	r.fd = fd
	return closing, nil
}

// write puts slot i on the file, whole in one system call.
func (r *ptRegistry) write(i int) error {
	_, err := unix.Pwrite(r.fd, r.slots[i].encode(), int64(i*ptSlotSize))
	return err
}

// ptHeld says whether the registry counts passthrough handles of ino.
func (s *Store) ptHeld(ino uint64) bool {
	r := s.registry()
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byIno[ino] != nil
}

func (s *Store) registry() *ptRegistry { return s.ptReg.Load() }

// PassthroughInherited says whether ino has passthrough handles a
// predecessor gave, with their backing id: every read-only open of it must
// be given that id.
func (s *Store) PassthroughInherited(ino uint64) (int32, bool) { return s.inherited(ino, false) }

// AcquireInherited is PassthroughInherited for an open about to be
// answered: the id stays the kernel's until RecordPassthrough or
// DropPending.
func (s *Store) AcquireInherited(ino uint64) (int32, bool) { return s.inherited(ino, true) }

func (s *Store) inherited(ino uint64, take bool) (int32, bool) {
	r := s.registry()
	if r == nil {
		return 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.byIno[ino]
	if e == nil || e.own {
		return 0, false
	}
	if take {
		e.pending++
	}
	return e.id, true
}

// DropPending ends an AcquireInherited whose open was not answered with a
// passthrough handle; it says whether the id is to be taken back now.
func (s *Store) DropPending(ino uint64) (int32, bool) {
	r := s.registry()
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.byIno[ino]
	e.pending--
	return r.lastLocked(ino, e)
}

// lastLocked ends an entry with no handle recorded and no open being
// decided, and says whether its id is the caller's to take back (an
// inherited one). No slot is left to mark closing: a kill -9 before the id
// is taken back leaves it with the kernel until unmount.
func (r *ptRegistry) lastLocked(ino uint64, e *ptEntry) (int32, bool) {
	if e.slots > 0 || e.pending > 0 {
		return 0, false
	}
	delete(r.byIno, ino)
	return e.id, !e.own
}

// RecordPassthrough records the passthrough handle kfh on ino, opened by
// the request unique with backing id, before the reply gives it to the
// kernel. own says the id is the bridge's (registered by this daemon);
// otherwise it is an inherited one taken with AcquireInherited.
func (s *Store) RecordPassthrough(ino, kfh, unique uint64, id int32, own bool) error {
	r := s.registry()
	// After the lock is let go: the slot is written, the reply not.
	defer failPoint("passthrough-recorded")
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.byIno[ino]
	if len(r.free) == 0 {
		return ErrPassthroughFull // an inherited open's pending: DropPending
	}
	if e == nil {
		e = &ptEntry{id: id, own: own}
		r.byIno[ino] = e
	}
	if !own {
		e.pending--
	}
	i := r.free[len(r.free)-1]
	r.free = r.free[:len(r.free)-1]
	r.slots[i] = ptSlot{ino: ino, kfh: kfh, unique: unique, id: id, state: ptLive}
	if err := r.write(i); err != nil {
		// Not durable: a successor would not know this handle. Still
		// counted here, where it is true.
		s.log.Error().Err(err).Msg("passthrough registry: cannot write a slot")
	}
	r.byKfh[kfh] = i
	r.byUniq[unique] = i
	e.slots++
	return nil
}

// PassthroughByUnique is the handle recorded for the OPEN request unique:
// a resent OPEN whose reply the dead daemon never wrote.
func (s *Store) PassthroughByUnique(unique uint64) (kfh uint64, id int32, ok bool) {
	r := s.registry()
	if r == nil {
		return 0, 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.byUniq[unique]
	if !ok || r.slots[i].state != ptLive {
		return 0, 0, false
	}
	return r.slots[i].kfh, r.slots[i].id, true
}

// ReleasePassthrough forgets the handle kfh (the kernel released it; a
// second release of it changes nothing). It says when the inode's last
// handle went and its id, inherited, is for the caller to take back:
// MarkClosing, the ioctl, FinishClose.
func (s *Store) ReleasePassthrough(kfh uint64) (int32, bool) {
	r := s.registry()
	if r == nil {
		return 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.byKfh[kfh]
	if !ok {
		return 0, false
	}
	sl := r.slots[i]
	e := r.byIno[sl.ino]
	delete(r.byKfh, kfh)
	if sl.state == ptClosing {
		delete(r.closing, sl.id) // the bridge took its own id back (MarkClosing)
	}
	if j, ok := r.byUniq[sl.unique]; ok && j == i {
		delete(r.byUniq, sl.unique)
	}
	if e != nil {
		e.slots--
		if e.slots == 0 && e.pending == 0 && !e.own {
			// Marked closing in the same write that ends the handle.
			r.slots[i].state = ptClosing
			r.closing[sl.id] = true
			if err := r.write(i); err != nil {
				s.log.Error().Err(err).Msg("passthrough registry: cannot write a slot")
			}
			delete(r.byIno, sl.ino)
			return sl.id, true
		}
		if e.slots == 0 && e.pending == 0 {
			delete(r.byIno, sl.ino)
		}
	}
	r.freeLocked(i)
	return 0, false
}

func (r *ptRegistry) freeLocked(i int) {
	r.slots[i] = ptSlot{}
	_ = r.write(i)
	r.free = append(r.free, i)
}

// MarkClosing marks the slots still holding id closing, before the id is
// taken back from the kernel (the bridge's own ids: its last handle's
// slot, released right after).
func (s *Store) MarkClosing(id int32) {
	r := s.registry()
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.slots {
		if r.slots[i].state == ptLive && r.slots[i].id == id {
			r.slots[i].state = ptClosing
			_ = r.write(i)
			r.closing[id] = true
		}
	}
}

// FinishClose frees the closing slots of id: the kernel has it back.
func (s *Store) FinishClose(id int32) {
	r := s.registry()
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closing[id] {
		return
	}
	delete(r.closing, id)
	for i := range r.slots {
		if r.slots[i].state == ptClosing && r.slots[i].id == id {
			if k := r.slots[i].kfh; r.byKfh[k] == i {
				delete(r.byKfh, k)
			}
			r.freeLocked(i)
		}
	}
}

// PassthroughRecorded is how many passthrough handles the registry holds:
// the kernel's, a predecessor's too (status, tests).
func (s *Store) PassthroughRecorded() int {
	r := s.registry()
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byKfh)
}
