package fuseuring

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// recordFS answers WRITE and LOOKUP and records what it was asked.
type recordFS struct {
	fuse.RawFileSystem
	mu      sync.Mutex
	writes  []string // "offset:data"
	lookups []string
}

func (r *recordFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, string(binary.LittleEndian.AppendUint64(nil, in.Offset))+string(data))
	return uint32(len(data)), fuse.OK
}

func (r *recordFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups = append(r.lookups, name)
	out.NodeId = 42
	return fuse.OK
}

func kernelInit() *fuse.InitIn {
	return &fuse.InitIn{Major: 7, Minor: 40, MaxReadAhead: 128 << 10}
}

// deliver puts a request in e's buffers as the kernel does: the
// in-header, op_in, payload, and the commit ID.
func deliver(e *uringEntry, h fuse.InHeader, opIn, payload []byte) {
	h.Length = uint32(inHeaderSize + len(opIn) + len(payload))
	copy(e.hdr, unsafe.Slice((*byte)(unsafe.Pointer(&h)), inHeaderSize))
	copy(e.hdr[uringOpIn:], opIn)
	copy(e.payload, payload)
	binary.LittleEndian.PutUint64(e.hdr[uringCommitID:], h.Unique)
	binary.LittleEndian.PutUint32(e.hdr[uringPayloadSz:], uint32(len(payload)))
}

