// Package fusedev serves a FUSE connection's /dev/fuse descriptor from a
// loop of its own, with go-fuse's ProtocolServer decoding each request
// and calling the node bridge, as internal/fuseuring does for the rings.
// It knows FUSE and go-fuse, nothing of tierfs.
//
// Why not go-fuse's Server: a connection that outlives its daemon (the
// supervisor holds the descriptor, internal/supervisor) is served by a
// new daemon that must not wait for an INIT the kernel sent long ago.
// go-fuse's Server insists on reading INIT first and cannot stop reading
// without an unmount. Here INIT is either read from the device (a fresh
// mount) or replayed from the bytes the first daemon saved (a takeover),
// the requests the dead daemon had read and not answered are asked for
// again (FUSE_NOTIFY_RESEND), and a daemon that is replaced on purpose
// stops reading, finishes what it has read, and leaves the rest to the
// kernel to resend to its successor (Stop).
package fusedev

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Opcodes and notification codes this package handles by number (the
// uapi header installed here predates FUSE_NOTIFY_RESEND, Linux 6.9).
const (
	OpLookup        = 1
	OpForget        = 2
	OpRename        = 12
	OpLink          = 13
	OpWrite         = 16
	OpInit          = 26
	OpInterrupt     = 36
	OpDestroy       = 38
	OpBatchForget   = 42
	OpRename2       = 45
	OpCopyFileRange = 47

	notifyInvalInode = 2
	notifyInvalEntry = 3
	notifyDelete     = 6
	notifyResend     = 7

	inHeaderSize  = int(unsafe.Sizeof(fuse.InHeader{}))
	outHeaderSize = int(unsafe.Sizeof(fuse.OutHeader{}))
	// A WRITE's header and arguments, before its data.
	writeInSize = int(unsafe.Sizeof(fuse.WriteIn{}))
)

// Readers: at least minReaders threads wait in read(2) on the device;
// one that takes a request starts another if none is left waiting, up to
// maxReaders (a slow fsync or a move's commit holds its thread), and one
// that finds more than idleReaders waiting ends.
const (
	minReaders  = 2
	idleReaders = 4
	maxReaders  = 32
)

// PayloadWriter is a file system that takes a WRITE's data from a pipe.
// While the last request answered was a large WRITE (SpliceMin), its
// server splices requests from /dev/fuse into a pipe of the reader's: the
// kernel lends the pipe the pages of the mount's page cache that hold a
// WRITE's data instead of copying them into the daemon, and the data goes
// on to the backing file with one splice, one copy where a read(2) of the
// device and a pwrite(2) make two.
type PayloadWriter interface {
	WritePayload(in *fuse.WriteIn, p *Payload) (uint32, fuse.Status)
}

// Payload is a WRITE's data waiting in a pipe: Len bytes at the head of
// the pipe whose read end is Fd. What the writer leaves there the server
// drops once it has answered.
type Payload struct {
	Fd  int
	Len int
	// Cancel stands for the request's cancel channel where the payload
	// goes through go-fuse's node bridge: a file handle's Write called
	// with no data finds the payload by it (PayloadOf). One per reader,
	// never closed.
	Cancel chan struct{}
}

// payloads maps each reader's Payload.Cancel to its payload.
var payloads sync.Map

// PayloadOf returns the payload whose Cancel channel is cancel, or nil:
// how a file handle's Write, called by go-fuse's bridge with the channel
// WritePayload passed it and no data, finds its data.
func PayloadOf(cancel <-chan struct{}) *Payload {
	if cancel == nil {
		return nil
	}
	if p, ok := payloads.Load(cancel); ok {
		return p.(*Payload)
	}
	return nil
}

// Server serves one FUSE connection's /dev/fuse descriptor.
type Server struct {
	fd  int
	ps  *fuse.ProtocolServer
	log zerolog.Logger
	// pw, when the file system is one, takes WRITEs from the pipe;
	// noSplice is set when the kernel refuses to splice from the device.
	pw       PayloadWriter
	noSplice atomic.Bool
	// spliceMin: the readers splice the requests after a WRITE of at
	// least this many bytes, and read the others; 0 splices every
	// request. SpliceMin by default. spliceNext: the last request
	// answered was such a WRITE.
	spliceMin  int
	spliceNext atomic.Bool
	// Before, when set, is called with each request's opcode and the
	// node IDs it names (the header's, and a RENAME's new parent, a
	// LINK's target, a COPY_FILE_RANGE's destination) before it is
	// decoded; a status other than OK is the request's answer. Not for
	// FORGET, INTERRUPT and the like.
	Before func(opcode uint32, nodes []uint64) fuse.Status

	inSize, outSize int
	kernel          fuse.InitIn
	initReq         []byte // the INIT request as the kernel sent it
	initReply       []byte // the answer it got

	mu       sync.Mutex
	stopping bool
	waiting  int // readers in read(2)
	readers  int
	// free holds the buffers of readers that ended, for the next reader
	// to start, so that a buffer is allocated and prefaulted once, not
	// once per reader: readers come and go with the load. A slice under
	// mu, not a sync.Pool, whose clearing at each GC would drop the
	// prefaulted buffers the list is for. Readers and free together hold
	// at most maxReaders buffers.
	free    []*buffers
	started atomic.Uint64 // readers started, for tests
	spliced atomic.Uint64 // WRITEs answered from a pipe
	made    atomic.Uint64 // buffers allocated, for tests
	// handling counts the requests being answered, under mu: a
	// WaitGroup's Add from zero must happen before its Wait, and a reader
	// can take a request while Wait runs (the unmount's last ones).
	handling int
	idle     *sync.Cond // on mu: handling fell to zero
	served   atomic.Uint64
	done     chan struct{} // closed when the connection is gone
	doneOnce sync.Once
}

// New makes the server of the connection on fd (the caller keeps fd open
// while it serves) for rawFS with go-fuse's mount options mo (MaxWrite and
// the capabilities asked for at INIT must be those of the mount).
func New(fd int, rawFS fuse.RawFileSystem, mo *fuse.MountOptions, log zerolog.Logger) *Server {
	maxWrite := mo.MaxWrite
	if maxWrite <= 0 {
		maxWrite = 128 << 10
	}
	// A WRITE's header and data, or a SETXATTR's value (up to 64 KiB);
	// replies: a READ of MaxWrite, a LISTXATTR or READDIR of up to 64 KiB.
	size := max(maxWrite, 64<<10) + 64<<10
	s := &Server{
		fd: fd, ps: fuse.NewProtocolServer(rawFS, mo), log: log,
		inSize: size, outSize: size, done: make(chan struct{}),
	}
	s.idle = sync.NewCond(&s.mu)
	s.spliceMin = SpliceMin
	s.pw, _ = rawFS.(PayloadWriter)
	return s
}

// ReadInit reads the kernel's INIT from the device and answers it: a
// fresh mount. It returns the request and the answer, for a successor to
// replay (Replay).
func (s *Server) ReadInit() (req, reply []byte, err error) {
	buf := make([]byte, s.inSize)
	var n int
	for {
		n, err = unix.Read(s.fd, buf)
		if err == unix.EINTR || err == unix.ENOENT {
			continue
		}
		break
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading INIT: %w", err)
	}
	if n < inHeaderSize || (*fuse.InHeader)(unsafe.Pointer(&buf[0])).Opcode != OpInit {
		return nil, nil, errors.New("the first request is not INIT")
	}
	req = append([]byte(nil), buf[:n]...)
	reply, err = s.init(req)
	if err != nil {
		return nil, nil, err
	}
	if _, err := unix.Write(s.fd, reply); err != nil {
		return nil, nil, fmt.Errorf("answering INIT: %w", err)
	}
	return req, reply, nil
}

// Replay takes over a connection whose INIT a predecessor answered: the
// protocol server learns the kernel's version and flags from the saved
// request, and must agree with the saved answer (the same mount options),
// or the kernel and this daemon would read requests differently.
func (s *Server) Replay(req, reply []byte) error {
	got, err := s.init(req)
	if err != nil {
		return err
	}
	// The answer's header carries the kernel's unique, the same here.
	if string(got) != string(reply) {
		return fmt.Errorf("this daemon would answer the connection's INIT otherwise than the daemon that did (%d bytes, %d saved): the mount's options changed; unmount and mount again to apply them", len(got), len(reply))
	}
	return nil
}

func (s *Server) init(req []byte) ([]byte, error) {
	if len(req) < inHeaderSize {
		return nil, errors.New("INIT request too short")
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&s.kernel)), unsafe.Sizeof(s.kernel)), req)
	out := make([]byte, 4096)
	n, st := s.ps.HandleRequest([][]byte{req}, [][]byte{out})
	if !st.Ok() || n < outHeaderSize {
		return nil, fmt.Errorf("INIT: %v", st)
	}
	if oh := (*fuse.OutHeader)(unsafe.Pointer(&out[0])); oh.Status != 0 {
		return nil, fmt.Errorf("INIT: %v", syscall.Errno(-oh.Status))
	}
	s.initReq = req
	s.initReply = out[:n]
	return out[:n], nil
}

