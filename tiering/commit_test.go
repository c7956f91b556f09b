package tiering

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nsWait bounds how long a namespace operation on another file may take
// while a move is held in its commit: it only detects a lock held across
// the hold (the operation itself takes microseconds), it does not order
// anything.
const nsWait = 10 * time.Second

// holdMove runs a move of rel to tier to in the background and holds it
// at step: it returns once the move is there, and release lets it go on
// and returns the move's error.
func holdMove(t *testing.T, s *Store, rel, to, step string) (release func() error) {
	t.Helper()
	return holdAt(t, "the move of "+rel, step, func() error { return s.Move(rel, to) })
}

// holdAt runs op (what) in the background and holds it at step: it
// returns once op is there, and release lets it go on and returns op's
// error.
func holdAt(t *testing.T, what, step string, op func() error) (release func() error) {
	t.Helper()
	reached := make(chan struct{})
	goOn := make(chan struct{})
	var once sync.Once
	FailPoint = func(st string) {
		if st == step {
			once.Do(func() {
				close(reached)
				<-goOn
			})
		}
	}
	t.Cleanup(func() { FailPoint = nil })
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case <-reached:
	case err := <-done:
		t.Fatalf("%s ended (%v) without reaching %s", what, err, step)
	case <-time.After(nsWait):
		t.Fatalf("%s did not reach %s", what, step)
	}
	var released bool
	release = func() error {
		if !released {
			released = true
			close(goOn)
		}
		return <-done
	}
	t.Cleanup(func() {
		if !released {
			close(goOn)
			<-done
		}
	})
	return release
}

// within runs op and fails the test if it has not returned within nsWait:
// the namespace lock was held across the step a move or rename is held
// at.
// othersGoOn checks that a stat and an open of "other" and a create of
// dir/name complete while a commit is held.
func othersGoOn(t *testing.T, s *Store, dir, name string) {
	t.Helper()
	within(t, "stat of another file", func() error {
		_, err := s.Getattr(RelPath("other"))
		return err
	})
	within(t, "open of another file", func() error {
		h, err := s.Open(RelPath("other"), unix.O_RDONLY)
		if err == nil {
			h.Release()
		}
		return err
	})
	within(t, "create of a new file", func() error {
		h, _, err := s.Create(RelPath(dir), name, unix.O_RDWR|unix.O_EXCL, 0o644, Owner{})
		if err == nil {
			h.Release()
		}
		return err
	})
}

func within(t *testing.T, what string, op func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(nsWait):
		t.Fatalf("%s waited for the move or rename held at a step (still waiting after %v): the namespace lock is held across it", what, nsWait)
	}
}

// A move's commit holds the namespace lock (Store.ns, which every lookup,
// open, create and stat of the mount takes) only to validate, rename and
// swap: not while it copies what was written during the copy, flushes
// the copy (an fsync on the destination tier: a slow disk), marks the
// source, or frees the source (closing a large tmpfs file's last
// descriptor frees its pages: tens of ms). Held at each of those steps,
// the move must leave stat, open and create of other files free.
func TestCommitLeavesNamespaceFree(t *testing.T) {
	for _, step := range []string{"move:synced", "move:marked", "move:durable", "move:release"} {
		t.Run(step, func(t *testing.T) {
			tiers := twoTiers(t, TypeNVMe, 0)
			s := openTest(t, tiers, Options{})
			data := noise(3<<20, 7)
			writeStoreFile(t, s, "", "moving", data)
			writeStoreFile(t, s, "", "other", []byte("other"))
			// Written during the copy, so that the commit has ranges to
			// copy again.
			h, err := s.Open(RelPath("moving"), unix.O_RDWR)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Release()
			release := holdMove(t, s, "moving", "slow", step)

			othersGoOn(t, s, "", "new-"+filepath.Base(step))
			if err := release(); err != nil {
				t.Fatalf("move: %v", err)
			}
			onlyOn(t, tiers, 1, data, "moving")
			noMarkers(t, tiers)
		})
	}
}