func newTestServer(t *testing.T, fs *recordFS) *Server {
	t.Helper()
	u, err := NewShared(64<<10, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := u.initProtocol(fs, &fuse.MountOptions{MaxWrite: 64 << 10}, kernelInit()); err != nil {
		u.Close()
		t.Fatal(err)
	}
	return u
}

// successor is what a new daemon makes of u's region once u is gone: the
// same memory at the same address.
func successor(t *testing.T, u *Server, fs *recordFS) *Server {
	t.Helper()
	fd, layout := u.Region()
	dup, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	u.Close() // the mapping goes, as with the process
	n, err := Adopt(dup, layout, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	if err := n.initProtocol(fs, &fuse.MountOptions{MaxWrite: 64 << 10}, kernelInit()); err != nil {
		t.Fatal(err)
	}
	return n
}

func writeRequest(unique uint64, off uint64, data []byte) (fuse.InHeader, []byte) {
	// go-fuse's WriteIn starts with the InHeader; op_in is what follows.
	in := fuse.WriteIn{Fh: 3, Offset: off, Size: uint32(len(data))}
	return fuse.InHeader{Opcode: opWrite, Unique: unique, NodeId: 7},
		unsafe.Slice((*byte)(unsafe.Pointer(&in)), unsafe.Sizeof(in))[inHeaderSize:]
}

// The region is mapped by a successor at the address the kernel knows,
// with what the predecessor left in it; a layout that does not match the
// memory is refused.
func TestRegionAdoptedAtSameAddress(t *testing.T) {
	u, err := NewShared(64<<10, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	base := uintptr(unsafe.Pointer(&u.reg.mem[0]))
	copy(u.entries[len(u.entries)-1].payload, "left by the predecessor")
	fd, _ := u.Region()
	bad, _ := unix.Dup(fd)
	if _, err := Adopt(bad, []byte(`{"base":1,"slots":1,"slot_size":4096,"payload":1,"queues":1,"per_queue":1}`), zerolog.Nop()); err == nil {
		t.Fatal("a layout that does not match the memory was adopted")
	}
	n := successor(t, u, &recordFS{RawFileSystem: fuse.NewDefaultRawFileSystem()})
	if got := uintptr(unsafe.Pointer(&n.reg.mem[0])); got != base {
		t.Fatalf("adopted at %#x, the predecessor had %#x", got, base)
	}
	if !bytes.HasPrefix(n.entries[len(n.entries)-1].payload, []byte("left by the predecessor")) {
		t.Fatal("the successor's slot does not hold what the predecessor left")
	}
	if len(n.entries) != len(u.entries) || n.entries[0].qid != 0 || n.entries[len(n.entries)-1].qid != uint16(n.queues-1) {
		t.Fatalf("%d slots, queues %d..%d", len(n.entries), n.entries[0].qid, n.entries[len(n.entries)-1].qid)
	}
}

// What a daemon leaves in a slot when it dies at each point of a
// request, and what its successor does with it: a request delivered and
// not read is answered; one being answered is answered again from the
// saved copy (the buffers may hold half an answer); an answer complete
// is committed as it is. A WRITE's data stays whole until its answer is.
func TestSlotResume(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 300)
	fs := &recordFS{RawFileSystem: fuse.NewDefaultRawFileSystem()}

	t.Run("unseen", func(t *testing.T) {
		u := newTestServer(t, fs)
		e := u.entries[0]
		e.markRegistering()
		if got := e.pending(); got != resumeNone {
			t.Fatalf("a registered slot: %v", got)
		}
		h, op := writeRequest(100, 4096, data)
		deliver(e, h, op, data)
		n := successor(t, u, fs)
		if got := n.entries[0].pending(); got != resumeUnseen {
			t.Fatalf("a request delivered and not read: %v, want unseen", got)
		}
	})

	t.Run("handling", func(t *testing.T) {
		fs.writes = nil
		u := newTestServer(t, fs)
		e := u.entries[1]
		e.markRegistering()
		h, op := writeRequest(200, 8192, data)
		deliver(e, h, op, data)
		e.take(200)
		// Died while answering: the out header is written over the
		// in-header already.
		copy(e.hdr[:outHeaderSize], make([]byte, outHeaderSize))
		n := successor(t, u, fs)
		ne := n.entries[1]
		if got := ne.pending(); got != resumeSaved {
			t.Fatalf("a request being answered: %v, want saved", got)
		}
		n.answer(ne)
		checkWriteAnswer(t, ne, 200, len(data))
		if len(fs.writes) != 1 || fs.writes[0][8:] != string(data) || binary.LittleEndian.Uint64([]byte(fs.writes[0][:8])) != 8192 {
			t.Fatalf("the successor wrote %d times, not the request's data at its offset", len(fs.writes))
		}
		if got := ne.pending(); got != resumeCommit {
			t.Fatalf("after the answer: %v, want commit", got)
		}
	})

	t.Run("replied", func(t *testing.T) {
		fs.writes = nil
		u := newTestServer(t, fs)
		e := u.entries[2]
		e.markRegistering()
		h, op := writeRequest(300, 0, data)
		deliver(e, h, op, data)
		e.take(300)
		u.answer(e)
		// Died after the answer's record, before it reached the
		// payload: the successor puts it there again.
		copy(e.payload[:8], "garbage!")
		n := successor(t, u, fs)
		ne := n.entries[2]
		if got := ne.pending(); got != resumeCommit {
			t.Fatalf("an answer complete: %v, want commit", got)
		}
		ne.finishWriteOut()
		checkWriteAnswer(t, ne, 300, len(data))
		if len(fs.writes) != 1 {
			t.Fatalf("%d writes: a committed answer was answered again", len(fs.writes))
		}
		// The kernel then delivered the next request to the entry,
		// which the dead daemon never read.
		h, op = writeRequest(302, 0, data)
		deliver(ne, h, op, data)
		if got := ne.pending(); got != resumeUnseen {
			t.Fatalf("a request after a committed answer: %v, want unseen", got)
		}
	})

	t.Run("lookup", func(t *testing.T) {
		fs.lookups = nil
		u := newTestServer(t, fs)
		e := u.entries[0]
		e.markRegistering()
		deliver(e, fuse.InHeader{Opcode: 1, Unique: 400, NodeId: 1}, nil, []byte("00000000000000000001.log\x00"))
		e.take(400)
		// The answer (an EntryOut) goes over the payload, where the
		// name came: the saved copy still has it.
		copy(e.payload, bytes.Repeat([]byte{0xff}, 64))
		n := successor(t, u, fs)
		ne := n.entries[0]
		n.answer(ne)
		if len(fs.lookups) != 1 || fs.lookups[0] != "00000000000000000001.log" {
			t.Fatalf("the successor looked up %q", fs.lookups)
		}
		oh := (*fuse.OutHeader)(unsafe.Pointer(&ne.hdr[0]))
		if oh.Status != 0 || oh.Unique != 400 {
			t.Fatalf("answer header %+v", *oh)
		}
		if id := binary.LittleEndian.Uint64(ne.payload); id != 42 {
			t.Fatalf("answer's node ID %d, want 42", id)
		}
	})
}

func checkWriteAnswer(t *testing.T, e *uringEntry, unique uint64, n int) {
	t.Helper()
	oh := (*fuse.OutHeader)(unsafe.Pointer(&e.hdr[0]))
	if oh.Status != 0 || oh.Unique != unique {
		t.Fatalf("answer header %+v, want unique %d and no error", *oh, unique)
	}
	if sz := binary.LittleEndian.Uint32(e.hdr[uringPayloadSz:]); sz != 8 {
		t.Fatalf("answer payload %d bytes, want a WriteOut's 8", sz)
	}
	if got := binary.LittleEndian.Uint32(e.payload); got != uint32(n) {
		t.Fatalf("the answer says %d bytes written, want %d", got, n)
	}
}
