package fuseuring

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The entries' memory, and what a takeover does with it.
//
// The kernel knows a ring entry by the addresses its buffers had in the
// daemon that registered it (fs/fuse/dev_uring.c keeps ent->headers and
// ent->payload, user addresses, and copies to and from them in whichever
// process submits the entry's next command). When that daemon dies, an
// entry that was waiting is cancelled and never used again, but one that
// held a request keeps it: the request waits for a COMMIT_AND_FETCH of
// its commit ID, whose answer the kernel reads at those addresses; no
// FUSE_NOTIFY_RESEND reaches it (that walks /dev/fuse's queues only), and
// the connection never goes back to /dev/fuse. So on a supervised mount
// the entries live in a memfd the supervisor holds, mapped at a fixed
// address: a successor maps it at the same address, finds in each slot
// what its predecessor left (a request being answered, an answer not yet
// committed, a request delivered and not read) and commits it; a slot
// that held nothing is registered afresh.

// layout places the slots: each is a page (the kernel's header, the
// iovec pair, the slot's record, the saved request), then the payload
// buffer, then the scratch where a request's payload is saved.
type layout struct {
	Base     uintptr `json:"base"`
	Slots    int     `json:"slots"`
	SlotSize int     `json:"slot_size"`
	Payload  int     `json:"payload"`
	Queues   int     `json:"queues"`
	PerQueue int     `json:"per_queue"`
}

// regionBase is where a shared region is mapped: far from the Go heap
// (0xc000000000 up), the race detector's shadow (0x2000… to 0x4000…) and
// the kernel's mmap area (down from 0x7fff…), so that every daemon of a
// mount can map it at the same address.
const regionBase = 0x5000_0000_0000

// The slot's first page.
const (
	slotRecord   = 1024 // the record (below)
	slotSaved    = 2048 // the request's in-header and op_in, saved
	slotWriteOut = 3072 // a WRITE's answer, before it goes to the payload
	savedMax     = 1024
	writeOutMax  = 64

	// The record: state, then the saved request's commit ID, sizes.
	recState   = slotRecord
	recID      = slotRecord + 8
	recSaved   = slotRecord + 16 // bytes of in-header and op_in saved
	recPsz     = slotRecord + 20 // bytes of payload the request had
	recOutArgs = slotRecord + 24 // a WRITE's answer in slotWriteOut, bytes
)

// A slot's state, written by the daemon that serves it.
const (
	// stIdle: no request read (registered, or answered and committed
	// once the next arrives).
	stIdle = iota
	// stHandling: a request read and saved (recID), being answered.
	stHandling
	// stReplied: the answer to recID is in the buffers; its commit may
	// or may not have reached the kernel.
	stReplied
)

type resumeKind int

const (
	resumeNone   resumeKind = iota
	resumeSaved             // answer the saved request, commit it
	resumeCommit            // commit the answer in the buffers
	resumeUnseen            // a request the kernel delivered, not read
)

func newLayout(queues, perQueue, payload int) layout {
	page := os.Getpagesize()
	return layout{Base: regionBase, Slots: queues * perQueue, SlotSize: page + 2*roundUp(payload, page),
		Payload: payload, Queues: queues, PerQueue: perQueue}
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }

type region struct {
	fd     int // the memfd; -1 when private
	mem    []byte
	layout layout
}

func (r *region) slot(i int) []byte {
	return r.mem[i*r.layout.SlotSize : (i+1)*r.layout.SlotSize]
}

func (r *region) layoutJSON() []byte {
	if r.fd < 0 {
		return nil
	}
	b, _ := json.Marshal(r.layout)
	return b
}

func (r *region) close() {
	if r.mem != nil {
		if r.fd >= 0 {
			unix.MunmapPtr(unsafe.Pointer(&r.mem[0]), uintptr(len(r.mem)))
		} else {
			unix.Munmap(r.mem)
		}
		r.mem = nil
	}
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}

