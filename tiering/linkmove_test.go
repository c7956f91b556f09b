package tiering

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
)

// linkedOn makes a file with data at names[0] and links the others to
// it, in directories made as needed.
func linkedOn(t *testing.T, s *Store, data []byte, names ...string) {
	t.Helper()
	for _, n := range names {
		dir := ""
		for _, c := range strings.Split(filepath.Dir(n), "/") {
			if c == "." {
				continue
			}
			if _, err := s.Mkdir(RelPath(dir), c, 0o755, Owner{}); err != nil && !errors.Is(err, unix.EEXIST) {
				t.Fatal(err)
			}
			dir = filepath.Join(dir, c)
		}
	}
	h, _, err := s.Create(RelPath(filepath.Dir(names[0])), filepath.Base(names[0]), unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write(data, 0); err != nil {
		t.Fatal(err)
	}
	h.Release()
	for _, n := range names[1:] {
		if _, err := s.Link(RelPath(names[0]), RelPath(filepath.Dir(n)), filepath.Base(n)); err != nil {
			t.Fatal(err)
		}
	}
}

// onlyOn fails unless every name is on tier i alone, one backing inode
// with as many links as names, reading data.
func onlyOn(t *testing.T, tiers []TierConfig, i int, data []byte, names ...string) {
	t.Helper()
	var first unix.Stat_t
	for k, n := range names {
		for j, tc := range tiers {
			_, err := os.Lstat(filepath.Join(dataOf(tc), n))
			if j == i && err != nil {
				t.Fatalf("%s not on tier %s: %v", n, tc.Name, err)
			}
			if j != i && err == nil {
				t.Fatalf("%s on tier %s too", n, tc.Name)
			}
		}
		p := filepath.Join(dataOf(tiers[i]), n)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			first = st
		}
		if st.Ino != first.Ino || st.Nlink != uint64(len(names)) {
			t.Fatalf("%s: backing inode %d with %d links, want %d with %d: the names are not one file", n, st.Ino, st.Nlink, first.Ino, len(names))
		}
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s reads %d bytes (%v), want the %d written", n, len(got), err, len(data))
		}
	}
}

// The names a move finds while it copies may change before it commits: a
// link made, a name's directory renamed, a name removed. The commit moves
// the names the file has then, all of them (a link made meanwhile was
// left behind on the source, the file split in two).
func TestMoveLinkedNamesChangeMeanwhile(t *testing.T) {
	data := bytes.Repeat([]byte("tierfs "), 300_000)
	cases := []struct {
		name   string
		before []string // the file's names when the move starts
		change func(s *Store) error
		after  []string // its names when it commits
	}{
		{"link", []string{"a/f"}, func(s *Store) error {
			_, err := s.Link(RelPath("a/f"), RelPath("b"), "g")
			return err
		}, []string{"a/f", "b/g"}},
		{"another-link", []string{"a/f", "b/g"}, func(s *Store) error {
			_, err := s.Link(RelPath("a/f"), RelPath("a"), "h")
			return err
		}, []string{"a/f", "b/g", "a/h"}},
		{"rename-directory", []string{"a/f", "b/g"}, func(s *Store) error {
			return s.Rename(RelPath(""), "b", RelPath(""), "c", 0, nil)
		}, []string{"a/f", "c/g"}},
		{"unlink", []string{"a/f", "b/g", "a/h"}, func(s *Store) error {
			return s.Unlink(RelPath("a"), "h", nil)
		}, []string{"a/f", "b/g"}},
		{"unlink-to-one", []string{"a/f", "b/g"}, func(s *Store) error {
			return s.Unlink(RelPath("b"), "g", nil)
		}, []string{"a/f"}},
	}
	for _, c := range cases {
		// Before the names are looked for, and after (the commit finds
		// them changed).
		for _, step := range []string{"move:copied", "link-move:found"} {
			if step == "link-move:found" && len(c.before) == 1 {
				continue // a file with one name is not looked for
			}
			t.Run(c.name+"/"+step, func(t *testing.T) {
				tiers := twoTiers(t, TypeNVMe, 0)
				s := openTest(t, tiers, Options{})
				if _, err := s.Mkdir(RelPath(""), "b", 0o755, Owner{}); err != nil {
					t.Fatal(err)
				}
				linkedOn(t, s, data, c.before...)
				at := step
				FailPoint = func(step string) {
					if step == at {
						at = "" // once
						if err := c.change(s); err != nil {
							t.Errorf("%s during the move: %v", c.name, err)
						}
					}
				}
				t.Cleanup(func() { FailPoint = nil })
				if err := s.Move("a/f", "slow"); err != nil {
					t.Fatalf("move: %v", err)
				}
				FailPoint = nil
				onlyOn(t, tiers, 1, data, c.after...)
			})
		}
	}
}