// KernelSettings is the kernel's INIT: its version and what it offered.
func (s *Server) KernelSettings() *fuse.InitIn {
	k := s.kernel
	return &k
}

// CanResend says whether the kernel resends requests on FUSE_NOTIFY_RESEND
// (Linux 6.9+).
func (s *Server) CanResend() bool { return s.kernel.Flags64()&fuse.CAP_HAS_RESEND != 0 }

// Resend asks the kernel to queue again every request a reader of this
// connection took and did not answer: those a dead predecessor had read.
// Call it before Serve, never while this daemon's readers run (it would
// resend the requests they are answering).
func (s *Server) Resend() error {
	return s.notify(notifyResend, nil)
}

// Serve starts the readers; it returns at once. Done is closed when the
// connection is gone (unmounted or aborted).
func (s *Server) Serve() {
	s.mu.Lock()
	for range minReaders {
		s.startReaderLocked()
	}
	s.mu.Unlock()
}

// Done is closed once the connection is gone.
func (s *Server) Done() <-chan struct{} { return s.done }

// SplicedWrites counts the WRITEs whose data the file system took from a
// pipe.
func (s *Server) SplicedWrites() uint64 { return s.spliced.Load() }

// Served counts the requests answered.
func (s *Server) Served() uint64 { return s.served.Load() }

