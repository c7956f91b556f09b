package tiering

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
	"github.com/tierfs/tierfs/pmem"
)

// orphanPath is where a tier keeps the open file with inode number ino
// once its last name went.
func orphanPath(tc TierConfig, ino uint64) string {
	return filepath.Join(tc.Path, metaDir, orphanDir, strconv.FormatUint(ino, 10))
}

// makeOrphan creates name with data, keeps it open and unlinks it.
func makeOrphan(t *testing.T, s *Store, name string, data []byte) (*Handle, uint64) {
	t.Helper()
	h, a, err := s.Create(RelPath(""), name, unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlink(RelPath(""), name, nil); err != nil {
		t.Fatal(err)
	}
	return h, a.Ino
}

// An open file whose last name is unlinked keeps a name in its tier's
// orphan directory, counted in the tier's usage, with no link shown;
// the last release removes it.
func TestOrphanKeptWhileOpen(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	data := bytes.Repeat([]byte("orphan"), 10000)
	h, ino := makeOrphan(t, s, "a", data)
	used := s.tiers[0].Used()
	if used < int64(len(data)) {
		t.Fatalf("tier fast counts %d bytes with the orphan open, want at least %d", used, len(data))
	}
	got, err := os.ReadFile(orphanPath(tiers[0], ino))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("orphan name on the tier: %d bytes, %v; want the file's %d", len(got), err, len(data))
	}
	if _, err := os.Lstat(filepath.Join(dataOf(tiers[0]), "a")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the unlinked name is still on the tier: %v", err)
	}
	a, err := h.Stat()
	if err != nil || a.Nlink != 0 || a.Size != int64(len(data)) || a.Ino != ino {
		t.Fatalf("fstat of the unlinked file: nlink %d size %d ino %d, %v; want 0, %d, %d", a.Nlink, a.Size, a.Ino, err, len(data), ino)
	}
	if _, err := h.Write([]byte("more"), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	h.Release()
	if _, err := os.Lstat(orphanPath(tiers[0], ino)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the orphan is still there after the last release: %v", err)
	}
	if u := s.tiers[0].Used(); u != 0 {
		t.Fatalf("tier fast counts %d bytes once the orphan is gone, want 0", u)
	}
	if s.Orphan(ino) {
		t.Fatal("the store still knows the orphan")
	}
}

// A daemon that died with an orphan open leaves its name: a fresh mount
// removes it (nobody can open it any more), one that takes the live
// mount over adopts it, serves it, keeps it past its last release (the
// kernel may hold handles it never saw) and removes it once the kernel
// forgets the node.
func TestOrphansAfterDaemonDeath(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	data := bytes.Repeat([]byte("left "), 3000)
	die := func() uint64 {
		s, err := Open(tiers, Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, ino := makeOrphan(t, s, "seg", data)
		s.Close() // as the daemon's death closes its descriptors
		return ino
	}

	ino := die()
	s := openTest(t, tiers, Options{TakingOver: true})
	if !s.Orphan(ino) {
		t.Fatal("a takeover did not adopt the orphan")
	}
	if u := s.tiers[0].Used(); u < int64(len(data)) {
		t.Fatalf("the adopted orphan counts %d bytes on its tier, want at least %d", u, len(data))
	}
	a, err := s.OrphanAttr(ino)
	if err != nil || a.Size != int64(len(data)) || a.Nlink != 0 || a.Ino != ino {
		t.Fatalf("attributes of the adopted orphan: size %d nlink %d ino %d, %v", a.Size, a.Nlink, a.Ino, err)
	}
	h, err := s.OpenOrphan(ino, unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data)+10)
	if n, err := h.Read(got, 0); err != nil || !bytes.Equal(got[:n], data) {
		t.Fatalf("read of the adopted orphan: %d bytes, %v", n, err)
	}
	if _, err := h.Write([]byte("!"), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	h.Release()
	if _, err := os.Stat(orphanPath(tiers[0], ino)); err != nil {
		t.Fatalf("a takeover removed the orphan at its last release, before the kernel forgot it: %v", err)
	}
	s.Forgotten(ino)
	if _, err := os.Lstat(orphanPath(tiers[0], ino)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the orphan is still there once the kernel forgot it: %v", err)
	}
	if u := s.tiers[0].Used(); u != 0 {
		t.Fatalf("tier fast counts %d bytes once the orphan is gone, want 0", u)
	}
	s.Close()

	ino = die()
	s = openTest(t, tiers, Options{})
	if _, err := os.Lstat(orphanPath(tiers[0], ino)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a fresh mount left the dead daemon's orphan: %v", err)
	}
	if s.Orphan(ino) || s.tiers[0].Used() != 0 {
		t.Fatalf("a fresh mount knows the orphan (%v) or counts it (%d bytes)", s.Orphan(ino), s.tiers[0].Used())
	}
}

// In a daemon that took over, the kernel may hold a file open that this
// daemon never opened: its last name goes into the orphan directory too,
// until the kernel forgets the node.
func TestTakeoverKeepsUnlinkedUntilForgotten(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{TakingOver: true})
	h, a, err := s.Create(RelPath(""), "x", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write([]byte("held by the kernel"), 0); err != nil {
		t.Fatal(err)
	}
	h.Release()
	if err := s.Unlink(RelPath(""), "x", nil); err != nil {
		t.Fatal(err)
	}
	h, err = s.OpenOrphan(a.Ino, unix.O_RDONLY)
	if err != nil {
		t.Fatalf("open of an unlinked file the kernel may hold: %v", err)
	}
	h.Release()
	s.Forgotten(a.Ino)
	if _, err := os.Lstat(orphanPath(tiers[0], a.Ino)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the orphan is still there once the kernel forgot it: %v", err)
	}
	if u := s.tiers[0].Used(); u != 0 {
		t.Fatalf("tier fast counts %d bytes, want 0", u)
	}
}

// Nothing in the orphan directory is trusted that tierfs did not put
// there: a symlink is not followed (its target stays, and is never
// served), a file made by another user without tierfs's number is left
// and not adopted, and a second name of a file that has a name in the
// mount is not removed. A directory that is not root's is refused.
func TestOrphanDirTrustsNothingPlanted(t *testing.T) {
	testenv.Root(t, "plants files of another user and chowns the orphan directory")
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	h, a, err := s.Create(RelPath(""), "named", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Write([]byte("named data"), 0); err != nil {
		t.Fatal(err)
	}
	h.Release()
	s.Close()

	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("victim"), 0o600); err != nil {
		t.Fatal(err)
	}
	const symIno, userIno = 1<<20 + 500, 1<<20 + 501
	if err := os.Symlink(victim, orphanPath(tiers[0], symIno)); err != nil {
		t.Fatal(err)
	}
	userFile := orphanPath(tiers[0], userIno)
	if err := os.WriteFile(userFile, []byte("user's"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(userFile, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	named := filepath.Join(dataOf(tiers[0]), "named")
	if err := os.Link(named, orphanPath(tiers[0], a.Ino)); err != nil {
		t.Fatal(err)
	}

	check := func(when string) {
		t.Helper()
		if b, err := os.ReadFile(victim); err != nil || string(b) != "victim" {
			t.Fatalf("%s: the symlink's target: %q, %v", when, b, err)
		}
		if fi, err := os.Lstat(orphanPath(tiers[0], symIno)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s: the planted symlink: %v, %v", when, fi, err)
		}
		if b, err := os.ReadFile(userFile); err != nil || string(b) != "user's" {
			t.Fatalf("%s: the other user's file: %q, %v", when, b, err)
		}
		if b, err := os.ReadFile(named); err != nil || string(b) != "named data" {
			t.Fatalf("%s: the named file: %q, %v", when, b, err)
		}
	}
	s = openTest(t, tiers, Options{})
	check("a fresh mount")
	s.Close()
	s = openTest(t, tiers, Options{TakingOver: true})
	check("a takeover")
	for _, ino := range []uint64{symIno, userIno, a.Ino} {
		if s.Orphan(ino) {
			t.Errorf("a takeover adopted planted entry %d", ino)
		}
		if h, err := s.OpenOrphan(ino, unix.O_RDONLY); err == nil {
			h.Release()
			t.Errorf("planted entry %d opened as an orphan", ino)
		}
	}
	if u := s.tiers[0].Used(); u > 4096 {
		t.Errorf("tier fast counts %d bytes: planted entries counted", u)
	}
	s.Close()

	dir := filepath.Join(tiers[0].Path, metaDir, orphanDir)
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(tiers, Options{}); err == nil || !strings.Contains(err.Error(), "uid 65534") {
		t.Fatalf("a mount with another user's orphan directory: %v, want it refused", err)
	}
}

// A rename over an open file whose copy is on another tier leaves it
// with no name, like an unlink: it keeps one in its tier's orphan
// directory until its last release.
func TestOrphanOfRenameOverAnotherTier(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 0)
	s := openTest(t, tiers, Options{})
	h, a, err := s.Create(RelPath(""), "x", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if _, err := h.Write([]byte("old x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Move("x", "slow"); err != nil {
		t.Fatal(err)
	}
	h2, _, err := s.Create(RelPath(""), "y", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	h2.Release()
	if err := s.Rename(RelPath(""), "y", RelPath(""), "x", 0, nil); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(orphanPath(tiers[1], a.Ino)); err != nil || string(b) != "old x" {
		t.Fatalf("the replaced open file on slow: %q, %v; want it kept as an orphan", b, err)
	}
	got := make([]byte, 5)
	if n, err := h.Read(got, 0); err != nil || string(got[:n]) != "old x" {
		t.Fatalf("read of the replaced file: %q, %v", got[:n], err)
	}
	h.Release()
	if _, err := os.Lstat(orphanPath(tiers[1], a.Ino)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the orphan is still there after the last release: %v", err)
	}
}

// A pmem segment unlinked while open is kept as an orphan like any file
// (its mapping and logical size with it), adopted by a takeover, and
// given back to the pool once it goes.
func TestOrphanPMemSegment(t *testing.T) {
	s, tiers := openPool(t, 8*testSeg, 0.5)
	if _, err := s.Mkdir(RelPath(""), "topic-0", 0o755, Owner{}); err != nil {
		t.Fatal(err)
	}
	h, a, err := s.Create(RelPath("topic-0"), "00000000000000000000.log", unix.O_RDWR, 0o640, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("kafka record "), 1000)
	if _, err := h.Write(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := h.Fsync(false); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlink(RelPath("topic-0"), "00000000000000000000.log", nil); err != nil {
		t.Fatal(err)
	}
	if st, size, ok := backingStat(t, orphanPath(tiers[0], a.Ino)); !ok || size != int64(len(data)) || st.Size != testSeg {
		t.Fatalf("orphan of a segment: size %d, logical %d (%v); want the slot with %d", st.Size, size, ok, len(data))
	}
	if ha, err := h.Stat(); err != nil || ha.Size != int64(len(data)) || ha.Nlink != 0 {
		t.Fatalf("fstat: size %d nlink %d, %v", ha.Size, ha.Nlink, err)
	}
	if got := readAll(t, h); !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, want %d", len(got), len(data))
	}
	s.Close() // the daemon dies with it open

	cfg := pmem.Config{PoolRatio: 0.5, SegmentSize: testSeg, PoolFiles: pmem.DefaultPoolFiles}
	s = openTest(t, tiers, Options{SegmentSize: testSeg, PMem: &cfg, TakingOver: true})
	h, err = s.OpenOrphan(a.Ino, unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, h); !bytes.Equal(got, data) {
		t.Fatalf("after a takeover: read %d bytes, want %d", len(got), len(data))
	}
	h.Release()
	s.Forgotten(a.Ino)
	if _, err := os.Lstat(orphanPath(tiers[0], a.Ino)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the orphan is still there: %v", err)
	}
	waitPool(t, s, "the orphan's slot back in the pool", func(target int, slots int64) bool { return slots == int64(target) })
}

// treeNode is a FUSE node as package fs has it: at is its last known name
// (nil once that name went), tree the name the FUSE library's tree gives
// (nil for none). Relearn takes what the store found.
type treeNode struct {
	ino      uint64
	at, tree *[]string
}

func (n treeNode) Components() ([]string, bool) { return *n.at, *n.at != nil }
func (n treeNode) Ino() uint64                  { return n.ino }
func (n treeNode) Relocate() ([]string, bool)   { return *n.tree, *n.tree != nil }
func (n treeNode) Relearn(c []string)           { *n.at = c }

// Unlinking one of the two names of an open file is not its last name:
// the backing stays under the other name (nothing goes to the orphan
// directory, the handle shows one link), and once the handle is released
// a hard link to the name left is made through the node that was opened
// by the name that went, whatever the FUSE tree says of its names. Also
// with a move of the file under way at each step it passes while the
// name goes and the handle is released (fs.TestStress once had "link d/b2
// a7" answer ENOENT right after "unlink a4" and the last close).
func TestUnlinkOneOfTwoNamesOfAnOpenFile(t *testing.T) {
	data := bytes.Repeat([]byte("tierfs "), 300_000)
	// Steps a move of a file with two names passes before the names are
	// held (the unlink waits for those), and after; "" unlinks before the
	// move starts.
	steps := []string{"", "move:copied", "move:converged", "link-move:found", "move:synced", "move:release"}
	trees := map[string][]string{"right": {"d", "b"}, "stale": {"a"}, "none": nil}
	for _, step := range steps {
		for _, closeWhen := range []string{"with-the-unlink", "after-the-move"} {
			for treeName, tree := range trees {
				name := fmt.Sprintf("%s/close-%s/tree-%s", step, closeWhen, treeName)
				if step == "" {
					name = fmt.Sprintf("before-the-move/close-%s/tree-%s", closeWhen, treeName)
				}
				t.Run(name, func(t *testing.T) {
					tiers := twoTiers(t, TypeNVMe, 0)
					s := openTest(t, tiers, Options{})
					linkedOn(t, s, data, "a", "d/b")
					a, err := s.Getattr(RelPath("a"))
					if err != nil {
						t.Fatal(err)
					}
					at, fuseTree := []string{"a"}, []string{"a"}
					node := treeNode{ino: a.Ino, at: &at, tree: &fuseTree}
					h, err := s.Open(node, unix.O_RDWR)
					if err != nil {
						t.Fatal(err)
					}
					released := false
					unlink := func() {
						// fs's Unlink forgets the node's name under ns.
						if err := s.Unlink(RelPath(""), "a", func() { at, fuseTree = nil, tree }); err != nil {
							t.Errorf("unlink a: %v", err)
							return
						}
						if s.Orphan(a.Ino) {
							t.Errorf("a file with a name left is kept as an orphan")
						}
						if st, err := h.Stat(); err != nil || st.Nlink != 1 {
							t.Errorf("the handle after the unlink: %d links, %v; want 1", st.Nlink, err)
						}
						if closeWhen == "with-the-unlink" {
							h.Release()
							released = true
						}
					}
					reached := step == ""
					if step == "" {
						unlink()
					} else {
						FailPoint = func(x string) {
							if x == step && !reached {
								reached = true
								unlink()
							}
						}
						t.Cleanup(func() { FailPoint = nil })
					}
					if err := s.Move("d/b", "slow"); err != nil && !errors.Is(err, ErrBusy) {
						t.Fatalf("move: %v", err)
					}
					FailPoint = nil
					if !reached {
						t.Fatalf("the move did not pass %s", step)
					}
					if !released {
						if st, err := h.Stat(); err != nil || st.Nlink != 1 {
							t.Errorf("the handle after the move: %d links, %v; want 1", st.Nlink, err)
						}
						h.Release()
					}
					if s.Orphan(a.Ino) {
						t.Errorf("kept as an orphan after the last release")
					}
					for _, tc := range tiers {
						if _, err := os.Lstat(orphanPath(tc, a.Ino)); !errors.Is(err, os.ErrNotExist) {
							t.Errorf("tier %s has an orphan name for the file: %v", tc.Name, err)
						}
					}
					if _, err := s.Link(node, RelPath(""), "c"); err != nil {
						t.Fatalf("link d/b c through the node opened as a: %v", err)
					}
					for _, n := range []string{"d/b", "c"} {
						got, err := s.Getattr(RelPath(n))
						if err != nil || got.Ino != a.Ino || got.Nlink != 2 {
							t.Errorf("%s: inode %d with %d links, %v; want inode %d with 2", n, got.Ino, got.Nlink, err, a.Ino)
						}
					}
					onlyOn(t, tiers, 1, data, "d/b", "c")
				})
			}
		}
	}
}
