package fs

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// sendfileAll reads [0, n) of fd the way a Kafka broker serves a fetch:
// sendfile(2), which goes through the page cache even with direct I/O.
func sendfileAll(t *testing.T, fd, n int) []byte {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	out := make([]byte, 0, n)
	buf := make([]byte, 64<<10)
	for off := int64(0); int(off) < n; {
		k, err := unix.Sendfile(p[1], fd, &off, min(len(buf), n-int(off)))
		if err != nil {
			t.Fatalf("sendfile at %d: %v", off, err)
		}
		if k == 0 {
			t.Fatalf("sendfile at %d of %d: end of file", off, n)
		}
		for k > 0 {
			r, err := unix.Read(p[0], buf[:k])
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, buf[:r]...)
			k -= r
		}
	}
	return out
}

// [mount] direct_io: writes bypass the page cache, and what a broker reads
// back by sendfile, or maps, is still what was written, across appends
// that end anywhere in a page and across a move under the open files.
func TestDirectIO(t *testing.T) {
	m := mount(t, mountOpt{directIO: true})
	if !m.call(t, request{Op: "directio"}).Direct {
		t.Fatal("direct_io asked for, and files are not opened for direct I/O (this kernel offers FUSE_DIRECT_IO_ALLOW_MMAP)")
	}
	rel := "t-0/00000000000000000000.log"
	if err := os.Mkdir(m.path("t-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(m.path(rel), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The broker's reader stays open for the whole test, so that a
	// stale page would stay in its cache.
	r, err := os.Open(m.path(rel))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want, sizes := kafkaBatches(96)
	off := 0
	check := func(what string) {
		t.Helper()
		if got := sendfileAll(t, int(r.Fd()), off); !bytes.Equal(got, want[:off]) {
			t.Fatalf("%s: sendfile of %d bytes: %s", what, off, firstDiff(got, want[:off], 0))
		}
		got := make([]byte, off)
		if n, err := r.ReadAt(got, 0); n != off {
			t.Fatalf("%s: read %d of %d bytes: %v", what, n, off, err)
		}
		if !bytes.Equal(got, want[:off]) {
			t.Fatalf("%s: read: %s", what, firstDiff(got, want[:off], 0))
		}
	}
	for i, n := range sizes[:64] {
		if _, err := w.Write(want[off : off+n]); err != nil {
			t.Fatal(err)
		}
		off += n
		if i == 0 {
			// Written directly: nothing of it in the mount's cache.
			var cs unix.Cachestat_t
			if err := unix.Cachestat(uint(w.Fd()), &unix.CachestatRange{Off: 0, Len: uint64(off)}, &cs, 0); err != nil {
				t.Fatalf("cachestat: %v", err)
			}
			if cs.Cache != 0 {
				t.Errorf("%d pages of a direct write in the page cache", cs.Cache)
			}
		}
		check("append")
	}

	// Kafka's index files are shared mappings.
	idx := m.path("t-0/00000000000000000000.index")
	xf, err := os.OpenFile(idx, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer xf.Close()
	if err := xf.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(xf.Fd()), 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap of a file opened for direct I/O: %v", err)
	}
	idxWant := pattern(9, 1<<20)
	copy(mem, idxWant)
	if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	if err := unix.Munmap(mem); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(idx); err != nil || !bytes.Equal(got, idxWant) {
		t.Fatalf("index read back after msync: %v, equal %v", err, bytes.Equal(got, idxWant))
	}

	// A move under the open files, then more appends.
	if err := m.move(t, rel, "slow"); err != nil {
		t.Fatal(err)
	}
	check("after the move")
	for _, n := range sizes[64:] {
		if _, err := w.Write(want[off : off+n]); err != nil {
			t.Fatal(err)
		}
		off += n
		check("append after the move")
	}
	if tier := m.tierOf(t, rel); tier != 1 {
		t.Errorf("segment on tier %d after the move, want 1", tier)
	}
	if got, err := os.ReadFile(filepath.Join(m.tiers[1], rel)); err != nil || !bytes.Equal(got, want) {
		t.Errorf("backing on the slow tier: %v, equal %v", err, bytes.Equal(got, want))
	}
}

// A broker's fetch (sendfile, through the page cache in every mode) right
// behind its appends, concurrently: what it reads of the completed writes
// is what was written. The read-ahead of a fetch reads the page holding
// the end of the file while the next append may be on its way to the
// daemon; the cache must not keep that page as it was before the append.
func TestSendfileBehindWriter(t *testing.T) {
	for _, tt := range []struct {
		name string
		o    mountOpt
	}{{"page cache", mountOpt{}}, {"direct I/O", mountOpt{directIO: true}}} {
		t.Run(tt.name, func(t *testing.T) {
			m := mount(t, tt.o)
			w, r := writerAndReader(t, m.path("00000000000000000000.log"))
			want, sizes := kafkaBatches(2048) // about 32 MiB
			var written atomic.Int64
			errs := appendBatches(w, want, sizes, func(off int) { written.Store(int64(off)) })
			// A second reader keeps reading the page that holds the
			// end of the file, so that it is read while appends are on
			// their way.
			stop := make(chan struct{})
			hammered := make(chan int)
			go func() {
				var hp [2]int
				if err := unix.Pipe2(hp[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
					panic(err)
				}
				defer unix.Close(hp[0])
				defer unix.Close(hp[1])
				sink := make([]byte, 8192)
				n := 0
				for {
					select {
					case <-stop:
						hammered <- n
						return
					default:
					}
					var st unix.Stat_t
					if unix.Fstat(int(r.Fd()), &st) != nil || st.Size == 0 {
						continue
					}
					off := (st.Size - 1) &^ (pageSize - 1)
					if k, err := unix.Sendfile(hp[1], int(r.Fd()), &off, int(st.Size-off)); err == nil && k > 0 {
						unix.Read(hp[0], sink)
						n++
					}
				}
			}()
			defer func() { close(stop); t.Logf("%d reads of the last page", <-hammered) }()
			var pp [2]int
			if err := unix.Pipe2(pp[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			pipeR := os.NewFile(uintptr(pp[0]), "pipe")
			defer pipeR.Close()
			defer unix.Close(pp[1])
			buf := make([]byte, 64<<10)
			fetches := 0
			for pos := int64(0); pos < int64(len(want)); {
				upTo := written.Load()
				if upTo == pos {
					runtime.Gosched() // the writer has the next batch on its way
					continue
				}
				// One fetch: [pos, upTo) as the broker sends it, in
				// pieces of at most 64 KiB (the pipe's size).
				fetches++
				for pos < upTo {
					off := pos
					k, err := unix.Sendfile(pp[1], int(r.Fd()), &off, int(min(int64(len(buf)), upTo-pos)))
					if err != nil || k == 0 {
						t.Fatalf("sendfile at %d of %d written: %d, %v", pos, upTo, k, err)
					}
					if _, err := io.ReadFull(pipeR, buf[:k]); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(buf[:k], want[pos:pos+int64(k)]) {
						t.Fatalf("fetch %d: sendfile at %d (%d bytes, %d written): %s", fetches, pos, k, upTo,
							firstDiff(buf[:k], want[pos:pos+int64(k)], int(pos)))
					}
					pos += int64(k)
				}
			}
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
			t.Logf("%d fetches of %d batches, %d READs answered", fetches, len(sizes), m.call(t, request{Op: "reads"}).Reads)
		})
	}
}
