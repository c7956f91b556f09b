package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// What was written through the mount is read back from the kernel's page
// cache, not from the daemon: Kafka consumers read what the producer just
// wrote. The kernel used to drop a file's whole cache at the first
// getattr after a write (a new mtime, with FUSE_AUTO_INVAL_DATA), so every
// such read came through the daemon.
func TestPageCacheSurvivesWrites(t *testing.T) {
	m := mount(t, mountOpt{})
	if m.cfg.DirectIO {
		t.Skip("with direct I/O reads and writes do not go through the page cache (TestDirectIO covers that mode)")
	}
	p := filepath.Join(m.mnt, "00000000000000000000.log")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := pattern(7, 4<<20)
	for round := range 4 {
		// Whole pages, so that the kernel has every written page
		// up to date (a write that covers part of a page leaves that
		// page to be read from the daemon, whatever the cache mode).
		chunk := want[round<<20 : (round+1)<<20]
		for off := 0; off < len(chunk); off += 64 << 10 {
			if _, err := f.Write(chunk[off : off+64<<10]); err != nil {
				t.Fatal(err)
			}
		}
		// These machines page out memory proactively (DAMON's pageout
		// scheme, by physical regions that can hold pages just
		// written): lock what was written in the cache for the round,
		// so that only tierfs or the kernel's FUSE code could drop it.
		// An invalidation still would: it unmaps the pages first.
		unlock := lockCached(t, p, (round+1)<<20)
		before := m.call(t, request{Op: "reads"}).Reads
		// Read everything written so far, through another open (a
		// consumer), after a stat (a getattr that sees the new mtime).
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want[:(round+1)<<20]) {
			t.Fatalf("round %d: read back differs", round)
		}
		if n := m.call(t, request{Op: "reads"}).Reads - before; n != 0 {
			t.Errorf("round %d: %d READ requests reached the daemon for data written through the mount", round, n)
		}
		unlock()
	}
}

// lockCached maps the first n bytes of the file at p and locks them in
// memory (they are faulted in from the page cache, or read if they are
// not there), and returns the func that unlocks and unmaps them.
func lockCached(t *testing.T, p string, n int) (unlock func()) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap %s: %v", p, err)
	}
	if err := unix.Mlock(b); err != nil {
		_ = unix.Munmap(b)
		t.Fatalf("mlock %d bytes of %s: %v", n, p, err)
	}
	return func() {
		if err := unix.Munmap(b); err != nil {
			t.Errorf("munmap: %v", err)
		}
	}
}

// Reads the daemon answers go back to the kernel with one writev. go-fuse
// used to try splice(2) first on every READ reply that was not a vector:
// it took a pipe, grew it, wrote the header into it, found no fd to splice
// from and emptied the pipe again, three wasted system calls a READ; a
// 1 MiB READ (header and payload over the pipe's 1 MiB limit) logged
// "trySplice: ... max pipe size" each time.
func TestReadsDoNotSplice(t *testing.T) {
	m := mount(t, mountOpt{})
	p := filepath.Join(m.mnt, "00000000000000000000.log")
	want := pattern(11, 3<<20)
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Out of the kernel's cache, so that the reads reach the daemon.
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	before := m.call(t, request{Op: "reads"}).Reads
	got := make([]byte, len(want))
	// One read of 1 MiB and small ones, at odd offsets.
	for _, r := range [][2]int{{0, 1 << 20}, {1 << 20, 4096}, {1<<20 + 4096, 10000}, {1<<20 + 14096, 2<<20 - 14096}} {
		if _, err := f.ReadAt(got[r[0]:r[0]+r[1]], int64(r[0])); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
	rep := m.call(t, request{Op: "reads"})
	if rep.Reads == before {
		t.Fatal("no READ reached the daemon; the test reads nothing it means to")
	}
	if rep.Pipes != 0 {
		t.Errorf("go-fuse made %d splice pipes for %d READs", rep.Pipes, rep.Reads-before)
	}
}
