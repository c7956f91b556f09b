package fs

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/pmem"
)

// checkClean fails if any tier holds staged copies or a superseded marker.
func checkClean(t *testing.T, m *testMount) {
	t.Helper()
	for i, d := range m.tiers {
		ents, _ := os.ReadDir(filepath.Join(m.roots[i], ".tierfs", "staging"))
		if len(ents) != 0 {
			t.Fatalf("staged copies left on %s: %v", d, ents)
		}
		if ents, _ := os.ReadDir(filepath.Join(m.roots[i], ".tierfs", "orphans")); len(ents) != 0 {
			t.Fatalf("open files with no name left kept on %s: %v", d, ents)
		}
		filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return nil
			}
			if _, err := unix.Lgetxattr(p, "trusted.tierfs.superseded", make([]byte, 64)); err == nil {
				t.Errorf("superseded marker left on %s", p)
			}
			return nil
		})
	}
}

// TestMoveCrash kills the daemon (kill -9) at every step of a move, then
// mounts again: the file is there exactly once, byte for byte, with the
// same inode number, and nothing is left over.
func TestMoveCrash(t *testing.T) {
	steps := []string{"move:staged", "move:copied", "move:synced", "move:marked", "move:renamed", "move:swapped", "move:durable", "move:unlinked", "move:release"}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			m := mount(t, mountOpt{crashAt: step})
			r := rand.New(rand.NewSource(int64(len(step))))
			data := randBytes(r, 3<<20+12345)
			mustOK(t, os.MkdirAll(m.path("topic-0"), 0o755), "mkdir")
			mustOK(t, os.WriteFile(m.path("topic-0/00000000000000000000.log"), data, 0o644), "write")
			f, err := os.Open(m.path("topic-0/00000000000000000000.log"))
			mustOK(t, err, "open")
			mustOK(t, f.Sync(), "fsync")
			var st unix.Stat_t
			mustOK(t, unix.Fstat(int(f.Fd()), &st), "fstat")
			m.expectCrash(t, request{Op: "move", Path: "topic-0/00000000000000000000.log", Tier: "slow"})
			f.Close()

			m2 := m.restart(t)
			got, err := os.ReadFile(m2.path("topic-0/00000000000000000000.log"))
			mustOK(t, err, "read after recovery")
			if !bytes.Equal(got, data) {
				t.Fatalf("content differs after crash at %s (%d bytes, want %d)", step, len(got), len(data))
			}
			tier := m2.tierOf(t, "topic-0/00000000000000000000.log")
			var st2 unix.Stat_t
			mustOK(t, unix.Stat(m2.path("topic-0/00000000000000000000.log"), &st2), "stat")
			if st2.Ino != st.Ino {
				t.Fatalf("inode %d became %d", st.Ino, st2.Ino)
			}
			checkClean(t, m2)
			// The tier says where the crash fell: before the rename, the
			// source is the file; after, the destination.
			committed := step == "move:renamed" || step == "move:swapped" || step == "move:durable" || step == "move:unlinked" || step == "move:release"
			if committed != (tier == 1) {
				t.Fatalf("after a crash at %s the file is on tier %d", step, tier)
			}
			// And the file moves fine now.
			mustOK(t, m2.move(t, "topic-0/00000000000000000000.log", "fast"), "move after recovery")
			mustOK(t, m2.move(t, "topic-0/00000000000000000000.log", "slow"), "move after recovery")
			if m2.tierOf(t, "topic-0/00000000000000000000.log") != 1 {
				t.Fatalf("move after recovery did not land")
			}
		})
	}
}