// makeRegion makes the entries' memory: private, or a memfd mapped at
// regionBase (or where the kernel puts it, if that address is taken:
// successors then try that one).
func makeRegion(l layout, shared bool) (*region, error) {
	size := l.Slots * l.SlotSize
	if !shared {
		l.Base = 0
		mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			return nil, fmt.Errorf("io_uring entry buffers: %w", err)
		}
		return &region{fd: -1, mem: mem, layout: l}, nil
	}
	fd, err := unix.MemfdCreate("tierfs-fuse-uring", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("io_uring entry buffers: memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("io_uring entry buffers: %w", err)
	}
	mem, err := mapAt(fd, l.Base, size)
	if err != nil {
		if mem, err = mapAt(fd, 0, size); err != nil {
			unix.Close(fd)
			return nil, err
		}
		l.Base = uintptr(unsafe.Pointer(&mem[0]))
	}
	return &region{fd: fd, mem: mem, layout: l}, nil
}

// adoptRegion maps a predecessor's region at its address, or fails: the
// kernel's entries point there.
func adoptRegion(fd int, layoutJSON []byte) (*region, error) {
	var l layout
	if err := json.Unmarshal(layoutJSON, &l); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("io_uring: the rings' layout from the supervisor: %w", err)
	}
	size := l.Slots * l.SlotSize
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size != int64(size) || l.Slots <= 0 || l.Base == 0 ||
		l.PerQueue <= 0 || l.Slots != l.Queues*l.PerQueue || l.SlotSize < os.Getpagesize()+2*l.Payload {
		unix.Close(fd)
		return nil, fmt.Errorf("io_uring: the rings' memory does not match its layout %+v", l)
	}
	mem, err := mapAt(fd, l.Base, size)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("io_uring: mapping the predecessor's entries where the kernel knows them (%#x): %w", l.Base, err)
	}
	return &region{fd: fd, mem: mem, layout: l}, nil
}

// mapAt maps fd shared at addr exactly (0: anywhere). The address is
// memory no Go object lives in (the kernel's, outside the heap).
func mapAt(fd int, addr uintptr, size int) ([]byte, error) {
	flags := unix.MAP_SHARED
	if addr != 0 {
		flags |= unix.MAP_FIXED_NOREPLACE
	}
	p, err := unix.MmapPtr(fd, 0, unsafe.Add(nil, addr), uintptr(size), unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	if addr != 0 && uintptr(p) != addr {
		unix.MunmapPtr(p, uintptr(size))
		return nil, errors.New("mmap: the address is taken")
	}
	return unsafe.Slice((*byte)(p), size), nil
}

func (e *uringEntry) u32(off int) uint32 { return binary.LittleEndian.Uint32(e.slot[off:]) }
func (e *uringEntry) u64(off int) uint64 { return binary.LittleEndian.Uint64(e.slot[off:]) }
func (e *uringEntry) setU32(off int, v uint32) {
	binary.LittleEndian.PutUint32(e.slot[off:], v)
}

func (e *uringEntry) setState(st uint32) { e.setU32(recState, st) }

// kernelID is the commit ID of the last request the kernel delivered to
// this slot (the kernel writes it; the daemon never does).
func (e *uringEntry) kernelID() uint64 { return binary.LittleEndian.Uint64(e.hdr[uringCommitID:]) }

// markRegistering resets the slot for a fresh registration: no request
// delivered, none saved.
func (e *uringEntry) markRegistering() {
	binary.LittleEndian.PutUint64(e.hdr[uringCommitID:], 0)
	binary.LittleEndian.PutUint64(e.slot[recID:], 0)
	e.setState(stIdle)
}

// pending says what a predecessor left in this slot.
func (e *uringEntry) pending() resumeKind {
	st, id, kid := e.u32(recState), e.u64(recID), e.kernelID()
	switch {
	case st == stHandling && kid == id:
		return resumeSaved
	case st == stReplied && kid == id:
		return resumeCommit
	case kid != 0 && kid != id:
		return resumeUnseen
	}
	return resumeNone
}
