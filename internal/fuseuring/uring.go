// Package fuseuring serves a FUSE connection's requests over io_uring
// (Linux 6.14+, CONFIG_FUSE_IO_URING, module parameter
// fuse.enable_uring=Y) instead of reading them from /dev/fuse. It knows
// FUSE and go-fuse, nothing of tierfs: the caller mounts, hands it the
// /dev/fuse descriptor and the RawFileSystem go-fuse serves, and it
// answers the requests that come over the rings with go-fuse's
// ProtocolServer.
//
// Why: a FUSE request costs far more in wake-ups than in work. With
// /dev/fuse, a writer on CPU 0 queues its request and sleeps; a daemon
// thread, sleeping on whichever CPU, is woken (an IPI, and on a VM whose
// idle vCPUs halt, a trip through the host), answers, and wakes the writer
// back across CPUs (docs/perf.md has what pinning both to one CPU did).
// FUSE over io_uring does that pinning properly: the kernel keeps one
// queue per CPU and hands a request to the queue of the CPU its caller
// runs on, so a daemon thread bound to that CPU takes it, answers and
// wakes the caller without leaving the CPU.
//
// How: every queue (one per possible CPU) gets threadsPerQueue threads.
// Each is a goroutine locked to its OS thread, bound to the queue's CPU,
// with its own small io_uring and one ring entry: a header buffer and a
// payload buffer in memory of its own (mmap, never moved by the garbage
// collector). It registers the entry (FUSE_IO_URING_CMD_REGISTER) and
// then loops: the completion says a request is in the buffers; go-fuse's
// ProtocolServer decodes it and calls the same node bridge as the
// /dev/fuse server; the reply goes back into the buffers and one
// FUSE_IO_URING_CMD_COMMIT_AND_FETCH both commits it and waits for the
// next request, one system call per request. Several threads per queue
// keep a slow request (an fsync on a slow disk) from holding up the other
// callers on that CPU: the kernel gives a new request to whichever entry
// of the queue is free.
//
// The /dev/fuse server still runs beside the rings: INIT, FORGET and
// INTERRUPT always come that way. (An INTERRUPT for a request the ring is
// answering is not found by the /dev/fuse server, which answers EAGAIN;
// the kernel looks for that request among the /dev/fuse ones, does not
// find it either, and drops the answer: the request runs to its end.)
//
// Once the kernel and the daemon agree on io_uring at INIT, every request
// waits until each queue has an entry registered, and a failed
// registration switches the connection back to /dev/fuse. So the rings
// are set up (New) before mounting (if that fails the caller does not ask
// for io_uring at all), and a thread whose entry fails in an unexpected
// way registers a fresh one instead of leaving its queue short.
package fuseuring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/fusedev"
)

const (
	ioringSetupSQE128   = 1 << 10
	ioringFeatSingleMmp = 1 << 0
	ioringOpUringCmd    = 46
	ioringEnterGetEvent = 1 << 0
	ioringOffSQRing     = 0
	ioringOffCQRing     = 0x8000000
	ioringOffSQEs       = 0x10000000
	sqe128Size          = 128
	cqeSize             = 16

	fuseURingCmdRegister       = 1
	fuseURingCmdCommitAndFetch = 2

	// struct fuse_uring_req_header: in_out[128], op_in[128], then
	// struct fuse_uring_ent_in_out {flags, commit_id u64; payload_sz,
	// padding u32; reserved u64}.
	uringOpIn        = 128
	uringEntInOut    = 256
	uringCommitID    = uringEntInOut + 8
	uringPayloadSz   = uringEntInOut + 16
	uringHeaderBytes = uringEntInOut + 32
	// The entry's page: the header, then the iovec pair that points at
	// the header and the payload.
	uringIovecOff = 512

	inHeaderSize  = int(unsafe.Sizeof(fuse.InHeader{}))
	outHeaderSize = int(unsafe.Sizeof(fuse.OutHeader{}))
	opWrite       = 16
	opInit        = 26
)

