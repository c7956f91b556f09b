package fs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTakeoverUnlinkedOpenFile: a program opens a file and unlinks it
// through the mount, then the daemon is killed (kill -9, twice) or
// replaced on request (tierfs restart): through its old descriptor the
// program reads what it wrote, writes more and fstats it, with no error
// (the dead daemon's successor adopts the file from the name its tier
// keeps for it in .tierfs/orphans, tiering/orphan.go). Once the program
// closes it, the tier keeps nothing of it. The descriptor is O_DIRECT so
// that every read reaches the daemon instead of the kernel's cache.
func TestTakeoverUnlinkedOpenFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		kind takeoverKind
	}{{"kill", takeoverKill}, {"restart", takeoverRestart}} {
		t.Run(tc.name, func(t *testing.T) {
			m := mount(t, mountOpt{supervised: true, devFuse: true})
			mustOK(t, os.MkdirAll(m.path("topic-0"), 0o755), "mkdir")
			p := m.path("topic-0/00000000000000000000.log")
			const block = 64 << 10
			want := bytes.Repeat([]byte("held open, no name. "), 2*block/20+1)[:2*block]
			mustOK(t, os.WriteFile(p, want, 0o644), "write")
			f, err := os.OpenFile(p, os.O_RDWR|unix.O_DIRECT, 0)
			mustOK(t, err, "open")
			defer f.Close()
			var st unix.Stat_t
			mustOK(t, unix.Fstat(int(f.Fd()), &st), "fstat")
			mustOK(t, os.Remove(p), "unlink through the mount")
			orphanOn := func() (paths []string) {
				for _, r := range m.roots {
					q := filepath.Join(r, ".tierfs", "orphans", strconv.FormatUint(st.Ino, 10))
					if _, err := os.Lstat(q); err == nil {
						paths = append(paths, q)
					}
				}
				return paths
			}
			if got := orphanOn(); len(got) != 1 {
				t.Fatalf("the unlinked open file has %d names in the tiers' orphan directories, want 1: %v", len(got), got)
			}

			takeovers := 2
			if tc.kind == takeoverRestart {
				takeovers = 1
			}
			buf := make([]byte, block)
			for k := range takeovers {
				m.takeover(t, tc.kind)

				for off := 0; off < len(want); off += block {
					n, err := f.ReadAt(buf, int64(off))
					if err != nil || n != block || !bytes.Equal(buf, want[off:off+block]) {
						t.Fatalf("takeover %d: read at %d through the old descriptor: %d bytes, %v (equal %v)\n%s", k+1, off, n, err, bytes.Equal(buf[:n], want[off:off+n]), m.logs())
					}
				}
				more := bytes.Repeat([]byte{byte('0' + k)}, block)
				n, err := f.WriteAt(more, int64(len(want)))
				if err != nil || n != block {
					t.Fatalf("takeover %d: write through the old descriptor: %d, %v\n%s", k+1, n, err, m.logs())
				}
				want = append(want, more...)
				var st2 unix.Stat_t
				mustOK(t, unix.Fstat(int(f.Fd()), &st2), "fstat after the takeover")
				if st2.Ino != st.Ino || st2.Size != int64(len(want)) || st2.Nlink != 0 {
					t.Fatalf("takeover %d: fstat: ino %d size %d nlink %d, want %d, %d, 0", k+1, st2.Ino, st2.Size, st2.Nlink, st.Ino, len(want))
				}
				n, err = f.ReadAt(buf, int64(len(want)-block))
				if err != nil || n != block || !bytes.Equal(buf, more) {
					t.Fatalf("takeover %d: read back what was written: %d, %v", k+1, n, err)
				}
			}
			// The orphan directory is the tier's own, never the mount's.
			ents, err := os.ReadDir(m.mnt)
			mustOK(t, err, "readdir the mount")
			if slices.ContainsFunc(ents, func(e os.DirEntry) bool { return e.Name() == ".tierfs" || e.Name() == "orphans" }) {
				t.Fatalf("the mount shows tierfs's own directories: %v", ents)
			}
			if _, err := os.Lstat(m.path(".tierfs")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("lookup of .tierfs through the mount: %v", err)
			}

			mustOK(t, f.Close(), "close")
			waitFor(t, "the orphan to go once the program closed the file", func() bool { return len(orphanOn()) == 0 })
			checkClean(t, m)
		})
	}
}

// TestUnlinkAfterTakeover: a program holds a file open across a kill -9
// and unlinks it through the new daemon, which never saw the handle: the
// file must still be there for the handle (a daemon that took over keeps
// every file whose last name goes until the kernel forgets it), and go
// once the program closes it.
func TestUnlinkAfterTakeover(t *testing.T) {
	m := mount(t, mountOpt{supervised: true, devFuse: true})
	mustOK(t, os.MkdirAll(m.path("topic-0"), 0o755), "mkdir")
	p := m.path("topic-0/00000000000000000000.log")
	const block = 64 << 10
	want := bytes.Repeat([]byte{'k'}, block)
	mustOK(t, os.WriteFile(p, want, 0o644), "write")
	f, err := os.OpenFile(p, os.O_RDWR|unix.O_DIRECT, 0)
	mustOK(t, err, "open")
	defer f.Close()
	var st unix.Stat_t
	mustOK(t, unix.Fstat(int(f.Fd()), &st), "fstat")
	old := m.pid
	mustOK(t, syscall.Kill(old, syscall.SIGKILL), "kill -9 the daemon")
	m.nextDaemon(t, old)
	mustOK(t, os.Remove(p), "unlink through the new daemon")
	buf := make([]byte, block)
	if n, err := f.ReadAt(buf, 0); err != nil || n != block || !bytes.Equal(buf, want) {
		t.Fatalf("read through the descriptor the dead daemon gave, after the unlink: %d bytes, %v\n%s", n, err, m.logs())
	}
	if n, err := f.WriteAt(want, block); err != nil || n != block {
		t.Fatalf("write: %d, %v", n, err)
	}
	var st2 unix.Stat_t
	mustOK(t, unix.Fstat(int(f.Fd()), &st2), "fstat")
	if st2.Ino != st.Ino || st2.Size != 2*block || st2.Nlink != 0 {
		t.Fatalf("fstat: ino %d size %d nlink %d, want %d, %d, 0", st2.Ino, st2.Size, st2.Nlink, st.Ino, 2*block)
	}
	mustOK(t, f.Close(), "close")
	waitFor(t, "the orphan to go once the program closed the file", func() bool {
		for _, r := range m.roots {
			if ents, _ := os.ReadDir(filepath.Join(r, ".tierfs", "orphans")); len(ents) != 0 {
				return false
			}
		}
		return true
	})
	checkClean(t, m)
}
