//go:build linux

package pmem

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// benchSeg is the segment size of the benchmarks: a segment rolls (off the
// clock) every benchSeg bytes.
const benchSeg = 64 << 20

// appender is one way of writing a segment.
type appender interface {
	write(p []byte, off int64) error
	sync() error
	roll(b *testing.B) // ends the segment and starts a new one, off the clock
	close()
}

// mmapAppender writes through a File on a pool slot.
type mmapAppender struct {
	p          *Pool
	datafd     int
	noPopulate bool
	f          *File
	fd         int
	n          int
}

func (a *mmapAppender) write(p []byte, off int64) error {
	_, err := a.f.WriteAt(p, off)
	return err
}
func (a *mmapAppender) sync() error { return a.f.Sync() }
func (a *mmapAppender) close() {
	if a.f != nil {
		a.f.Close()
		unix.Close(a.fd)
		a.p.Return(a.datafd, "seg"+strconv.Itoa(a.n))
		a.f = nil
	}
}
func (a *mmapAppender) roll(b *testing.B) {
	a.close()
	a.n++
	name := "seg" + strconv.Itoa(a.n)
	// What Run does in the background: warm the returned slot.
	if err := a.p.Fill(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := a.p.Take(a.datafd, name); err != nil {
		b.Fatal(err)
	}
	a.f, a.fd = openAt(b, a.datafd, name)
	a.f.noPopulate = a.noPopulate
}

// pwriteAppender writes with pwrite and syncs with fdatasync, on a fresh
// file, or a preallocated one.
type pwriteAppender struct {
	datafd   int
	prealloc bool
	fd       int
	n        int
}

func (a *pwriteAppender) write(p []byte, off int64) error {
	_, err := unix.Pwrite(a.fd, p, off)
	return err
}
func (a *pwriteAppender) sync() error { return unix.Fdatasync(a.fd) }
func (a *pwriteAppender) close() {
	if a.fd > 0 {
		unix.Close(a.fd)
		unix.Unlinkat(a.datafd, "seg"+strconv.Itoa(a.n), 0)
		a.fd = 0
	}
}
func (a *pwriteAppender) roll(b *testing.B) {
	a.close()
	a.n++
	fd, err := unix.Openat(a.datafd, "seg"+strconv.Itoa(a.n), unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	if a.prealloc {
		if err := unix.Fallocate(fd, 0, 0, benchSeg); err != nil {
			b.Fatal(err)
		}
	}
	a.fd = fd
}

// BenchmarkAppend: Kafka-shaped appends to 64 MiB segments on a tmpfs
// that emulates pmem: 16 KiB writes with a sync every 1 MiB, and 1 MiB
// writes with a sync after each; through a File on a pool slot (mmap
// copies, msync) against pwrite+fdatasync on a fresh file (Kafka's
// default, log.preallocate=false) and on a preallocated one. The mmap
// variants: "mmap" as the pool is meant to run (slots written with zeros,
// page tables populated ahead of the appends); "mmap-cold" on slots only
// fallocated; "mmap-faults" without populating, one page fault per page.
func BenchmarkAppend(b *testing.B) {
	for _, size := range []struct {
		name  string
		write int
	}{{"16KiB", 16 << 10}, {"1MiB", 1 << 20}} {
		for _, kind := range []string{"mmap", "mmap-cold", "mmap-faults", "pwrite", "pwrite-prealloc"} {
			b.Run(size.name+"/"+kind, func(b *testing.B) {
				root := pmemDir(b, 1024)
				noWarm = kind == "mmap-cold"
				defer func() { noWarm = false }()
				p, _, datafd := testPool(b, root, benchSeg, 2)
				var a appender
				switch kind {
				case "mmap", "mmap-cold":
					a = &mmapAppender{p: p, datafd: datafd}
				case "mmap-faults":
					a = &mmapAppender{p: p, datafd: datafd, noPopulate: true}
				case "pwrite":
					a = &pwriteAppender{datafd: datafd}
				default:
					a = &pwriteAppender{datafd: datafd, prealloc: true}
				}
				defer a.close()
				buf := make([]byte, size.write)
				for i := range buf {
					buf[i] = byte(i)
				}
				a.roll(b)
				var off int64
				b.SetBytes(int64(size.write))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if off+int64(len(buf)) > benchSeg {
						b.StopTimer()
						a.roll(b)
						off = 0
						b.StartTimer()
					}
					if err := a.write(buf, off); err != nil {
						b.Fatal(err)
					}
					off += int64(len(buf))
					if off%(1<<20) == 0 {
						if err := a.sync(); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// BenchmarkSegmentRoll: the time to get a new 64 MiB segment file: Take
// from the pool, against creating one and fallocating it (Kafka with
// log.preallocate=true) or just creating it (the default, which pays the
// allocation on every write instead); and what the pool pays on the other
// side, Return (zero, reallocate, fsync).
func BenchmarkSegmentRoll(b *testing.B) {
	b.Run("take", func(b *testing.B) {
		root := pmemDir(b, 1024)
		p, _, datafd := testPool(b, root, benchSeg, 4)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			p.mu.Lock()
			n := p.free[len(p.free)-1]
			p.mu.Unlock()
			if err := p.Take(datafd, "seg"); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			// Put it back as it was, without the cost of a Return.
			if err := unix.Renameat(datafd, "seg", p.dirfd, slotPrefix+strconv.FormatInt(n, 10)); err != nil {
				b.Fatal(err)
			}
			p.mu.Lock()
			p.free = append(p.free, n)
			p.used -= p.seg
			p.mu.Unlock()
			b.StartTimer()
		}
	})
	for _, prealloc := range []bool{true, false} {
		name := "create-sparse"
		if prealloc {
			name = "create-fallocate"
		}
		b.Run(name, func(b *testing.B) {
			root := pmemDir(b, 1024)
			_, _, datafd := testPool(b, root, benchSeg, 0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				fd, err := unix.Openat(datafd, "seg", unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
				if err != nil {
					b.Fatal(err)
				}
				if prealloc {
					if err := unix.Fallocate(fd, 0, 0, benchSeg); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				unix.Close(fd)
				unix.Unlinkat(datafd, "seg", 0)
				b.StartTimer()
			}
		})
	}
	b.Run("make-slot", func(b *testing.B) { // what Run pays per new slot
		root := pmemDir(b, 1024)
		p, _, _ := testPool(b, root, benchSeg, 0)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := p.makeSlot(int64(i)); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			unix.Unlinkat(p.dirfd, slotName(int64(i), false), 0)
			b.StartTimer()
		}
	})
	b.Run("warm", func(b *testing.B) { // what Run pays per returned slot
		root := pmemDir(b, 1024)
		p, _, _ := testPool(b, root, benchSeg, 0)
		noWarm = true
		err := p.makeSlot(0)
		noWarm = false
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			if err := unix.Renameat(p.dirfd, slotName(0, false), p.dirfd, slotName(0, true)); err != nil {
				b.Fatal(err)
			}
			fd, err := unix.Openat(p.dirfd, slotName(0, true), unix.O_RDWR, 0)
			if err != nil {
				b.Fatal(err)
			}
			zeroFile(fd, 0, benchSeg) // cold again: pages allocated, not written
			unix.Close(fd)
			b.StartTimer()
			if err := p.warm(0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("return", func(b *testing.B) {
		root := pmemDir(b, 1024)
		p, _, datafd := testPool(b, root, benchSeg, 2)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			if err := p.Take(datafd, "seg"); err != nil && !errors.Is(err, ErrEmpty) {
				b.Fatal(err)
			}
			b.StartTimer()
			if err := p.Return(datafd, "seg"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
