package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
)

// requireURing turns the kernel's FUSE-over-io_uring switch on for the
// test (it only lets daemons ask for it; mounts that do not are
// unchanged) and puts it back afterwards, or skips saying why it cannot;
// under TIERFS_TEST_IOURING=1 TestMain holds it on already.
func requireURing(t *testing.T) {
	t.Helper()
	requireFUSE(t)
	if !uringForRun {
		testenv.URing(t)
	}
}

// TestURingServes mounts over io_uring and checks that requests really
// come that way, from every CPU, and that what they do is right: data
// written and read back in sizes up to the largest request, metadata
// operations, concurrent writers, a move under an open handle, and a
// clean unmount.
func TestURingServes(t *testing.T) {
	requireURing(t)
	m := mount(t, mountOpt{iouring: true})
	info := m.call(t, request{Op: "uring"}).URing
	if info == nil || !info.Active {
		t.Fatalf("the mount does not serve over io_uring: %+v", info)
	}
	before := info.Served

	// Data, from a small write to more than one request's worth.
	for _, size := range []int{1, 4095, 4096, 65536, 1 << 20, 3<<20 + 17} {
		p := filepath.Join(m.mnt, "data")
		want := pattern(byte(size), size)
		if err := os.WriteFile(p, want, 0o644); err != nil {
			t.Fatalf("write %d bytes: %v", size, err)
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read back %d bytes: err %v, equal %v", size, err, bytes.Equal(got, want))
		}
	}
	// Metadata: names travel in the payload buffer, replies of all sizes.
	dir := filepath.Join(m.mnt, "topic-0")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("n", 255)
	if err := os.WriteFile(filepath.Join(dir, long), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, long), filepath.Join(dir, "00000000000000000000.log")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(dir, "00000000000000000000.log"), "user.k", []byte("value"), 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := unix.Getxattr(filepath.Join(dir, "00000000000000000000.log"), "user.k", buf); err != nil || string(buf[:n]) != "value" {
		t.Fatalf("getxattr: %q, %v", buf[:n], err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 || ents[0].Name() != "00000000000000000000.log" {
		t.Fatalf("readdir: %v, %v", ents, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat of a missing name: %v", err)
	}

	// Writers on every CPU at once, more than the queues have threads.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := filepath.Join(m.mnt, "w"+string(rune('a'+i)))
			want := pattern(byte(i), 256<<10+i)
			f, err := os.Create(p)
			if err != nil {
				errs <- err
				return
			}
			for off := 0; off < len(want); off += 16 << 10 {
				if _, err := f.Write(want[off:min(off+16<<10, len(want))]); err != nil {
					errs <- err
					return
				}
			}
			if err := f.Sync(); err != nil {
				errs <- err
			}
			f.Close()
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, want) {
				errs <- errors.New(p + ": read back differs")
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// A move under an open handle, served over the ring.
	p := filepath.Join(m.mnt, "moving")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("before ")); err != nil {
		t.Fatal(err)
	}
	if rep := m.call(t, request{Op: "move", Path: "moving", Tier: "slow"}); rep.Err != "" {
		t.Fatalf("move: %s", rep.Err)
	}
	if _, err := f.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "before after" {
		t.Fatalf("after the move: %q, %v", got, err)
	}

	after := m.call(t, request{Op: "uring"}).URing
	if after.Served <= before+100 {
		t.Fatalf("only %d requests came over io_uring (before %d)", after.Served, before)
	}
}

// The harness fails a mount that asked for io_uring and is served through
// /dev/fuse (what TIERFS_TEST_IOURING=1 relies on): assertURing, run on a
// /dev/fuse mount, fails; on an io_uring mount (mount runs it) it passes.
func TestAssertURingCatchesDevFuse(t *testing.T) {
	requireURing(t)
	m := mount(t, mountOpt{devFuse: true})
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.assertURing(rec)
	}()
	<-done
	if !strings.Contains(rec.msg, "serves through /dev/fuse") {
		t.Fatalf("assertURing on a /dev/fuse mount: %q, want a failure saying it serves through /dev/fuse", rec.msg)
	}
	mount(t, mountOpt{iouring: true})
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as t.Fatalf would, without failing the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