// Stop stops taking requests and waits for those being answered. A
// request read after it is left unanswered: the kernel keeps it for a
// successor's Resend. The readers still in read(2) end with the process.
func (s *Server) Stop() {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	s.waitHandled()
}

// buffers are a reader's: the request read into in, the reply made in
// out, and the pipe requests are spliced into when the file system takes
// WRITEs from one (nil otherwise, or when the pipe could not be made).
type buffers struct {
	in, out []byte
	pipe    *pipe
}

// pipe is a reader's pipe and the payload that names it.
type pipe struct {
	r, w    int
	payload *Payload
}

// newPipe makes a pipe that holds a whole request (PipeSize; beyond
// /proc/sys/fs/pipe-max-size that needs CAP_SYS_RESOURCE, see
// mountutil's preparePipes). The kernel fails a request with EIO when its
// pages do not fit the pipe, so a pipe too small is not used at all.
func (s *Server) newPipe() (*pipe, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	// Every page of the largest request in a slot of its own, one more
	// for data that does not start on a page, and the header's.
	want := s.PipeSize()
	got, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, want)
	if err == nil && got < want {
		err = fmt.Errorf("the pipe holds %d bytes, %d needed", got, want)
	}
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, err
	}
	p := &pipe{r: fds[0], w: fds[1]}
	p.payload = &Payload{Fd: p.r, Cancel: make(chan struct{})}
	payloads.Store((<-chan struct{})(p.payload.Cancel), p.payload)
	return p, nil
}

// close closes the pipe; what is in it is dropped.
func (p *pipe) close() {
	payloads.Delete((<-chan struct{})(p.payload.Cancel))
	unix.Close(p.r)
	unix.Close(p.w)
}

