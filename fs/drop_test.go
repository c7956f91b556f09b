package fs

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// kafkaBatches is a log written the way Kafka appends: batches that end
// anywhere in a page.
func kafkaBatches(n int) (data []byte, sizes []int) {
	for i := range n {
		sizes = append(sizes, 16<<10+37*(i%7)+100)
	}
	total := 0
	for _, s := range sizes {
		total += s
	}
	return pattern(3, total), sizes
}

// A page that a write left in part, and that a later write completed, is
// dropped from the kernel's cache: otherwise it stays there not up to date
// and a reader gets it with a synchronous READ of its own (drop.go). Pages
// the writes covered whole stay cached.
func TestCompletedPagesLeaveTheCache(t *testing.T) {
	m := mount(t, mountOpt{})
	if m.cfg.DirectIO {
		t.Skip("with direct I/O reads and writes do not go through the page cache (TestDirectIO covers that mode)")
	}
	if m.cfg.Writeback {
		t.Skip("with the write-back cache the kernel reads a page before writing part of it: nothing to drop")
	}
	p := filepath.Join(m.mnt, "00000000000000000000.log")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want, sizes := kafkaBatches(64)
	before := m.call(t, request{Op: "dropped"}).Dropped
	var completed uint64
	off := 0
	for _, n := range sizes {
		if _, err := f.Write(want[off : off+n]); err != nil {
			t.Fatal(err)
		}
		if page := off &^ 4095; page != off && off+n >= page+4096 {
			completed++
		}
		off += n
	}
	if dropped := m.call(t, request{Op: "dropped"}).Dropped - before; dropped != completed {
		t.Errorf("%d pages dropped, want the %d that writes completed", dropped, completed)
	}

	// cachestat counts the pages in the cache, up to date or not.
	pages := uint64(len(want)+4095) / 4096
	var cs unix.Cachestat_t
	if err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{Off: 0, Len: uint64(len(want))}, &cs, 0); err != nil {
		t.Fatalf("cachestat: %v", err)
	}
	if cs.Cache != pages-completed {
		t.Errorf("%d of the file's %d pages in the cache, want %d: all but the %d completed ones",
			cs.Cache, pages, pages-completed, completed)
	}

	// And what a reader gets is what was written; the dropped pages
	// came from the daemon.
	reads := m.call(t, request{Op: "reads"}).Reads
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
	if n := m.call(t, request{Op: "reads"}).Reads - reads; n == 0 {
		t.Error("no READ reached the daemon, though pages were dropped")
	}
}

// A reader right behind a writer of unaligned batches (a consumer at the
// tail) always reads what was written, while the pages the writes complete
// are dropped under it.
func TestReaderBehindUnalignedWriter(t *testing.T) {
	m := mount(t, mountOpt{})
	w, r := writerAndReader(t, filepath.Join(m.mnt, "00000000000000000000.log"))
	want, sizes := kafkaBatches(512) // about 8 MiB
	var mu sync.Mutex
	written := 0
	cond := sync.NewCond(&mu)
	errs := appendBatches(w, want, sizes, func(off int) {
		mu.Lock()
		written = off
		cond.Broadcast()
		mu.Unlock()
	})
	buf := make([]byte, 1<<20)
	for pos := 0; pos < len(want); {
		mu.Lock()
		for written == pos {
			cond.Wait()
		}
		upTo := written
		mu.Unlock()
		// Read what is written so far, as a consumer fetch does.
		for pos < upTo {
			n, err := r.ReadAt(buf[:min(len(buf), upTo-pos)], int64(pos))
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if n == 0 {
				t.Fatalf("read at %d of %d written: nothing", pos, upTo)
			}
			if !bytes.Equal(buf[:n], want[pos:pos+n]) {
				t.Fatalf("read at %d (%d bytes): %s", pos, n, firstDiff(buf[:n], want[pos:pos+n], pos))
			}
			pos += n
		}
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if !m.cfg.Writeback && !m.cfg.DirectIO { // neither caches what is written in part
		if n := m.call(t, request{Op: "dropped"}).Dropped; n == 0 {
			t.Error("no page was dropped")
		}
	}
}

// writerAndReader creates p and opens it a second time for reading, as a
// broker's segment is written and fetched; both close at the test's end.
func writerAndReader(t *testing.T, p string) (w, r *os.File) {
	t.Helper()
	w, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	r, err = os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return w, r
}

// appendBatches writes want to w in pieces of sizes from a goroutine of
// its own, calling wrote with the bytes written so far after each piece;
// the channel gets the first error, or nil at the end.
func appendBatches(w *os.File, want []byte, sizes []int, wrote func(int)) <-chan error {
	errs := make(chan error, 1)
	go func() {
		off := 0
		for _, n := range sizes {
			if _, err := w.Write(want[off : off+n]); err != nil {
				errs <- err
				return
			}
			off += n
			wrote(off)
		}
		errs <- nil
	}()
	return errs
}

func firstDiff(got, want []byte, base int) string {
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("first difference at %d: %#x, want %#x", base+i, got[i], want[i])
		}
	}
	return "no difference"
}