// TestRenameOverCrash kills the daemon while a rename replaces a name
// that lives on another tier (Kafka's checkpoint pattern, after the old
// checkpoint was demoted; or a fifo, symlink or hard-linked file, which
// the journal names instead of a marker): afterwards the name holds either
// the old object or the new file, and the source name exists exactly when
// the rename did not happen.
func TestRenameOverCrash(t *testing.T) {
	kinds := []struct {
		name string
		make func(m *testMount) error
		// isOld tells the old object from the new file at the name.
		isOld func(m *testMount) bool
	}{
		{"file", func(m *testMount) error { return os.WriteFile(m.path("ckpt"), []byte("old"), 0o644) }, readsOld},
		{"fifo", func(m *testMount) error { return unix.Mkfifo(m.path("ckpt"), 0o644) },
			func(m *testMount) bool {
				fi, err := os.Lstat(m.path("ckpt"))
				return err == nil && fi.Mode()&os.ModeNamedPipe != 0
			}},
		{"symlink", func(m *testMount) error { return os.Symlink("old", m.path("ckpt")) },
			func(m *testMount) bool { l, _ := os.Readlink(m.path("ckpt")); return l == "old" }},
		{"hardlinked", func(m *testMount) error {
			if err := os.WriteFile(m.path("ckpt"), []byte("old"), 0o644); err != nil {
				return err
			}
			return os.Link(m.path("ckpt"), m.path("ckpt.link"))
		}, readsOld},
	}
	for _, k := range kinds {
		steps := []string{"rename:marked", "rename:renamed"}
		if k.name == "file" {
			// A loser that carries a marker is replaced with the namespace
			// lock free between the steps (tiering.renameOver): the
			// winner's directory is durable before the loser goes.
			steps = append(steps, "rename:durable")
		}
		for _, step := range steps {
			t.Run(k.name+"/"+step, func(t *testing.T) {
				m := mount(t, mountOpt{crashAt: step})
				mustOK(t, k.make(m), "make the old "+k.name)
				mustOK(t, os.WriteFile(m.path("ckpt.tmp"), []byte("new"), 0o644), "write new")
				mustOK(t, m.move(t, "ckpt.tmp", "slow"), "demote new")
				err := os.Rename(m.path("ckpt.tmp"), m.path("ckpt"))
				if err == nil {
					t.Fatalf("rename succeeded although the daemon died at %s", step)
				}
				if !errors.Is(err, syscall.ECONNABORTED) && !errors.Is(err, syscall.ENOTCONN) {
					t.Fatalf("rename: %v; want the daemon dead at %s", err, step)
				}
				m.waitCrash(t)

				m2 := m.restart(t)
				m2.tierOf(t, "ckpt") // exactly one copy
				_, tmpErr := os.Stat(m2.path("ckpt.tmp"))
				var got []byte // the new file's contents; never open a fifo
				if fi, err := os.Lstat(m2.path("ckpt")); err == nil && fi.Mode().IsRegular() {
					got, _ = os.ReadFile(m2.path("ckpt"))
				}
				switch {
				case k.isOld(m2) && tmpErr == nil:
					if step != "rename:marked" {
						t.Fatalf("rename lost after crash at %s", step)
					}
				case string(got) == "new" && os.IsNotExist(tmpErr):
					if step == "rename:marked" {
						t.Fatalf("rename happened before the crash point %s", step)
					}
				default:
					t.Fatalf("after crash at %s: ckpt=%q, ckpt.tmp: %v", step, got, tmpErr)
				}
				if k.name == "hardlinked" {
					if b, err := os.ReadFile(m2.path("ckpt.link")); err != nil || string(b) != "old" {
						t.Fatalf("the old file's other name reads %q, %v", b, err)
					}
				}
				checkClean(t, m2)
				if _, err := os.Stat(filepath.Join(m2.roots[0], ".tierfs", "journal", "rename")); !os.IsNotExist(err) {
					t.Fatalf("rename journal left after recovery: %v", err)
				}
			})
		}
	}
}

func readsOld(m *testMount) bool {
	fi, err := os.Lstat(m.path("ckpt"))
	if err != nil || !fi.Mode().IsRegular() {
		return false
	}
	b, _ := os.ReadFile(m.path("ckpt"))
	return string(b) == "old"
}