// readFull reads exactly len(b) bytes from the pipe.
func (p *pipe) readFull(b []byte) error {
	for got := 0; got < len(b); {
		n, err := unix.Read(p.r, b[got:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("the pipe is empty")
		}
		got += n
	}
	return nil
}

// drain drops what is left in the pipe, reading it into scratch.
func (p *pipe) drain(scratch []byte) error {
	for {
		left, err := unix.IoctlGetInt(p.r, unix.TIOCINQ) // FIONREAD
		if err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
		if err := p.readFull(scratch[:min(left, len(scratch))]); err != nil {
			return err
		}
	}
}

func (s *Server) startReaderLocked() {
	s.readers++
	s.started.Add(1)
	var b *buffers
	if n := len(s.free); n > 0 {
		b, s.free[n-1] = s.free[n-1], nil
		s.free = s.free[:n-1]
	}
	go s.reader(b)
}

// endReaderLocked counts a reader out and keeps its buffers for the next.
func (s *Server) endReaderLocked(b *buffers) {
	s.readers--
	if len(s.free) < maxReaders {
		s.free = append(s.free, b)
	}
}

// reader serves requests with the buffers b, or new ones if nil.
func (s *Server) reader(b *buffers) {
	if b == nil {
		// Outside mu: touching a few MiB takes a while.
		b = &buffers{in: prefault(make([]byte, s.inSize)), out: prefault(make([]byte, s.outSize))}
		s.made.Add(1)
	}
	if b.pipe == nil && s.pw != nil && !s.noSplice.Load() {
		p, err := s.newPipe()
		if err != nil {
			s.log.Warn().Err(err).Msg("no pipe to splice requests into: this reader reads them")
		}
		b.pipe = p
	}
	in, out := b.in, b.out
	for {
		s.mu.Lock()
		if s.stopping {
			s.endReaderLocked(b)
			s.mu.Unlock()
			return
		}
		s.waiting++
		s.mu.Unlock()
		spliced := b.pipe != nil && (s.spliceNext.Load() || s.spliceMin == 0) && !s.noSplice.Load()
		var n int
		var err error
		if spliced {
			var n64 int64
			n64, err = unix.Splice(s.fd, nil, b.pipe.w, nil, s.inSize, 0)
			n = int(n64)
		} else {
			n, err = unix.Read(s.fd, in)
		}
		s.mu.Lock()
		s.waiting--
		if err != nil {
			s.mu.Unlock()
			switch err {
			case unix.EINTR, unix.ENOENT, unix.EAGAIN:
				// ENOENT: the request was interrupted before we got it.
				continue
			case unix.EINVAL:
				if spliced {
					// Checked before a request is taken: none is lost.
					s.log.Warn().Err(err).Msg("the kernel does not splice requests from /dev/fuse; reading them")
					s.noSplice.Store(true)
					continue
				}
				s.log.Error().Err(err).Msg("reading /dev/fuse; this reader stops")
			case unix.ENODEV:
			default:
				s.log.Error().Err(err).Msg("reading /dev/fuse; this reader stops")
			}
			s.mu.Lock()
			s.endReaderLocked(b)
			s.mu.Unlock()
			s.doneOnce.Do(func() { close(s.done) })
			return
		}
		if s.stopping {
			// Left for the successor: the kernel resends it.
			if spliced {
				s.dropPipeLocked(b)
			}
			s.endReaderLocked(b)
			s.mu.Unlock()
			return
		}
		s.handling++
		if s.waiting == 0 && s.readers < maxReaders {
			s.startReaderLocked()
		}
		s.mu.Unlock()

		if spliced {
			s.handleSpliced(b, n)
		} else {
			s.handle(in[:n], out)
		}
		// The readers splice their next requests if this one was a
		// large WRITE: a splice costs each request more than a read (a
		// page for the header, the pipe's slots), which only a large
		// WRITE's saved copy pays back (perf.md 27). One flag for all
		// readers, so that a reader that starts (they come and go with
		// the load) joins a stream of writes at once.
		large := n >= writeInSize+s.spliceMin && (*fuse.InHeader)(unsafe.Pointer(&in[0])).Opcode == OpWrite
		if s.spliceNext.Load() != large {
			s.spliceNext.Store(large)
		}

		s.mu.Lock()
		if s.handling--; s.handling == 0 {
			s.idle.Broadcast()
		}
		if s.waiting >= idleReaders && s.readers > minReaders {
			s.endReaderLocked(b)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}

// prefault touches every page of b. The kernel copies a request into the
// reader's buffer, and a reply out of it, by pinning its pages; a page
// not yet mapped is faulted in, and that fails when the daemon is being
// killed, which fails the request with EIO: the one request a kill -9
// catches being copied would reach its caller as an error instead of
// being resent to the successor. Mapped pages are pinned without a fault.
func prefault(b []byte) []byte {
	for i := 0; i < len(b); i += 4096 {
		b[i] = 0
	}
	return b
}

// SpliceMin is the smallest WRITE after which a reader splices its next
// request: below it, the copy a splice saves costs less than what the
// splice adds to every request.
const SpliceMin = 64 << 10

// SetSpliceMin sets the threshold; 0 splices every request. Before Serve.
func (s *Server) SetSpliceMin(n int) { s.spliceMin = n }

// Splices says whether the server splices requests into pipes, its file
// system taking WRITEs from them (PayloadWriter).
func (s *Server) Splices() bool { return s.pw != nil && !s.noSplice.Load() }

// NoSplice has the server read requests instead. Before Serve.
func (s *Server) NoSplice() { s.noSplice.Store(true) }

// PipeSize is the size in bytes of a reader's pipe: the largest request,
// each of its pages in a slot of its own.
func (s *Server) PipeSize() int { return s.inSize + 2*4096 }

// TryPipe makes a pipe of size bytes and closes it: whether this process
// may (CAP_SYS_RESOURCE, or size within /proc/sys/fs/pipe-max-size).
func TryPipe(size int) error {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	_, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, size)
	return err
}

// waitHandled returns once no request is being answered.
func (s *Server) waitHandled() {
	s.mu.Lock()
	for s.handling > 0 {
		s.idle.Wait()
	}
	s.mu.Unlock()
}

// dropPipeLocked empties b's pipe, or closes it if it cannot.
func (s *Server) dropPipeLocked(b *buffers) {
	if err := b.pipe.drain(b.in); err != nil {
		b.closePipe()
	}
}

// closePipe gives b's pipe up: the reader reads requests from then on.
func (b *buffers) closePipe() {
	b.pipe.close()
	b.pipe = nil
}

// handleSpliced answers the request of n bytes in b's pipe. A WRITE's
// data stays in the pipe for the file system (PayloadWriter); any other
// request is read into b.in and answered as one read from the device.
func (s *Server) handleSpliced(b *buffers, n int) {
	in, p := b.in, b.pipe
	head := min(n, writeInSize)
	err := p.readFull(in[:head])
	if err == nil && head == writeInSize && (*fuse.InHeader)(unsafe.Pointer(&in[0])).Opcode == OpWrite {
		if wi := (*fuse.WriteIn)(unsafe.Pointer(&in[0])); int(wi.Size) == n-writeInSize {
			s.handleWrite(b, wi)
			if err := p.drain(in); err != nil {
				s.log.Error().Err(err).Msg("emptying a reader's pipe; closing it")
				b.closePipe()
			}
			return
		}
	}
	if err == nil {
		err = p.readFull(in[head:n])
	}
	if err != nil {
		// Not seen: a pipe that holds less than splice put in it.
		s.log.Error().Err(err).Int("bytes", n).Msg("reading a request from a reader's pipe; closing it")
		b.closePipe()
		if head >= inHeaderSize {
			h := (*fuse.InHeader)(unsafe.Pointer(&in[0]))
			s.reply(b.out[:errorReply(b.out, h.Unique, fuse.EIO)], h.Opcode)
		}
		return
	}
	s.handle(in[:n], b.out)
}

// handleWrite answers a WRITE whose data is in b's pipe.
func (s *Server) handleWrite(b *buffers, in *fuse.WriteIn) {
	st := fuse.OK
	if s.Before != nil && in.NodeId != 0 {
		st = s.Before(OpWrite, []uint64{in.NodeId})
	}
	var written uint32
	if st.Ok() {
		b.pipe.payload.Len = int(in.Size)
		written, st = s.pw.WritePayload(in, b.pipe.payload)
		s.spliced.Add(1)
	}
	out := b.out
	n := errorReply(out, in.Unique, st)
	if st.Ok() {
		wo := fuse.WriteOut{Size: written}
		n += copy(out[n:], bytesOf(&wo))
		(*fuse.OutHeader)(unsafe.Pointer(&out[0])).Length = uint32(n)
	}
	s.reply(out[:n], OpWrite)
}

// reply writes an answer to the device.
func (s *Server) reply(out []byte, opcode uint32) {
	if _, err := unix.Write(s.fd, out); err != nil && err != unix.ENOENT {
		// ENOENT: the request was interrupted and is gone.
		s.log.Debug().Err(err).Uint32("opcode", opcode).Msg("writing a reply to /dev/fuse")
	}
	s.served.Add(1)
}

// handle answers one request.
func (s *Server) handle(req, out []byte) {
	if len(req) < inHeaderSize {
		return
	}
	h := (*fuse.InHeader)(unsafe.Pointer(&req[0]))
	unique, opcode := h.Unique, h.Opcode
	n, st := 0, fuse.OK
	if s.Before != nil {
		if ids, ok := nodesOf(req); ok {
			st = s.Before(opcode, ids)
		}
	}
	if st.Ok() {
		n, st = s.ps.HandleRequest([][]byte{req}, [][]byte{out})
	}
	if n == 0 {
		if st.Ok() {
			return // FORGET, an INTERRUPT answered: no reply
		}
		n = errorReply(out, unique, st)
	}
	s.reply(out[:n], opcode)
}

// errorReply writes an error answer to unique into out.
func errorReply(out []byte, unique uint64, st fuse.Status) int {
	*(*fuse.OutHeader)(unsafe.Pointer(&out[0])) = fuse.OutHeader{Length: uint32(outHeaderSize), Status: -int32(st), Unique: unique}
	return outHeaderSize
}

// nodesOf returns the node IDs a request names; ok is false for the
// requests that name none that must be known (FORGET, INTERRUPT, INIT).
func nodesOf(req []byte) ([]uint64, bool) {
	h := (*fuse.InHeader)(unsafe.Pointer(&req[0]))
	switch h.Opcode {
	case OpForget, OpBatchForget, OpInterrupt, OpInit, OpDestroy:
		return nil, false
	}
	if h.NodeId == 0 {
		return nil, false
	}
	return NodesOf(h, req[inHeaderSize:]), true
}

// NodesOf returns the node IDs a request with header h and arguments
// args (what follows the header) names: the header's, and a RENAME's new
// parent, a LINK's target, a COPY_FILE_RANGE's destination. For the
// io_uring transport too, whose requests come in pieces.
func NodesOf(h *fuse.InHeader, args []byte) []uint64 {
	ids := []uint64{h.NodeId}
	at := func(off int) {
		if len(args) >= off+8 {
			if id := *(*uint64)(unsafe.Pointer(&args[off])); id != 0 {
				ids = append(ids, id)
			}
		}
	}
	switch h.Opcode {
	case OpRename, OpRename2:
		at(0) // newdir
	case OpLink:
		at(0) // oldnodeid
	case OpCopyFileRange:
		at(16) // nodeid_out, after fh_in and off_in
	}
	return ids
}

// notify writes a notification (unique 0, the code in the error field).
func (s *Server) notify(code int32, parts ...[]byte) error {
	total := outHeaderSize
	for _, p := range parts {
		total += len(p)
	}
	buf := make([]byte, 0, total)
	oh := fuse.OutHeader{Length: uint32(total), Status: code}
	buf = append(buf, unsafe.Slice((*byte)(unsafe.Pointer(&oh)), outHeaderSize)...)
	for _, p := range parts {
		buf = append(buf, p...)
	}
	_, err := unix.Write(s.fd, buf)
	return err
}

func bytesOf[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

func status(err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return fuse.Status(e)
	}
	return fuse.EIO
}

// Notifier is go-fuse's ServerCallbacks over a /dev/fuse descriptor: the
// node bridge's way to the kernel's caches when no go-fuse Server runs.
// It is made before the connection exists (the bridge is built first);
// until Attach, every notification answers ENOSYS.
type Notifier struct {
	s atomic.Pointer[Server]
}

// Attach sends the notifications through s.
func (n *Notifier) Attach(s *Server) { n.s.Store(s) }

func (n *Notifier) server() *Server { return n.s.Load() }

// InodeNotify drops the kernel's cached data and attributes of a node.
func (n *Notifier) InodeNotify(node uint64, off int64, length int64) fuse.Status {
	s := n.server()
	if s == nil {
		return fuse.ENOSYS
	}
	o := fuse.NotifyInvalInodeOut{Ino: node, Off: off, Length: length}
	return status(s.notify(notifyInvalInode, bytesOf(&o)))
}

// EntryNotify drops the kernel's entry for name in parent.
func (n *Notifier) EntryNotify(parent uint64, name string) fuse.Status {
	s := n.server()
	if s == nil {
		return fuse.ENOSYS
	}
	o := fuse.NotifyInvalEntryOut{Parent: parent, NameLen: uint32(len(name))}
	return status(s.notify(notifyInvalEntry, bytesOf(&o), append([]byte(name), 0)))
}

// DeleteNotify tells the kernel that child left parent under name.
func (n *Notifier) DeleteNotify(parent uint64, child uint64, name string) fuse.Status {
	s := n.server()
	if s == nil {
		return fuse.ENOSYS
	}
	o := fuse.NotifyInvalDeleteOut{Parent: parent, Child: child, NameLen: uint32(len(name))}
	return status(s.notify(notifyDelete, bytesOf(&o), append([]byte(name), 0)))
}

// InodeRetrieveCache is not offered (tierfs never asks for it).
func (n *Notifier) InodeRetrieveCache(node uint64, offset int64, dest []byte) (int, fuse.Status) {
	return 0, fuse.ENOSYS
}

// InodeNotifyStoreCache is not offered (tierfs never fills the cache).
func (n *Notifier) InodeNotifyStoreCache(node uint64, offset int64, data []byte) fuse.Status {
	return fuse.ENOSYS
}

// The kernel's ioctls on /dev/fuse for passthrough backings (uapi
// FUSE_DEV_IOC_BACKING_OPEN and _CLOSE: _IOW(229, 1, struct
// fuse_backing_map) and _IOW(229, 2, uint32_t)).
const (
	iocBackingOpen  = 0x4010e501
	iocBackingClose = 0x4004e502
)

// RegisterBackingFd gives the kernel m.Fd as a passthrough backing and
// returns its id (Linux 6.9+, CAP_SYS_ADMIN).
func (n *Notifier) RegisterBackingFd(m *fuse.BackingMap) (int32, syscall.Errno) {
	s := n.server()
	if s == nil {
		return 0, syscall.ENOSYS
	}
	id, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(s.fd), iocBackingOpen, uintptr(unsafe.Pointer(m)))
	if errno != 0 {
		return 0, errno
	}
	return int32(id), 0
}

// UnregisterBackingFd takes a backing id back; the passthrough handles
// opened with it keep their backing.
func (n *Notifier) UnregisterBackingFd(id int32) syscall.Errno {
	s := n.server()
	if s == nil {
		return syscall.ENOSYS
	}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(s.fd), iocBackingClose, uintptr(unsafe.Pointer(&id)))
	return errno
}

// Wait returns once the connection is gone and no request is being
// answered.
func (s *Server) Wait() {
	<-s.done
	s.waitHandled()
}
