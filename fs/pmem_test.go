package fs

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/pmem"
	"github.com/tierfs/tierfs/tiering"
)

// settle has the daemon finish recycling and fill its pools; it returns
// the pmem tier's pool status.
func (m *testMount) settle(t testing.TB) *tiering.PoolStatus {
	t.Helper()
	rep := m.call(t, request{Op: "settle"})
	if rep.Err != "" {
		t.Fatalf("settle: %s", rep.Err)
	}
	p := rep.Status.Tiers[0].Pool
	if p == nil {
		t.Fatalf("tier 0 has no pool in status: %+v", rep.Status.Tiers[0])
	}
	return p
}

// A Kafka segment created on a pmem tier through the mount takes a
// preallocated slot, shows its logical size, reads back what was written,
// and goes back to the pool when deleted; the pool shows in status.
func TestPMemSegmentThroughMount(t *testing.T) {
	m := mount(t, mountOpt{pmem: testPMem(), capacities: []units.ByteSize{16 << 20, 0}})
	p := m.settle(t)
	if p.TargetSlots != 8 || p.FreeSlots != 8 || p.FreeBytes != 8<<20 {
		t.Fatalf("pool %+v, want 8 free 1 MiB slots (half of 16 MiB)", *p)
	}
	mustOK(t, os.MkdirAll(m.path("t-0"), 0o755), "mkdir")
	f, err := os.OpenFile(m.path(testSegment), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
	mustOK(t, err, "create")
	r := rand.New(rand.NewSource(5))
	var want []byte
	for len(want) < 300<<10 {
		b := randBytes(r, 16<<10)
		_, err := f.Write(b)
		mustOK(t, err, "append")
		want = append(want, b...)
	}
	mustOK(t, f.Sync(), "fsync")
	st, err := f.Stat()
	mustOK(t, err, "fstat")
	if st.Size() != int64(len(want)) {
		t.Fatalf("fstat size %d, want %d", st.Size(), len(want))
	}
	back := filepath.Join(m.tiers[0], testSegment)
	var bst unix.Stat_t
	mustOK(t, unix.Stat(back, &bst), "stat backing")
	size, ok, err := pmem.SizeAt(back)
	if err != nil || !ok || size != int64(len(want)) || bst.Size != 1<<20 {
		t.Fatalf("backing: %d bytes, logical size %d (%v, %v); want a 1 MiB slot holding %d", bst.Size, size, ok, err, len(want))
	}
	if got := m.status(t).Tiers[0].Pool; got.UsedBytes != 1<<20 {
		t.Fatalf("pool used %d bytes, want one slot", got.UsedBytes)
	}
	// Truncate up reads back zeros; the size is the logical one.
	mustOK(t, f.Truncate(int64(len(want))+5000), "truncate up")
	mustOK(t, f.Close(), "close")
	got, err := os.ReadFile(m.path(testSegment))
	mustOK(t, err, "read")
	if !bytes.Equal(got[:len(want)], want) || len(got) != len(want)+5000 || !allZero(got[len(want):]) {
		t.Fatalf("read back %d bytes; want the %d written then 5000 zeros", len(got), len(want))
	}
	mustOK(t, os.Remove(m.path(testSegment)), "delete")
	// The kernel sends the last close's RELEASE in the background: a
	// delete that comes first finds the file open and keeps it (an
	// orphan) until then.
	waitFor(t, "the deleted segment's slot back in the pool", func() bool {
		p := m.settle(t)
		return p.UsedBytes == 0 && p.FreeSlots == 8
	})
	if _, err := os.Stat(back); !os.IsNotExist(err) {
		t.Fatalf("backing of the deleted segment still there: %v", err)
	}
}

// Slots are reused after segments are deleted, and a new segment never
// shows a byte of an old one: not past its end, not after a truncate up.
func TestPMemRecycledSlotThroughMount(t *testing.T) {
	m := mount(t, mountOpt{pmem: testPMem(), capacities: []units.ByteSize{4 << 20, 0}})
	m.settle(t) // 2 slots
	mustOK(t, os.MkdirAll(m.path("t-0"), 0o755), "mkdir")
	secret := bytes.Repeat([]byte("SECRET!!"), 128<<10) // 1 MiB: a whole slot
	for round := 0; round < 3; round++ {
		names := []string{"t-0/00000000000000000000.log", "t-0/00000000000000000001.log"}
		for _, n := range names {
			mustOK(t, os.WriteFile(m.path(n), secret, 0o644), "write secret")
		}
		for _, n := range names {
			mustOK(t, os.Remove(m.path(n)), "delete")
		}
		m.settle(t)
		for _, n := range names {
			f, err := os.OpenFile(m.path(n), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644)
			mustOK(t, err, "create")
			_, err = f.Write([]byte("fresh"))
			mustOK(t, err, "write")
			buf := make([]byte, 1<<20)
			k, _ := f.ReadAt(buf, 0)
			if k != 5 {
				t.Fatalf("round %d: a 5-byte segment reads %d bytes", round, k)
			}
			mustOK(t, f.Truncate(1<<20), "truncate up")
			k, err = f.ReadAt(buf, 0)
			if k != 1<<20 || bytes.Contains(buf, []byte("SECRET")) || !allZero(buf[5:]) {
				t.Fatalf("round %d: after truncate up %d bytes (%v), old data or garbage past the write", round, k, err)
			}
			mustOK(t, f.Close(), "close")
			var st unix.Stat_t
			mustOK(t, unix.Stat(filepath.Join(m.tiers[0], n), &st), "stat backing")
			if _, ok, _ := pmem.SizeAt(filepath.Join(m.tiers[0], n)); !ok {
				t.Fatalf("round %d: %s is not a pool file", round, n)
			}
		}
		for _, n := range names {
			mustOK(t, os.Remove(m.path(n)), "delete")
		}
		m.settle(t)
	}
}

// kill -9 of the daemon with a pmem segment open: every fsynced byte is
// there with the fsynced size, or the later size with exactly the bytes
// written; never more, never garbage. Appends go on after the remount.
func TestPMemKill9(t *testing.T) {
	for _, unsynced := range []int{0, 100 << 10} {
		m := mount(t, mountOpt{pmem: testPMem()})
		m.settle(t)
		mustOK(t, os.MkdirAll(m.path("t-0"), 0o755), "mkdir")
		fd, err := unix.Open(m.path(testSegment), unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o644)
		mustOK(t, err, "create")
		r := rand.New(rand.NewSource(int64(unsynced)))
		var model []byte
		for len(model) < 3<<20 { // past the 1 MiB slot: growth too
			b := randBytes(r, 16<<10)
			_, err := unix.Write(fd, b)
			mustOK(t, err, "append")
			model = append(model, b...)
			if len(model)%(1<<20) == 0 {
				mustOK(t, unix.Fsync(fd), "fsync")
			}
		}
		mustOK(t, unix.Fsync(fd), "fsync")
		synced := len(model)
		for len(model) < synced+unsynced {
			b := randBytes(r, 16<<10)
			_, err := unix.Write(fd, b)
			mustOK(t, err, "append")
			model = append(model, b...)
		}
		m.kill(t)
		unix.Close(fd)

		m2 := m.restart(t)
		got, err := os.ReadFile(m2.path(testSegment))
		mustOK(t, err, "read after kill -9")
		if len(got) != synced && len(got) != len(model) {
			t.Fatalf("after kill -9: %d bytes; want the fsynced %d or the written %d", len(got), synced, len(model))
		}
		if !bytes.Equal(got, model[:len(got)]) {
			t.Fatalf("after kill -9: the %d bytes differ from what was written", len(got))
		}
		// Appending on from the recovered size leaves no gap of old bytes.
		f, err := os.OpenFile(m2.path(testSegment), os.O_WRONLY|os.O_APPEND, 0)
		mustOK(t, err, "reopen")
		_, err = f.Write([]byte("after"))
		mustOK(t, err, "append after recovery")
		mustOK(t, f.Close(), "close")
		got2, err := os.ReadFile(m2.path(testSegment))
		mustOK(t, err, "read")
		if !bytes.Equal(got2, append(got, "after"...)) {
			t.Fatalf("append after recovery: %d bytes, want %d", len(got2), len(got)+5)
		}
		m2.stop(t)
	}
}