// What changes the source between the commit's last copy (made under
// the file's lock) and the commit under the namespace lock is not lost:
// a write waits for the commit and lands on the destination; a
// truncate, chmod or xattr set through a path (which hold the namespace
// lock shared, so cannot wait) has the commit copy again.
func TestCommitKeepsWhatChangesMeanwhile(t *testing.T) {
	cases := []struct {
		name   string
		change func(t *testing.T, s *Store, h *Handle) (wait func()) // during the hold
		check  func(t *testing.T, s *Store, data []byte) []byte
	}{
		{"write", func(t *testing.T, s *Store, h *Handle) func() {
			// A writer may wait for the commit: not here, which holds it.
			done := make(chan struct{})
			go func() {
				defer close(done)
				if _, err := h.Write([]byte("written meanwhile"), 100); err != nil {
					t.Errorf("write during the commit: %v", err)
				}
			}()
			return func() { <-done }
		}, func(t *testing.T, s *Store, data []byte) []byte {
			return append(append(slices.Clone(data[:100]), "written meanwhile"...), data[117:]...)
		}},
		{"truncate", func(t *testing.T, s *Store, h *Handle) func() {
			size := int64(1 << 20)
			within(t, "truncate by path", func() error {
				_, err := s.Setattr(RelPath("moving"), SetAttr{Size: &size})
				return err
			})
			return func() {}
		}, func(t *testing.T, s *Store, data []byte) []byte { return data[:1<<20] }},
		{"chmod", func(t *testing.T, s *Store, h *Handle) func() {
			mode := uint32(0o600)
			within(t, "chmod by path", func() error {
				_, err := s.Setattr(RelPath("moving"), SetAttr{Mode: &mode})
				return err
			})
			return func() {}
		}, func(t *testing.T, s *Store, data []byte) []byte {
			a, err := s.Getattr(RelPath("moving"))
			if err != nil || a.Mode&0o7777 != 0o600 {
				t.Errorf("mode after the move: %o, %v; want 600", a.Mode&0o7777, err)
			}
			return data
		}},
		{"xattr", func(t *testing.T, s *Store, h *Handle) func() {
			within(t, "setxattr by path", func() error {
				return s.Setxattr(RelPath("moving"), "user.test", []byte("set meanwhile"), 0)
			})
			return func() {}
		}, func(t *testing.T, s *Store, data []byte) []byte {
			buf := make([]byte, 64)
			n, err := s.Getxattr(RelPath("moving"), "user.test", buf)
			if err != nil || string(buf[:n]) != "set meanwhile" {
				t.Errorf("xattr after the move: %q, %v", buf[:max(n, 0)], err)
			}
			return data
		}},
	}
	// A file with several names is held where its names are on both
	// tiers, the source not yet marked, and the namespace lock free.
	for _, several := range []bool{false, true} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/several-names=%v", c.name, several), func(t *testing.T) {
				changeWhileCommitting(t, several, c.change, c.check)
			})
		}
	}
}

func changeWhileCommitting(t *testing.T, several bool, change func(t *testing.T, s *Store, h *Handle) (wait func()),
	check func(t *testing.T, s *Store, data []byte) []byte) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	data := noise(2<<20, 11)
	names, step := []string{"moving"}, "move:marked"
	if several {
		names, step = []string{"moving", "d/link"}, "link-move:durable"
	}
	linkedOn(t, s, data, names...)
	h, err := s.Open(RelPath("moving"), unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	release := holdMove(t, s, "moving", "slow", step)
	wait := change(t, s, h)
	if err := release(); err != nil {
		t.Fatalf("move: %v", err)
	}
	wait()
	h.Release()
	want := check(t, s, data)
	h2, err := s.Open(RelPath("moving"), unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, h2)
	h2.Release()
	if !bytes.Equal(got, want) {
		t.Errorf("after the move: %d bytes, want %d (equal: %v)", len(got), len(want), bytes.Equal(got, want))
	}
	onlyOn(t, tiers, 1, want, names...)
	noMarkers(t, tiers)
	noJournal(t, tiers)
}

// noMarkers fails if a file on a tier carries the move's marker.
func noMarkers(t *testing.T, tiers []TierConfig) {
	t.Helper()
	for _, tc := range tiers {
		filepath.WalkDir(dataOf(tc), func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			if _, err := unix.Lgetxattr(p, xattrSuperseded, make([]byte, 64)); err == nil {
				t.Errorf("marker left on %s", p)
			}
			return nil
		})
	}
}

