package tiering

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A snapshot that says it is complete lists every file: while files are
// renamed from one directory to another during the walk, a snapshot may
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
	snap, err := s.PolicySnapshot(time.Now())
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
		snap, err := s.PolicySnapshot(time.Now())
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