// A name the move cannot see (a link to the backing file from outside the
// tier's copy of the namespace, made behind tierfs's back) would be left
// behind: the move is refused, and nothing changes.
func TestMoveLinkedNameOutsideNamespace(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	data := []byte("data")
	linkedOn(t, s, data, "f", "g")
	outside := filepath.Join(tiers[0].Path, "outside")
	if err := os.Link(filepath.Join(dataOf(tiers[0]), "f"), outside); err != nil {
		t.Fatal(err)
	}
	err := s.Move("f", "slow")
	if !errors.Is(err, unix.EMLINK) {
		t.Fatalf("move of a file with a name outside the namespace: %v, want EMLINK", err)
	}
	if err := os.Remove(outside); err != nil {
		t.Fatal(err)
	}
	onlyOn(t, tiers, 0, data, "f", "g")
	for _, tc := range tiers {
		if ents, _ := os.ReadDir(filepath.Join(tc.Path, metaDir, "journal")); len(ents) != 0 {
			t.Fatalf("journal left on %s: %v", tc.Name, ents)
		}
		if ents, _ := os.ReadDir(filepath.Join(tc.Path, metaDir, "staging")); len(ents) != 0 {
			t.Fatalf("staging left on %s: %v", tc.Name, ents)
		}
	}
	if err := s.Move("g", "slow"); err != nil {
		t.Fatalf("move once the outside name is gone: %v", err)
	}
	onlyOn(t, tiers, 1, data, "f", "g")
}

// fsImmutable is FS_IMMUTABLE_FL (linux/fs.h), which x/sys/unix lacks.
const fsImmutable = 0x10

// immutable sets or clears the immutable flag of directory dir (no entry
// can be added or removed, not even by root), or skips the test where
// the filesystem has no such flag.
func immutable(t *testing.T, dir string, on bool) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if on {
		testenv.Require(t, err == nil, fmt.Sprintf("the test directory's filesystem has no inode flags: %v", err))
		flags |= fsImmutable
	} else {
		flags &^= fsImmutable
	}
	if err == nil {
		err = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags))
	}
	if on {
		testenv.Require(t, err == nil, fmt.Sprintf("cannot make a directory immutable: %v", err))
		t.Cleanup(func() { immutable(t, dir, false) })
	} else if err != nil {
		t.Fatal(err)
	}
}