// EnableParam is the kernel's switch for FUSE over io_uring.
const EnableParam = "/sys/module/fuse/parameters/enable_uring"

// threadsPerQueue: how many requests from one CPU may be in the daemon at
// once.
func threadsPerQueue() int {
	if runtime.NumCPU() <= 4 {
		return 4
	}
	return 2
}

type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  struct {
		head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
		userAddr                                                        uint64
	}
	cqOff struct {
		head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
		userAddr                                                        uint64
	}
}

// uring is a minimal io_uring: one submission at a time, by one thread.
type uring struct {
	fd      int
	ringMem []byte
	cqMem   []byte // nil when the kernel maps both rings at once
	sqeMem  []byte

	sqHead, sqTail, sqMask *uint32
	sqArray                unsafe.Pointer
	cqHead, cqTail, cqMask *uint32
	cqes                   unsafe.Pointer
}

func newURing(entries uint32) (*uring, error) {
	var p uringParams
	p.flags = ioringSetupSQE128
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &uring{fd: int(fd)}
	unix.CloseOnExec(r.fd)
	sqSize := int(p.sqOff.array + p.sqEntries*4)
	cqSize := int(p.cqOff.cqes + p.cqEntries*cqeSize)
	single := p.features&ioringFeatSingleMmp != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	if r.ringMem, err = unix.Mmap(r.fd, ioringOffSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.close()
		return nil, fmt.Errorf("io_uring: mapping the rings: %w", err)
	}
	cq := r.ringMem
	if !single {
		if r.cqMem, err = unix.Mmap(r.fd, ioringOffCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
			r.close()
			return nil, fmt.Errorf("io_uring: mapping the completion ring: %w", err)
		}
		cq = r.cqMem
	}
	if r.sqeMem, err = unix.Mmap(r.fd, ioringOffSQEs, int(p.sqEntries)*sqe128Size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.close()
		return nil, fmt.Errorf("io_uring: mapping the submission entries: %w", err)
	}
	at := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	r.sqHead, r.sqTail, r.sqMask = at(r.ringMem, p.sqOff.head), at(r.ringMem, p.sqOff.tail), at(r.ringMem, p.sqOff.ringMask)
	r.sqArray = unsafe.Pointer(&r.ringMem[p.sqOff.array])
	r.cqHead, r.cqTail, r.cqMask = at(cq, p.cqOff.head), at(cq, p.cqOff.tail), at(cq, p.cqOff.ringMask)
	r.cqes = unsafe.Pointer(&cq[p.cqOff.cqes])
	return r, nil
}

func (r *uring) close() {
	for _, m := range [][]byte{r.sqeMem, r.cqMem, r.ringMem} {
		if m != nil {
			unix.Munmap(m)
		}
	}
	r.sqeMem, r.cqMem, r.ringMem = nil, nil, nil
	if r.fd >= 0 {
		unix.Close(r.fd)
		r.fd = -1
	}
}

// submitFuseCmd queues one IORING_OP_URING_CMD for the FUSE device.
func (r *uring) submitFuseCmd(devFd int, cmdOp uint32, iov uintptr, commitID uint64, qid uint16) {
	tail := *r.sqTail
	idx := tail & *r.sqMask
	sqe := r.sqeMem[int(idx)*sqe128Size : int(idx+1)*sqe128Size]
	clear(sqe)
	sqe[0] = ioringOpUringCmd
	binary.LittleEndian.PutUint32(sqe[4:], uint32(devFd))
	binary.LittleEndian.PutUint32(sqe[8:], cmdOp) // cmd_op
	binary.LittleEndian.PutUint64(sqe[16:], uint64(iov))
	if iov != 0 {
		binary.LittleEndian.PutUint32(sqe[24:], 2) // header and payload
	}
	binary.LittleEndian.PutUint64(sqe[32:], uint64(cmdOp)) // user_data
	// struct fuse_uring_cmd_req, in the SQE's command area (flags 0).
	binary.LittleEndian.PutUint64(sqe[56:], commitID)
	binary.LittleEndian.PutUint16(sqe[64:], qid)
	*(*uint32)(unsafe.Add(r.sqArray, 4*uintptr(idx))) = idx
	atomic.StoreUint32(r.sqTail, tail+1)
}

