package tiering

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A rename over a name whose file is on another tier (Kafka's checkpoint
// written anew on the fast tier over one the policy demoted) marks the
// file it replaces and fsyncs that marker, fsyncs the winner's directory
// and the loser's after its unlink, all with the namespace lock free:
// held at each of those steps it leaves stat, open and create of other
// files free, and the name shows the old file until the rename and the
// new one from then on, once. An unlink waits for it (Store.names).
func TestRenameOverLeavesNamespaceFree(t *testing.T) {
	for _, c := range []struct {
		step  string
		shows string // what the name reads while the rename is held
	}{
		{"rename:marked", "old"},
		{"rename:renamed", "new"},
		{"rename:durable", "new"},
	} {
		t.Run(c.step, func(t *testing.T) {
			tiers := twoTiers(t, TypeNVMe, 0)
			s := openTest(t, tiers, Options{})
			writeStoreFile(t, s, "", "ckpt", []byte("old"))
			if err := s.Move("ckpt", "slow"); err != nil {
				t.Fatal(err)
			}
			writeStoreFile(t, s, "", "ckpt.tmp", []byte("new"))
			writeStoreFile(t, s, "", "other", []byte("other"))
			release := holdAt(t, "the rename over ckpt", c.step, func() error {
				return s.Rename(RelPath(""), "ckpt.tmp", RelPath(""), "ckpt", 0, nil)
			})

			othersGoOn(t, s, "", "new")
			within(t, "read of the name", func() error {
				h, err := s.Open(RelPath("ckpt"), unix.O_RDONLY)
				if err != nil {
					return err
				}
				defer h.Release()
				if got := readAll(t, h); string(got) != c.shows {
					t.Errorf("ckpt held at %s reads %q, want %q", c.step, got, c.shows)
				}
				return nil
			})

			unlinked := make(chan error, 1)
			go func() { unlinked <- s.Unlink(RelPath(""), "new", nil) }()
			if err := release(); err != nil {
				t.Fatalf("rename: %v", err)
			}
			if err := <-unlinked; err != nil {
				t.Fatalf("unlink during the rename: %v", err)
			}
			for i, tc := range tiers {
				got, err := os.ReadFile(filepath.Join(dataOf(tc), "ckpt"))
				switch {
				case i == 0 && (err != nil || !bytes.Equal(got, []byte("new"))):
					t.Errorf("ckpt on %s: %q, %v; want the new file", tc.Name, got, err)
				case i != 0 && err == nil:
					t.Errorf("ckpt left on %s: %q", tc.Name, got)
				}
			}
			if _, err := s.Lookup(RelPath(""), "ckpt.tmp"); err != unix.ENOENT {
				t.Errorf("ckpt.tmp after the rename: %v, want ENOENT", err)
			}
			noMarkers(t, tiers)
		})
	}
}

// A file a rename replaces on another tier stays under its name, marked
// for the rename's winner, until the rename is durable. A write to it
// through a handle still open that fills its tier spills it meanwhile:
// the spill must neither unmark it (the name would answer EIO, two
// unmarked copies) nor fail the write; it tries again until the rename
// has unlinked the file, and then moves it as a file with no name.
func TestSpillOfAFileARenameReplaces(t *testing.T) {
	tiers := twoTiers(t, TypeNVMe, 4<<20)
	s := openTest(t, tiers, Options{})
	old := noise(1<<20, 5)
	writeStoreFile(t, s, "", "ckpt", old)
	h, err := s.Open(RelPath("ckpt"), unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	writeStoreFile(t, s, "", "ckpt.tmp", []byte("new"))
	if err := s.Move("ckpt.tmp", "slow"); err != nil {
		t.Fatal(err)
	}

	held, goOn := make(chan struct{}), make(chan struct{})
	sealed := make(chan struct{}, 16)
	FailPoint = func(step string) {
		switch step {
		case "rename:renamed":
			close(held)
			<-goOn
		case "move:synced":
			sealed <- struct{}{}
		}
	}
	t.Cleanup(func() { FailPoint = nil })
	renamed := make(chan error, 1)
	go func() { renamed <- s.Rename(RelPath(""), "ckpt.tmp", RelPath(""), "ckpt", 0, nil) }()
	<-held
	more := noise(4<<20, 6)
	wrote := make(chan error, 1)
	go func() {
		n, err := h.Write(more, int64(len(old)))
		if err == nil && n != len(more) {
			err = fmt.Errorf("wrote %d of %d bytes", n, len(more))
		}
		wrote <- err
	}()
	for i := range 2 {
		// The second seal shows the first try over.
		select {
		case <-sealed:
		case err := <-wrote:
			close(goOn)
			t.Fatalf("the write ended (%v) before its spill tried twice", err)
		case <-time.After(nsWait):
			close(goOn)
			t.Fatalf("the write's spill did not reach its seal (try %d)", i+1)
		}
		within(t, "lookup of the renamed name", func() error {
			a, err := s.Lookup(RelPath(""), "ckpt")
			if err == nil && a.Tier != 1 {
				t.Errorf("ckpt looked up on tier %d while the rename is held, want the winner's (1)", a.Tier)
			}
			return err
		})
	}
	close(goOn)
	if err := <-renamed; err != nil {
		t.Fatalf("rename: %v", err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("write that spilled a replaced file: %v", err)
	}
	FailPoint = nil
	if got := readAll(t, h); !bytes.Equal(got, append(old, more...)) {
		t.Errorf("the replaced file reads %d bytes through its handle, not what was written", len(got))
	}
	for i, tc := range tiers {
		got, err := os.ReadFile(filepath.Join(dataOf(tc), "ckpt"))
		switch {
		case i == 1 && (err != nil || string(got) != "new"):
			t.Errorf("ckpt on %s: %q, %v; want the new file", tc.Name, got, err)
		case i != 1 && err == nil:
			t.Errorf("ckpt left on %s (%d bytes)", tc.Name, len(got))
		}
	}
	noMarkers(t, tiers)
}