// Between a move's rename and its source's unlink (which waits for the
// rename to be durable) the source stays under its name, marked. An
// unlink or rename of the name then must take it too: left behind, it
// would be the name's only copy, the file back under its old name.
func TestNameChangesWhileTheSourceWaits(t *testing.T) {
	for _, op := range []string{"unlink", "rename", "rename-over"} {
		t.Run(op, func(t *testing.T) {
			tiers := twoTiers(t, TypeNVMe, 0)
			s := openTest(t, tiers, Options{})
			data := noise(1<<20, 3)
			writeStoreFile(t, s, "", "moving", data)
			writeStoreFile(t, s, "", "other", []byte("other"))
			release := holdMove(t, s, "moving", "slow", "move:durable")
			within(t, op, func() error {
				switch op {
				case "unlink":
					return s.Unlink(RelPath(""), "moving", nil)
				case "rename":
					return s.Rename(RelPath(""), "moving", RelPath(""), "renamed", 0, nil)
				default:
					return s.Rename(RelPath(""), "other", RelPath(""), "moving", 0, nil)
				}
			})
			// Before the move goes on: the name is what the operation
			// left, not the source.
			a, err := s.Getattr(RelPath("moving"))
			if op == "rename-over" {
				if err != nil || a.Size != int64(len("other")) {
					t.Errorf("moving after the rename over it: %d bytes, %v; want other's %d", a.Size, err, len("other"))
				}
			} else if err == nil {
				t.Errorf("moving is there after its %s (%d bytes, tier %d): the move's source came back", op, a.Size, a.Tier)
			}
			if err := release(); err != nil {
				t.Fatalf("move: %v", err)
			}
			switch op {
			case "unlink":
				for _, tc := range tiers {
					if _, err := os.Lstat(filepath.Join(dataOf(tc), "moving")); err == nil {
						t.Errorf("moving is on tier %s after its unlink", tc.Name)
					}
				}
			case "rename":
				onlyOn(t, tiers, 1, data, "renamed")
				for _, tc := range tiers {
					if _, err := os.Lstat(filepath.Join(dataOf(tc), "moving")); err == nil {
						t.Errorf("moving is on tier %s after its rename", tc.Name)
					}
				}
			default:
				onlyOn(t, tiers, 0, []byte("other"), "moving")
			}
			noMarkers(t, tiers)
			if _, err := s.Getattr(RelPath("moving")); op != "rename-over" && err == nil {
				t.Errorf("moving still there after the %s", op)
			}
		})
	}
}

// A move of a file with several names writes its journal record, makes
// the names on the destination durable (directory fsyncs on the
// destination tier, a slow disk) and its commit point (the source's
// marker, fsynced) with the namespace lock free: held at each of those
// steps, it leaves stat, open and create of other files free, and every
// name of the moving file answers once, from the source until the
// commit point and from the destination after (never EIO, though the
// names are on both tiers from the second step on). A rename, unlink or
// link waits for the commit (Store.names): they could change the names
// it moves.
func TestLinkedCommitLeavesNamespaceFree(t *testing.T) {
	for _, c := range []struct {
		step string
		tier int // where the names are looked up while the move is held
	}{
		{"link-move:journaled", 0},
		{"link-move:durable", 0},
		{"link-move:marked", 1},
	} {
		t.Run(c.step, func(t *testing.T) {
			tiers := twoTiers(t, TypeNVMe, 0)
			s := openTest(t, tiers, Options{})
			data := noise(3<<20, 11)
			names := []string{"a/f", "b/g", "a/h"}
			linkedOn(t, s, data, names...)
			writeStoreFile(t, s, "", "other", []byte("other"))
			release := holdMove(t, s, "a/f", "slow", c.step)

			othersGoOn(t, s, "a", "new")
			for _, n := range names {
				within(t, "lookup of "+n, func() error {
					a, err := s.Lookup(RelPath(filepath.Dir(n)), filepath.Base(n))
					if err == nil && a.Tier != c.tier {
						t.Errorf("%s held at %s: looked up on tier %d, want %d", n, c.step, a.Tier, c.tier)
					}
					return err
				})
			}
			within(t, "readdir of a", func() error {
				ents, err := s.Readdir(RelPath("a"))
				var got []string
				for _, e := range ents {
					got = append(got, e.Name)
				}
				slices.Sort(got)
				if err == nil && !slices.Equal(got, []string{"f", "h", "new"}) {
					t.Errorf("readdir of a held at %s: %v, want f, h and new once each", c.step, got)
				}
				return err
			})

			// An unlink waits for the commit, and then goes.
			unlinked := make(chan error, 1)
			go func() { unlinked <- s.Unlink(RelPath("a"), "new", nil) }()
			if err := release(); err != nil {
				t.Fatalf("move: %v", err)
			}
			if err := <-unlinked; err != nil {
				t.Fatalf("unlink during the move: %v", err)
			}
			onlyOn(t, tiers, 1, data, names...)
			noMarkers(t, tiers)
			noJournal(t, tiers)
		})
	}
}
