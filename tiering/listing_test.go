package tiering

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// A listing that says it is complete lists every file: while files are
// renamed from one directory to another during the walk, a listing may
// miss one (renamed into a directory already listed), and must then not
// say it is complete, since a pin would end for a file that exists.
func TestSnapshotCompleteListsEveryFile(t *testing.T) {
	s := openTest(t, twoTiers(t, TypeNVMe, 0), Options{})
	const n = 40
	for _, d := range []string{"a", "b"} {
		if _, err := s.Mkdir(RelPath(""), d, 0o755, Owner{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		writeStoreFile(t, s, "a", fmt.Sprintf("f%d", i), []byte("x"))
	}
	snap, err := s.ListFiles()
	if err != nil || !snap.Complete || len(snap.Files) != n {
		t.Fatalf("a snapshot with nothing renamed: complete %v, %d files, %v; want complete with %d", snap.Complete, len(snap.Files), err, n)
	}
	var stop atomic.Bool
	var renames atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			from, to := "a", "b"
			if (i/n)%2 == 1 {
				from, to = "b", "a"
			}
			name := fmt.Sprintf("f%d", i%n)
			if err := s.Rename(RelPath(from), name, RelPath(to), name, 0, nil); err != nil {
				t.Errorf("rename %s/%s: %v", from, name, err)
				return
			}
			renames.Add(1)
		}
	}()
	incomplete := 0
	for i := 0; i < 200 && !t.Failed(); i++ {
		snap, err := s.ListFiles()
		if err != nil {
			t.Fatal(err)
		}
		if !snap.Complete {
			incomplete++
			continue
		}
		if len(snap.Files) != n {
			t.Errorf("a complete snapshot lists %d files, want %d", len(snap.Files), n)
		}
	}
	stop.Store(true)
	wg.Wait()
	if renames.Load() == 0 || incomplete == 0 {
		t.Fatalf("%d renames, %d snapshots incomplete: the walks never overlapped a rename", renames.Load(), incomplete)
	}
}

// The walk holds the namespace lock for one batch of names at a time:
// paused between two batches of one directory, it lets a create (which
// takes the lock exclusively) through, and the listing then still names
// every file of the directory. A walk holding the lock throughout made
// every operation on the mount wait each time the policy looked.
func TestListFilesLetsTheNamespaceGo(t *testing.T) {
	s := openTest(t, twoTiers(t, TypeNVMe, 0), Options{})
	if _, err := s.Mkdir(RelPath(""), "d", 0o755, Owner{}); err != nil {
		t.Fatal(err)
	}
	n := listBatch*2 + 1
	for i := 0; i < n; i++ {
		writeStoreFile(t, s, "d", fmt.Sprintf("f%d", i), []byte("x"))
	}
	held, release := make(chan struct{}), make(chan struct{})
	var batches atomic.Int64
	FailPoint = func(step string) {
		// The root's one batch, then d's first: the second of d is
		// mid-directory.
		if step == "list:batch" && batches.Add(1) == 3 {
			close(held)
			<-release
		}
	}
	t.Cleanup(func() { FailPoint = nil })
	type result struct {
		l   Listing
		err error
	}
	done := make(chan result, 1)
	go func() {
		l, err := s.ListFiles()
		done <- result{l, err}
	}()
	<-held
	if !s.ns.TryLock() {
		close(release)
		t.Fatal("the namespace lock is held while the listing waits between batches")
	}
	s.ns.Unlock()
	h, _, err := s.Create(RelPath("d"), "new", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		close(release)
		t.Fatal(err)
	}
	h.Release()
	close(release)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	seen := map[string]bool{}
	for _, f := range r.l.Files {
		seen[f.Path] = true
	}
	for i := 0; i < n; i++ {
		if p := fmt.Sprintf("d/f%d", i); !seen[p] {
			t.Errorf("the listing lacks %s", p)
		}
	}
	if !r.l.Complete {
		t.Errorf("a create during the walk made the listing incomplete: only removals and renames may")
	}
}