// submit hands the kernel what is queued, without waiting.
func (r *uring) submit() error {
	for {
		toSubmit := *r.sqTail - atomic.LoadUint32(r.sqHead)
		if toSubmit == 0 {
			return nil
		}
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), 0, 0, 0, 0)
		if errno != 0 && errno != unix.EINTR && errno != unix.EAGAIN && errno != unix.EBUSY {
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
	}
}

// completed says whether a completion waits to be consumed.
func (r *uring) completed() bool {
	return *r.cqHead != atomic.LoadUint32(r.cqTail)
}

// wait submits what is queued and waits for one completion, which it
// consumes: its result (a negative errno on failure).
func (r *uring) wait() (int32, error) {
	for {
		head := *r.cqHead
		if head != atomic.LoadUint32(r.cqTail) {
			cqe := unsafe.Add(r.cqes, uintptr(head&*r.cqMask)*cqeSize)
			res := *(*int32)(unsafe.Add(cqe, 8))
			atomic.StoreUint32(r.cqHead, head+1)
			return res, nil
		}
		toSubmit := *r.sqTail - atomic.LoadUint32(r.sqHead)
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), 1, ioringEnterGetEvent, 0, 0)
		if errno != 0 && errno != unix.EINTR && errno != unix.EAGAIN && errno != unix.EBUSY {
			return 0, fmt.Errorf("io_uring_enter: %w", errno)
		}
	}
}

// uringEntry is one serving thread's ring, buffers and queue. Its
// buffers are a slot of the server's region (region.go).
type uringEntry struct {
	ring    *uring
	qid     uint16
	slot    []byte // the entry's page, the payload, then the scratch
	hdr     []byte
	payload []byte
	scratch []byte // a request's payload other than write data, saved
	iov     uintptr
	// resume, on a takeover: what this slot's predecessor left (none,
	// a request to answer, an answer to commit).
	resume resumeKind
}

func newURingEntry(qid uint16, slot []byte, payloadSize int) (*uringEntry, error) {
	r, err := newURing(2)
	if err != nil {
		return nil, err
	}
	page := os.Getpagesize()
	e := &uringEntry{ring: r, qid: qid, slot: slot, hdr: slot[:uringHeaderBytes],
		payload: slot[page : page+payloadSize], scratch: slot[page+payloadSize : page+2*payloadSize]}
	iov := (*[2]unix.Iovec)(unsafe.Pointer(&slot[uringIovecOff]))
	iov[0].Base, iov[0].Len = &e.hdr[0], uint64(len(e.hdr))
	iov[1].Base, iov[1].Len = &e.payload[0], uint64(len(e.payload))
	e.iov = uintptr(unsafe.Pointer(iov))
	return e, nil
}

func (e *uringEntry) close() {
	e.ring.close()
}

// Server serves a mount's requests over io_uring.
type Server struct {
	devFd   int // our own dup of the mount's /dev/fuse descriptor
	entries []*uringEntry
	reg     *region
	ps      *fuse.ProtocolServer
	log     zerolog.Logger
	wg      sync.WaitGroup
	served  atomic.Uint64
	// Before, when set, is called with each request's opcode and the
	// node IDs it names before it is decoded (fusedev.Server.Before).
	Before func(opcode uint32, nodes []uint64) fuse.Status

	queues, perQueue int
	payloadSize      int
	qwg              []sync.WaitGroup // per queue: its serving threads
	takeover         bool             // the region is a predecessor's (Adopt)
	// mu is held shared while a request is answered; Stop takes it to
	// set stopping.
	mu        sync.RWMutex
	stopping  bool
	recovered atomic.Uint64
	closeOnce sync.Once
}

