package tiering

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

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
				h, _, err := s.Create(RelPath(""), "new", unix.O_RDWR|unix.O_EXCL, 0o644, Owner{})
				if err == nil {
					h.Release()
				}
				return err
			})
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