// TestDirRenameCrash kills the daemon in the middle of renaming a
// directory that has copies on two tiers: recovery rolls it forward.
func TestDirRenameCrash(t *testing.T) {
	for _, step := range []string{"rename-dir:journaled", "rename-dir:tier"} {
		t.Run(step, func(t *testing.T) {
			m := mount(t, mountOpt{crashAt: step})
			mustOK(t, os.Mkdir(m.path("t-0"), 0o755), "mkdir")
			want := map[string]string{}
			for i, n := range []string{"a.log", "b.log", "c.index"} {
				want[n] = n + " data"
				mustOK(t, os.WriteFile(m.path("t-0/"+n), []byte(want[n]), 0o644), "write")
				if i < 2 {
					mustOK(t, m.move(t, "t-0/"+n, "slow"), "demote")
				}
			}
			if err := os.Rename(m.path("t-0"), m.path("t-0.x-delete")); err == nil {
				t.Fatalf("rename succeeded although the daemon died at %s", step)
			}
			m.waitCrash(t)

			m2 := m.restart(t)
			for n, w := range want {
				got, err := os.ReadFile(m2.path("t-0.x-delete/" + n))
				mustOK(t, err, "read "+n)
				if string(got) != w {
					t.Fatalf("%s = %q", n, got)
				}
				m2.tierOf(t, "t-0.x-delete/"+n)
			}
			if _, err := os.Stat(m2.path("t-0")); !os.IsNotExist(err) {
				t.Fatalf("old directory still visible: %v", err)
			}
			for _, d := range m2.tiers {
				if _, err := os.Stat(filepath.Join(d, "t-0")); !os.IsNotExist(err) {
					t.Fatalf("old directory left on %s", d)
				}
			}
		})
	}
}

// TestMoveCrashUnderWrites: a writer appends and fsyncs while the move
// runs and the daemon dies at each step, over several iterations. After
// the remount every byte that an fsync acknowledged is there.
func TestMoveCrashUnderWrites(t *testing.T) {
	steps := []string{"move:staged", "move:copied", "move:synced", "move:marked", "move:renamed", "move:swapped", "move:durable", "move:unlinked", "move:release"}
	for iter := 0; iter < 4; iter++ {
		// The last iteration moves a pmem pool segment (mmap writes, a
		// logical size, the slot going back to the pool).
		var pm *pmem.Config
		rel := "seg.log"
		if iter == 3 {
			pm, rel = testPMem(), testSegment
		}
		for _, step := range steps {
			t.Run(fmt.Sprintf("%s/%d", step, iter), func(t *testing.T) {
				m := mount(t, mountOpt{crashAt: step, pmem: pm})
				r := rand.New(rand.NewSource(int64(iter*100 + len(step))))
				mustOK(t, os.MkdirAll(filepath.Dir(m.path(rel)), 0o755), "mkdir")
				p := m.path(rel)
				fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT, 0o644)
				mustOK(t, err, "create")
				var model []byte
				for i := 0; i < 16; i++ {
					b := randBytes(r, 64<<10)
					_, err := unix.Write(fd, b)
					mustOK(t, err, "write")
					model = append(model, b...)
				}
				mustOK(t, unix.Fsync(fd), "fsync")
				synced := len(model)
				tried := model // what was written, the write in flight at the crash too
				stop := make(chan struct{})
				done := make(chan struct{})
				go func() {
					defer close(done)
					for {
						select {
						case <-stop:
							return
						default:
						}
						b := randBytes(r, 4096+r.Intn(8192))
						// A write the daemon dies in may or may not be
						// there: the model has it, model's length does not.
						model = append(model, b...)
						if _, err := unix.Write(fd, b); err != nil {
							model = model[:len(model)-len(b)]
							tried = model[:len(model)+len(b)]
							return // the daemon died
						}
						tried = model
						if unix.Fsync(fd) != nil {
							return
						}
						synced = len(model)
					}
				}()
				to := "slow"
				m.expectCrash(t, request{Op: "move", Path: rel, Tier: to})
				close(stop)
				<-done
				unix.Close(fd)

				m2 := m.restart(t)
				got, err := os.ReadFile(m2.path(rel))
				mustOK(t, err, "read after recovery")
				if len(got) < synced || !bytes.Equal(got[:synced], model[:synced]) {
					t.Fatalf("crash at %s lost fsynced data: have %d bytes, %d were fsynced", step, len(got), synced)
				}
				if len(got) > len(tried) || !bytes.Equal(got, tried[:len(got)]) {
					t.Fatalf("crash at %s: bytes past the fsynced length are not what was written (%d bytes, %d written)", step, len(got), len(tried))
				}
				m2.tierOf(t, rel)
				checkClean(t, m2)
			})
		}
	}
}