// Available says whether the kernel would take FUSE over io_uring.
func Available() error {
	b, err := os.ReadFile(EnableParam)
	if errors.Is(err, os.ErrNotExist) {
		return errors.New("this kernel has no FUSE over io_uring (CONFIG_FUSE_IO_URING)")
	}
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) != "Y" {
		return fmt.Errorf("FUSE over io_uring is off: write Y to %s", EnableParam)
	}
	return nil
}

// New sets up the rings and buffers of every queue, before the mount asks
// the kernel for io_uring; payloadSize is the mount's MaxWrite. The
// buffers are private: they die with the daemon (no takeover).
func New(payloadSize int, log zerolog.Logger) (*Server, error) {
	return newServer(payloadSize, log, false)
}

// NewShared is New with the buffers in memory a successor can map at the
// same address (Region, Adopt): a supervised mount, whose next daemon
// answers the requests this one's rings held when it died.
func NewShared(payloadSize int, log zerolog.Logger) (*Server, error) {
	return newServer(payloadSize, log, true)
}

func newServer(payloadSize int, log zerolog.Logger, shared bool) (*Server, error) {
	ncpu, err := possibleCPUs()
	if err != nil {
		return nil, err
	}
	u := &Server{devFd: -1, log: log, queues: ncpu, perQueue: threadsPerQueue(), payloadSize: payloadSize}
	l := newLayout(ncpu, u.perQueue, payloadSize)
	if u.reg, err = makeRegion(l, shared); err != nil {
		return nil, err
	}
	if err := u.makeEntries(); err != nil {
		u.Close()
		return nil, err
	}
	return u, nil
}

// Adopt takes over a predecessor's rings: it maps the entry memory it
// left (fd, with its layout) at the same address, where the kernel still
// reads and writes the entries that held requests when the predecessor
// died, and notes what each slot holds, for Start to answer.
func Adopt(fd int, layout []byte, log zerolog.Logger) (*Server, error) {
	reg, err := adoptRegion(fd, layout)
	if err != nil {
		return nil, err
	}
	l := reg.layout
	u := &Server{devFd: -1, log: log, queues: l.Queues, perQueue: l.PerQueue, payloadSize: l.Payload, reg: reg, takeover: true}
	if ncpu, err := possibleCPUs(); err == nil && ncpu != l.Queues {
		u.Close()
		return nil, fmt.Errorf("io_uring: the rings were laid out for %d CPUs, this machine has %d", l.Queues, ncpu)
	}
	if err := u.makeEntries(); err != nil {
		u.Close()
		return nil, err
	}
	for _, e := range u.entries {
		e.resume = e.pending()
	}
	return u, nil
}

func (u *Server) makeEntries() error {
	for i := range u.reg.layout.Slots {
		e, err := newURingEntry(uint16(i/u.perQueue), u.reg.slot(i), u.payloadSize)
		if err != nil {
			return err
		}
		u.entries = append(u.entries, e)
	}
	return nil
}

// Region is the entry memory to hand a successor (the supervisor holds
// it): its descriptor (-1 when private) and its layout.
func (u *Server) Region() (fd int, layout []byte) {
	return u.reg.fd, u.reg.layoutJSON()
}

// possibleCPUs is the kernel's num_possible_cpus(): the number of queues
// it expects.
func possibleCPUs() (int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		var lo, hi int
		if _, err := fmt.Sscanf(r, "%d-%d", &lo, &hi); err != nil {
			if _, err := fmt.Sscanf(r, "%d", &lo); err != nil {
				return 0, fmt.Errorf("parsing /sys/devices/system/cpu/possible %q: %w", b, err)
			}
			hi = lo
		}
		n = max(n, hi+1)
	}
	return n, nil
}

// Close frees the rings and buffers, once; only when no thread serves
// (before Start, or after Wait).
func (u *Server) Close() {
	u.closeOnce.Do(func() {
		for _, e := range u.entries {
			e.close()
		}
		if u.reg != nil {
			u.reg.close()
		}
		if u.devFd >= 0 {
			unix.Close(u.devFd)
		}
	})
}

