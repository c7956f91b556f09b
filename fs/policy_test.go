package fs

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/policy"
)

// TestPolicyUnderKafkaWriter: a Kafka-shaped writer (partitions, rolling
// segments, mapped indexes, every segment kept open and mapped) on a mount
// whose fast tier is small. The engine brings the fast tier under its
// threshold while the writer runs; afterwards every file, read through its
// old fd, its mapping, a new open and its backing, is what was written.
func TestPolicyUnderKafkaWriter(t *testing.T) {
	pc := policy.DefaultConfig()
	pc.MigrateThreshold = 0.5
	pc.Interval = units.Duration(20 * time.Millisecond)
	pc.MinAge = units.Duration(300 * time.Millisecond)
	pc.Pin = nil
	m := mount(t, mountOpt{capacities: []units.ByteSize{16 << 20, 0}, policy: &pc})
	r := rand.New(rand.NewSource(7))
	type seg struct {
		rel      string
		fd       int
		data     []byte
		idx      []byte // mapping of the index
		idxRel   string
		idxModel []byte
	}
	var segs []*seg
	defer func() {
		for _, s := range segs {
			unix.Close(s.fd)
			unix.Munmap(s.idx)
		}
	}()
	const segSize = 1 << 20
	for p := 0; p < 3; p++ {
		mustOK(t, os.Mkdir(m.path(fmt.Sprintf("orders-%d", p)), 0o755), "mkdir")
	}
	for n := 0; n < 8; n++ {
		for p := 0; p < 3; p++ {
			base := fmt.Sprintf("orders-%d/%020d", p, n*1000)
			s := &seg{rel: base + ".log", idxRel: base + ".index"}
			fd, err := unix.Open(m.path(s.rel), unix.O_RDWR|unix.O_CREAT, 0o644)
			mustOK(t, err, "create segment")
			s.fd = fd
			ifd, err := unix.Open(m.path(s.idxRel), unix.O_RDWR|unix.O_CREAT, 0o644)
			mustOK(t, err, "create index")
			mustOK(t, unix.Ftruncate(ifd, 64<<10), "size index")
			s.idx, err = unix.Mmap(ifd, 0, 64<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			mustOK(t, err, "mmap index")
			unix.Close(ifd)
			s.idxModel = make([]byte, 64<<10)
			for off := 0; off < segSize; off += 64 << 10 {
				b := randBytes(r, 64<<10)
				_, err := unix.Write(fd, b)
				mustOK(t, err, "append")
				s.data = append(s.data, b...)
				e := randBytes(r, 8)
				copy(s.idx[off>>10:], e)
				copy(s.idxModel[off>>10:], e)
			}
			mustOK(t, unix.Fsync(fd), "fsync segment")
			segs = append(segs, s)
		}
	}
	// Readers hold every segment open; the writer is done. Wait for the
	// engine to settle the fast tier under its threshold.
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := m.status(t)
		if st.Tiers[0].UsedBytes <= 8<<20 && st.Tiers[1].Files > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fast tier did not converge: %+v", st.Tiers)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The newest segment of each partition stayed fast: checked before the
	// reads below, which make older segments the youngest (a segment being
	// read, and the ones after it, are promoted first), so that the newest
	// may then rightly go.
	for _, s := range segs[len(segs)-3:] {
		if m.tierOf(t, s.rel) != 0 {
			t.Fatalf("active segment %s demoted", s.rel)
		}
	}
	moved := 0
	for _, s := range segs {
		got := make([]byte, len(s.data))
		n, err := unix.Pread(s.fd, got, 0)
		mustOK(t, err, "pread through the old fd")
		if n != len(s.data) || !bytes.Equal(got, s.data) {
			t.Fatalf("%s: old fd reads wrong data", s.rel)
		}
		if !bytes.Equal(s.idx, s.idxModel) {
			t.Fatalf("%s: mapping reads wrong data", s.idxRel)
		}
		mustOK(t, unix.Msync(s.idx, unix.MS_SYNC), "msync")
		b, err := os.ReadFile(m.path(s.rel))
		mustOK(t, err, "read")
		if !bytes.Equal(b, s.data) {
			t.Fatalf("%s: new open reads wrong data", s.rel)
		}
		tier := m.tierOf(t, s.rel)
		bk, err := os.ReadFile(filepath.Join(m.tiers[tier], s.rel))
		mustOK(t, err, "read backing")
		if !bytes.Equal(bk, s.data) {
			t.Fatalf("%s: backing on tier %d differs", s.rel, tier)
		}
		ib, err := os.ReadFile(filepath.Join(m.tiers[m.tierOf(t, s.idxRel)], s.idxRel))
		mustOK(t, err, "read index backing")
		if !bytes.Equal(ib, s.idxModel) {
			t.Fatalf("%s: index backing differs", s.idxRel)
		}
		if tier == 1 {
			moved++
		}
		if m.tierOf(t, s.idxRel) != 0 {
			t.Fatalf("%s left the fast tier: indexes stay", s.idxRel)
		}
	}
	if moved == 0 {
		t.Fatalf("no segment moved")
	}
}