// settle has the store finish what a move left to the next journaled
// operation: a directory rename does that first.
func settle(t *testing.T, s *Store) {
	t.Helper()
	if _, err := s.Mkdir(RelPath(""), "settle", 0o755, Owner{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Rename(RelPath(""), "settle", RelPath(""), "settled", 0, nil); err != nil {
		t.Fatalf("directory rename after the move: %v", err)
	}
}

// noJournal fails unless no tier holds a journal record or staged copy.
func noJournal(t *testing.T, tiers []TierConfig) {
	t.Helper()
	for _, tc := range tiers {
		for _, d := range []string{"journal", "staging"} {
			if ents, _ := os.ReadDir(filepath.Join(tc.Path, metaDir, d)); len(ents) != 0 {
				t.Fatalf("%s left on %s: %v", d, tc.Name, ents)
			}
		}
	}
}

// A move of a file with several names that fails before its commit point
// (a name it cannot make on the destination) takes back the names it
// made there: the file is where it was, under all its names. Where even
// that fails, the names left on the destination go before the next
// journaled operation, or at the next mount: the record says the move
// did not commit.
func TestMoveLinkedFailsBeforeCommit(t *testing.T) {
	for _, undoFails := range []bool{false, true} {
		for _, remount := range []bool{false, true} {
			if remount && !undoFails {
				continue
			}
			t.Run(fmt.Sprintf("undo-fails=%v/remount=%v", undoFails, remount), func(t *testing.T) {
				tiers := twoTiers(t, TypeNVMe, 0)
				s, err := Open(tiers, Options{Log: zerolog.Nop()})
				if err != nil {
					t.Fatal(err)
				}
				defer func() { s.Close() }()
				data := []byte("several names")
				names := []string{"a/f", "b/g"}
				linkedOn(t, s, data, names...)
				// The destination's b gets a g of its own once a/f is
				// made there: the link fails with EEXIST.
				for _, d := range []string{"a", "b"} {
					if err := os.MkdirAll(filepath.Join(dataOf(tiers[1]), d), 0o755); err != nil {
						t.Fatal(err)
					}
				}
				stray := filepath.Join(dataOf(tiers[1]), "b", "g")
				FailPoint = func(step string) {
					if step == "link-move:linked" {
						if err := os.WriteFile(stray, []byte("stray"), 0o644); err != nil {
							t.Error(err)
						}
						if undoFails {
							immutable(t, filepath.Join(dataOf(tiers[1]), "a"), true)
						}
					}
				}
				t.Cleanup(func() { FailPoint = nil })
				err = s.Move("a/f", "slow")
				FailPoint = nil
				if !errors.Is(err, unix.EEXIST) {
					t.Fatalf("move onto a name taken on the destination: %v, want EEXIST", err)
				}
				if err := os.Remove(stray); err != nil {
					t.Fatal(err)
				}
				if undoFails {
					// a/f is on both tiers: EIO until settled.
					if _, err := s.Lookup(RelPath("a"), "f"); !errors.Is(err, unix.EIO) {
						t.Fatalf("lookup of a name left on two tiers: %v, want EIO", err)
					}
					immutable(t, filepath.Join(dataOf(tiers[1]), "a"), false)
					if remount {
						s.Close()
						if s, err = Open(tiers, Options{Log: zerolog.Nop()}); err != nil {
							t.Fatalf("mount after a failed move: %v", err)
						}
					} else {
						settle(t, s)
					}
				}
				onlyOn(t, tiers, 0, data, names...)
				noJournal(t, tiers)
				if err := s.Move("b/g", "slow"); err != nil {
					t.Fatalf("move after the failed one: %v", err)
				}
				onlyOn(t, tiers, 1, data, names...)
			})
		}
	}
}

// A move of a file with several names that cannot remove a name from the
// source after its commit point has moved the file: the names left on
// the source are hidden, and go before the next journaled operation or
// at the next mount (the record says the move committed); a write after
// the move is never lost to them.
func TestMoveLinkedSourceNameStays(t *testing.T) {
	for _, remount := range []bool{false, true} {
		t.Run(fmt.Sprintf("remount=%v", remount), func(t *testing.T) {
			tiers := twoTiers(t, TypeNVMe, 0)
			s, err := Open(tiers, Options{Log: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { s.Close() }()
			data := []byte("several names")
			names := []string{"a/f", "b/g"}
			linkedOn(t, s, data, names...)
			h, err := s.Open(RelPath("a/f"), unix.O_RDWR)
			if err != nil {
				t.Fatal(err)
			}
			FailPoint = func(step string) {
				if step == "link-move:swapped" {
					immutable(t, filepath.Join(dataOf(tiers[0]), "b"), true)
				}
			}
			t.Cleanup(func() { FailPoint = nil })
			err = s.Move("a/f", "slow")
			FailPoint = nil
			if err != nil {
				t.Fatalf("move whose last step failed: %v, want it done", err)
			}
			data = append(data, " and more"...)
			if _, err := h.Write(data, 0); err != nil {
				t.Fatal(err)
			}
			h.Release()
			a, err := s.Lookup(RelPath("b"), "g")
			if err != nil || a.Tier != 1 {
				t.Fatalf("lookup of the name left on the source: tier %d, %v; want the destination's", a.Tier, err)
			}
			immutable(t, filepath.Join(dataOf(tiers[0]), "b"), false)
			if remount {
				s.Close()
				if s, err = Open(tiers, Options{Log: zerolog.Nop()}); err != nil {
					t.Fatalf("mount after the move: %v", err)
				}
			} else {
				settle(t, s)
			}
			onlyOn(t, tiers, 1, data, names...)
			noJournal(t, tiers)
		})
	}
}
