package tiering

import (
	"testing"

	"golang.org/x/sys/unix"
)

// staleNode is a FUSE node whose last known name has come to hold another
// file: at is what it says, tree what the FUSE library's tree says.
type staleNode struct {
	ino      uint64
	at, tree []string
}

func (n staleNode) Components() ([]string, bool) { return n.at, n.at != nil }
func (n staleNode) Ino() uint64                  { return n.ino }
func (n staleNode) Relocate() ([]string, bool)   { return n.tree, n.tree != nil }
func (n staleNode) Relearn([]string)             {}

// A node whose name leads to another file is never answered for with that
// file: its attributes, a link made to it, and an open all act on the
// node's own file, found by the name the FUSE tree knows or by a walk, or
// not at all. Found by fs.TestStress: "link a4 d/b5" made d/b5 a name of
// the file at d/b0, and stat showed another file's size and link count.
func TestStaleNodeNameNeverActsOnAnotherFile(t *testing.T) {
	s := openTest(t, twoTiers(t, TypeNVMe, 0), Options{})
	mk := func(name, data string) uint64 {
		h, a, err := s.Create(RelPath(""), name, unix.O_RDWR, 0o644, Owner{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Write([]byte(data), 0); err != nil {
			t.Fatal(err)
		}
		h.Release()
		return a.Ino
	}
	mine := mk("mine", "mine")
	other := mk("other", "the other file")
	if _, err := s.Mkdir(RelPath(""), "d", 0o755, Owner{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Rename(RelPath(""), "mine", RelPath("d"), "mine", 0, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		node staleNode
	}{
		{"by the tree's name", staleNode{ino: mine, at: []string{"other"}, tree: []string{"d", "mine"}}},
		{"by a walk", staleNode{ino: mine, at: []string{"other"}, tree: []string{"other"}}},
		{"when no name is known", staleNode{ino: mine}},
	} {
		a, err := s.Getattr(c.node)
		if err != nil || a.Ino != mine || a.Size != 4 {
			t.Errorf("%s: getattr: inode %d, %d bytes, %v; want inode %d, 4 bytes", c.what, a.Ino, a.Size, err, mine)
		}
		name := "link-" + c.what[:8]
		if _, err := s.Link(c.node, RelPath(""), name); err != nil {
			t.Errorf("%s: link: %v", c.what, err)
		} else if a, err := s.Getattr(RelPath(name)); err != nil || a.Ino != mine {
			t.Errorf("%s: the new link is inode %d (%v), want %d (the other file is %d)", c.what, a.Ino, err, mine, other)
		}
	}
	// No other name: nothing is done, to the other file least of all.
	gone := staleNode{ino: mine + 1000, at: []string{"other"}}
	if _, err := s.Getattr(gone); err == nil {
		t.Errorf("getattr of a node with no name left answered")
	}
	if _, err := s.Link(gone, RelPath(""), "never"); err == nil {
		t.Errorf("link of a node with no name left made a name")
	}
	if a, err := s.Getattr(RelPath("other")); err != nil || a.Nlink != 1 {
		t.Errorf("the other file: %d links, %v; want 1", a.Nlink, err)
	}
}