// Start begins serving: the kernel answered INIT (kernel) and agreed on
// io_uring (fuse.CAP_OVER_IO_URING). devFd is the mount's /dev/fuse
// descriptor; rawFS and mo what the /dev/fuse server serves with.
func (u *Server) Start(devFd int, rawFS fuse.RawFileSystem, mo *fuse.MountOptions, kernel *fuse.InitIn) error {
	fd, err := unix.FcntlInt(uintptr(devFd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	u.devFd = fd
	if err := u.initProtocol(rawFS, mo, kernel); err != nil {
		return err
	}
	var armed sync.WaitGroup
	u.qwg = make([]sync.WaitGroup, u.queues)
	for _, e := range u.entries {
		u.wg.Add(1)
		u.qwg[e.qid].Add(1)
		armed.Add(1)
		go u.serve(e, armed.Done)
	}
	// Every entry is registered (or its predecessor's committed) once
	// this returns: a request sent now finds its queue served.
	armed.Wait()
	return nil
}

// initProtocol makes the protocol server, which learns the kernel's
// version and flags from an INIT of its own; it decodes requests by them.
func (u *Server) initProtocol(rawFS fuse.RawFileSystem, mo *fuse.MountOptions, kernel *fuse.InitIn) error {
	u.ps = fuse.NewProtocolServer(rawFS, mo)
	init := *kernel // go-fuse's InitIn starts with its InHeader
	init.InHeader = fuse.InHeader{Length: uint32(unsafe.Sizeof(init)), Opcode: opInit, Unique: 1}
	initBytes := unsafe.Slice((*byte)(unsafe.Pointer(&init)), unsafe.Sizeof(init))
	out := make([]byte, 4096)
	if _, st := u.ps.HandleRequest([][]byte{initBytes}, [][]byte{out}); !st.Ok() {
		return fmt.Errorf("protocol server init: %v", st)
	}
	if oh := (*fuse.OutHeader)(unsafe.Pointer(&out[0])); oh.Status != 0 {
		return fmt.Errorf("protocol server init: %v", syscall.Errno(-oh.Status))
	}
	return nil
}

// Wait returns when every serving thread has stopped (after unmount),
// and frees the rings.
func (u *Server) Wait() {
	u.wg.Wait()
	u.Close()
}

// Served counts the requests answered over io_uring.
func (u *Server) Served() uint64 { return u.served.Load() }

// Queues says how the transport is laid out: queues (one per possible
// CPU) and serving threads per queue.
func (u *Server) Queues() (queues, threadsPerQueue int) { return u.queues, u.perQueue }

func (u *Server) serve(e *uringEntry, armed func()) {
	defer u.wg.Done()
	defer u.qwg[e.qid].Done()
	defer func() {
		if armed != nil {
			armed()
		}
	}()
	// The thread keeps its CPU binding to the end: it dies with the
	// goroutine instead of going back to the runtime's pool.
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(int(e.qid))
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		u.log.Debug().Err(err).Uint16("queue", e.qid).Msg("io_uring: cannot bind the thread to its queue's CPU")
	}
	cmd, commitID, backoff := uint32(fuseURingCmdRegister), uint64(0), time.Millisecond
	// What a predecessor left in this slot is answered (or its answer
	// committed) on the kernel's entry that holds it, which then serves
	// on as this thread's; if the kernel no longer knows that request,
	// the slot is registered afresh.
	switch e.resume {
	case resumeSaved:
		cmd, commitID = fuseURingCmdCommitAndFetch, e.u64(recID)
		u.answer(e)
	case resumeUnseen:
		cmd, commitID = fuseURingCmdCommitAndFetch, e.kernelID()
		e.take(commitID)
		u.answer(e)
	case resumeCommit:
		cmd, commitID = fuseURingCmdCommitAndFetch, e.u64(recID)
		e.finishWriteOut()
	}
	recovering := e.resume != resumeNone
	for {
		iov := uintptr(0)
		if cmd == fuseURingCmdRegister {
			e.markRegistering()
			iov = e.iov
		}
		e.ring.submitFuseCmd(u.devFd, cmd, iov, commitID, e.qid)
		if armed != nil {
			if err := e.ring.submit(); err != nil {
				u.log.Error().Err(err).Uint16("queue", e.qid).Msg("io_uring: serving thread stops")
				return // armed by the deferred call
			}
			// A commit the kernel refused completes at once: the entry
			// is armed only by the registration that follows.
			if !recovering || !e.ring.completed() {
				armed()
				armed = nil
			}
		}
		res, err := e.ring.wait()
		if err != nil {
			u.log.Error().Err(err).Uint16("queue", e.qid).Msg("io_uring: serving thread stops")
			return
		}
		switch errno := syscall.Errno(-res); {
		case res == 0:
		case errno == unix.ENOTCONN || errno == unix.ECANCELED || errno == unix.ENODEV || errno == unix.ECONNABORTED:
			return // unmounted
		case recovering && errno == unix.ENOENT:
			// The predecessor's commit had reached the kernel (or its
			// entry is gone): nothing of it waits; a fresh entry.
			u.log.Debug().Uint16("queue", e.qid).Uint64("commit_id", commitID).Msg("io_uring: takeover: the kernel had this answer already")
			cmd, commitID, recovering = fuseURingCmdRegister, 0, false
			continue
		default:
			// The entry is lost (a commit the kernel did not
			// recognise, a registration refused): register afresh, so
			// that the queue keeps its threads.
			u.log.Warn().Err(errno).Uint16("queue", e.qid).Uint32("cmd", cmd).Msg("io_uring: entry failed; registering a new one")
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			cmd, commitID, recovering = fuseURingCmdRegister, 0, false
			continue
		}
		if recovering {
			u.recovered.Add(1)
			recovering = false
		}
		backoff = time.Millisecond
		u.mu.RLock()
		if u.stopping {
			// Draining (Stop): the request stays in the buffers, unread,
			// for the successor.
			u.mu.RUnlock()
			return
		}
		commitID = e.kernelID()
		e.take(commitID)
		u.answer(e)
		u.mu.RUnlock()
		cmd = fuseURingCmdCommitAndFetch
	}
}

// Stop stops taking requests and waits for those being answered (they
// are committed); requests delivered after stay in the buffers unread,
// for a successor (Adopt) to answer. Then it empties
// every queue it can of the entries still waiting in the kernel: a
// request the kernel hands such an entry while its process exits is
// ended with ECANCELED (fs/fuse/dev_uring.c, fuse_uring_send_in_task), so
// each waiting entry is handed one of kick's requests instead, which its
// thread leaves unread for the successor. kick(queues, n) sends n
// requests from each queue's CPU, from another process (one of this
// process's own would keep it from exiting until the successor answers
// it), and returns once they are sent, with the queues whose CPU it ran
// on; Stop returns once no entry of those waits (a queue of a CPU it
// cannot run on gets no request from anyone).
func (u *Server) Stop(kick func(queues []int, n int) map[int]bool) {
	u.mu.Lock()
	u.stopping = true
	u.mu.Unlock()
	if kick == nil || u.qwg == nil {
		return
	}
	queues := make([]int, u.queues)
	for q := range queues {
		queues[q] = q
	}
	for q, ran := range kick(queues, u.perQueue) {
		if ran && q >= 0 && q < len(u.qwg) {
			u.qwg[q].Wait()
		}
	}
}

// Recovered counts the predecessor's ring entries whose request this
// server answered or committed (a takeover).
func (u *Server) Recovered() uint64 { return u.recovered.Load() }

// take saves the request the kernel put in e's buffers (commit ID id):
// its in-header and op_in, and a payload other than WRITE data (which
// stays in place: its answer is kept out of the payload until it is
// complete). The answer is written over the buffers; from the saved
// copy a successor can answer the request again.
func (e *uringEntry) take(id uint64) {
	h := (*fuse.InHeader)(unsafe.Pointer(&e.hdr[0]))
	psz := int(binary.LittleEndian.Uint32(e.hdr[uringPayloadSz:]))
	opsz := int(h.Length) - inHeaderSize - psz
	if opsz < 0 || opsz > uringEntInOut-uringOpIn || psz > len(e.payload) {
		opsz, psz = -1, 0 // answered EIO (answer)
	}
	saved := e.slot[slotSaved : slotSaved+savedMax]
	copy(saved, e.hdr[:inHeaderSize])
	n := inHeaderSize
	if opsz > 0 {
		n += copy(saved[n:], e.hdr[uringOpIn:uringOpIn+opsz])
	}
	if psz > 0 && h.Opcode != opWrite {
		copy(e.scratch[:psz], e.payload[:psz])
	}
	binary.LittleEndian.PutUint64(e.slot[recID:], id)
	e.setU32(recSaved, uint32(n))
	if opsz < 0 {
		e.setU32(recSaved, 0)
	}
	e.setU32(recPsz, uint32(psz))
	e.setU32(recOutArgs, 0)
	e.setState(stHandling)
}

// finishWriteOut moves a WRITE's answer from where it was written into
// the payload, where the kernel reads it; done again by a successor if
// the daemon died in between.
func (e *uringEntry) finishWriteOut() {
	if n := int(e.u32(recOutArgs)); n > 0 && n <= writeOutMax {
		copy(e.payload[:n], e.slot[slotWriteOut:slotWriteOut+n])
		binary.LittleEndian.PutUint32(e.hdr[uringPayloadSz:], uint32(n))
	}
}

// answer answers the request saved in e's slot (take) into e's buffers,
// and marks the slot replied.
func (u *Server) answer(e *uringEntry) {
	saved := e.slot[slotSaved : slotSaved+savedMax]
	nsaved := int(e.u32(recSaved))
	psz := int(e.u32(recPsz))
	h := *(*fuse.InHeader)(unsafe.Pointer(&saved[0]))
	n, st := 0, fuse.EIO
	writeOut := 0
	if nsaved >= inHeaderSize && psz <= len(e.payload) {
		in := [][]byte{saved[:inHeaderSize], saved[inHeaderSize:nsaved]}
		if psz > 0 {
			if h.Opcode == opWrite {
				in = append(in, e.payload[:psz])
			} else {
				in = append(in, e.scratch[:psz])
			}
		}
		st = fuse.OK
		if u.Before != nil && h.NodeId != 0 {
			st = u.Before(h.Opcode, fusedev.NodesOf(&h, saved[inHeaderSize:nsaved]))
		}
		if st.Ok() {
			out := e.payload
			if h.Opcode == opWrite {
				// The data stays whole until the answer is complete: a
				// successor may have to write it again.
				out = e.slot[slotWriteOut : slotWriteOut+writeOutMax]
			}
			n, st = u.ps.HandleRequest(in, [][]byte{e.hdr[:outHeaderSize], out})
			if h.Opcode == opWrite && n > outHeaderSize {
				writeOut = n - outHeaderSize
			}
		}
	}
	if n < outHeaderSize {
		// Decoding failed, a hook refused, or a reply was suppressed
		// (no such request comes this way): the kernel still waits for
		// an answer.
		if st.Ok() {
			st = fuse.EIO
		}
		oh := (*fuse.OutHeader)(unsafe.Pointer(&e.hdr[0]))
		*oh = fuse.OutHeader{Length: uint32(outHeaderSize), Status: -int32(st), Unique: h.Unique}
		n = outHeaderSize
	}
	binary.LittleEndian.PutUint32(e.hdr[uringPayloadSz:], uint32(n-outHeaderSize))
	e.setU32(recOutArgs, uint32(writeOut))
	e.setState(stReplied)
	e.finishWriteOut()
	u.served.Add(1)
}
