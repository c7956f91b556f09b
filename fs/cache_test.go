package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// What was written through the mount is read back from the kernel's page
// cache, not from the daemon: Kafka consumers read what the producer just
// wrote. The kernel used to drop a file's whole cache at the first
// getattr after a write (a new mtime, with FUSE_AUTO_INVAL_DATA), so every
// such read came through the daemon.
func TestPageCacheSurvivesWrites(t *testing.T) {
	m := mount(t, mountOpt{})
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
	}
}
