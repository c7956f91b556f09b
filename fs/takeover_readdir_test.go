package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestTakeoverReadDirPlus: a supervised mount offers READDIRPLUS, and a
// daemon that took over knows the nodes its READDIRPLUS answers gave the
// kernel: opening the files just listed, whose entries the kernel holds
// from that answer, adopts none of them (an adoption looks each one up
// again from the root, and walks every tier for a name it has not
// indexed).
func TestTakeoverReadDirPlus(t *testing.T) {
	m := mount(t, mountOpt{supervised: true})
	mustOK(t, os.MkdirAll(m.path("topic-0"), 0o755), "mkdir")
	const n = 20
	for i := range n {
		mustOK(t, os.WriteFile(m.path(fmt.Sprintf("topic-0/%020d.log", i)), []byte("segment"), 0o644), "write")
	}
	if r := m.call(t, request{Op: "adopted"}); r.ReadDirPlus != 0 {
		t.Fatalf("READDIRPLUS answered before any listing: %d", r.ReadDirPlus)
	}
	old := m.pid
	mustOK(t, syscall.Kill(old, syscall.SIGKILL), "kill -9 the daemon")
	m.nextDaemon(t, old)

	// The directory itself was the dead daemon's: listing it adopts it.
	ents, err := os.ReadDir(m.path("topic-0"))
	mustOK(t, err, "list after the takeover")
	if len(ents) != n {
		t.Fatalf("listed %d entries, want %d", len(ents), n)
	}
	before := m.call(t, request{Op: "adopted"})
	if before.ReadDirPlus == 0 {
		t.Fatalf("the listing was not answered with READDIRPLUS (the kernel was not offered it)")
	}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(m.path("topic-0"), e.Name()))
		mustOK(t, err, "open a listed file")
		b := make([]byte, 16)
		k, err := f.Read(b)
		f.Close()
		if err != nil || string(b[:k]) != "segment" {
			t.Fatalf("%s after the takeover: %q, %v", e.Name(), b[:k], err)
		}
	}
	if after := m.call(t, request{Op: "adopted"}); after.Adopted != before.Adopted {
		t.Fatalf("opening %d files READDIRPLUS had just listed adopted %d nodes, want none (%d before)", n, after.Adopted-before.Adopted, before.Adopted)
	}
}
