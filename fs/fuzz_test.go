package fs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/policy"
)

// FuzzDifferential decodes bytes into file operations (create, write,
// read, truncate, fsync, close, rename, unlink, mkdir, rmdir, chmod, writes
// through a shared mapping, and moves between tiers) and applies them to
// the mount and to a plain directory. Every operation must give the same
// result on both, reads the same bytes, and the trees must match at the end.
func FuzzDifferential(f *testing.F) {
	for _, seed := range [][]byte{
		{0, 0, 1, 0, 0, 10, 3, 7, 10, 0, 1, 2, 0},
		{8, 0, 0, 4, 1, 20, 0, 0, 50, 9, 6, 4, 5, 10, 5, 1, 2, 0, 6, 5, 1, 2, 0},
		{0, 2, 1, 0, 200, 90, 1, 11, 0, 0, 10, 99, 10, 2, 2, 3, 0, 40, 10, 2, 0, 2, 0},
		{8, 1, 0, 5, 1, 0, 0, 30, 7, 12, 6, 5, 13, 10, 5, 2, 7, 5, 9, 1},
		{0, 3, 1, 0, 0, 255, 255, 4, 0, 11, 0, 0, 3, 77, 10, 3, 1, 14, 3, 2, 0},
	} {
		f.Add(seed)
	}
	// The policy engine runs too, aggressively: a small fast tier, no
	// minimum age, a plan every few milliseconds, so that its moves
	// interleave with the operations.
	pc := policy.DefaultConfig()
	pc.MigrateThreshold = 0.3
	pc.Interval = units.Duration(3 * time.Millisecond)
	pc.MinAge = 0
	pc.MigrateThreads = 2
	pc.Pin = nil
	m := mount(f, mountOpt{ntiers: 3, capacities: []units.ByteSize{256 << 10, 512 << 10, 0}, policy: &pc})
	ref := f.TempDir()
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, prog []byte) {
		c := fmt.Sprintf("case-%d", n.Add(1))
		d := &diff{t: t, m: m, a: filepath.Join(m.mnt, c), b: filepath.Join(ref, c), rel: c}
		mustOK(t, os.Mkdir(d.a, 0o755), "mkdir case")
		mustOK(t, os.Mkdir(d.b, 0o755), "mkdir case")
		defer d.cleanup()
		d.run(prog)
		d.compareTrees()
	})
}

// trace logs each operation (TIERFS_FUZZ_TRACE=1) to read a failure.
var trace = os.Getenv("TIERFS_FUZZ_TRACE") != ""

type fdPair struct {
	a, b int
	name string
}

type diff struct {
	t    *testing.T
	m    *testMount
	a, b string // case roots: mount, reference
	rel  string // case root relative to the mount
	fds  []fdPair
}

var fuzzNames = []string{"f0", "f1", "d0/f2", "d0/f3", "d1/f4", "d0/d2/f5", "d0", "d1", "d0/d2"}
var fuzzDirs = []string{"d0", "d1", "d0/d2"}

func (d *diff) cleanup() {
	for _, p := range d.fds {
		unix.Close(p.a)
		unix.Close(p.b)
	}
	os.RemoveAll(d.a)
	os.RemoveAll(d.b)
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// same fails unless both sides gave the same errno.
func (d *diff) same(op string, ea, eb error) bool {
	d.t.Helper()
	if errnoOf(ea) != errnoOf(eb) {
		d.t.Fatalf("%s: mount says %v, plain directory says %v", op, ea, eb)
	}
	return ea == nil
}

func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func (d *diff) run(prog []byte) {
	t := d.t
	pos := 0
	next := func() int {
		if pos >= len(prog) {
			return 0
		}
		v := prog[pos]
		pos++
		return int(v)
	}
	for steps := 0; pos < len(prog) && steps < 64; steps++ {
		op := next() % 15
		if trace {
			t.Logf("op %d at %d, fds %v", op, pos-1, d.fds)
		}
		switch op {
		case 0, 13: // open or create
			if len(d.fds) >= 6 {
				continue
			}
			name := fuzzNames[next()%6]
			flags := unix.O_RDWR | unix.O_CREAT
			if next()%4 == 0 {
				flags |= unix.O_TRUNC
			}
			fa, ea := unix.Open(filepath.Join(d.a, name), flags, 0o644)
			fb, eb := unix.Open(filepath.Join(d.b, name), flags, 0o644)
			if d.same("open "+name, ea, eb) {
				d.fds = append(d.fds, fdPair{fa, fb, name})
			} else {
				if ea == nil {
					unix.Close(fa)
				}
				if eb == nil {
					unix.Close(fb)
				}
			}
		case 1: // pwrite
			p, ok := d.pick(next())
			if !ok {
				continue
			}
			off := int64(next()<<8 | next())
			data := pattern(byte(next()), 1+next()*32)
			_, ea := unix.Pwrite(p.a, data, off)
			_, eb := unix.Pwrite(p.b, data, off)
			d.same("pwrite "+p.name, ea, eb)
		case 2: // pread and compare
			p, ok := d.pick(next())
			if !ok {
				continue
			}
			off := int64(next() << 8)
			ba, bb := make([]byte, 70000), make([]byte, 70000)
			na, ea := unix.Pread(p.a, ba, off)
			nb, eb := unix.Pread(p.b, bb, off)
			if d.same("pread "+p.name, ea, eb) && (na != nb || !bytes.Equal(ba[:na], bb[:nb])) {
				t.Fatalf("pread %s at %d: %d bytes vs %d, contents differ", p.name, off, na, nb)
			}
		case 3: // ftruncate
			p, ok := d.pick(next())
			if !ok {
				continue
			}
			sz := int64(next() << 9)
			d.same("ftruncate "+p.name, unix.Ftruncate(p.a, sz), unix.Ftruncate(p.b, sz))
		case 4: // fsync
			p, ok := d.pick(next())
			if !ok {
				continue
			}
			d.same("fsync "+p.name, unix.Fsync(p.a), unix.Fsync(p.b))
		case 5: // close
			i := next()
			if len(d.fds) == 0 {
				continue
			}
			i %= len(d.fds)
			d.same("close", unix.Close(d.fds[i].a), unix.Close(d.fds[i].b))
			d.fds = append(d.fds[:i], d.fds[i+1:]...)
		case 6: // rename
			from, to := fuzzNames[next()%len(fuzzNames)], fuzzNames[next()%len(fuzzNames)]
			ea := os.Rename(filepath.Join(d.a, from), filepath.Join(d.a, to))
			eb := os.Rename(filepath.Join(d.b, from), filepath.Join(d.b, to))
			d.same("rename "+from+" "+to, ea, eb)
		case 7: // unlink
			name := fuzzNames[next()%6]
			d.same("unlink "+name, unix.Unlink(filepath.Join(d.a, name)), unix.Unlink(filepath.Join(d.b, name)))
		case 8: // mkdir
			name := fuzzDirs[next()%len(fuzzDirs)]
			d.same("mkdir "+name, unix.Mkdir(filepath.Join(d.a, name), 0o755), unix.Mkdir(filepath.Join(d.b, name), 0o755))
		case 9: // rmdir
			name := fuzzDirs[next()%len(fuzzDirs)]
			d.same("rmdir "+name, unix.Rmdir(filepath.Join(d.a, name)), unix.Rmdir(filepath.Join(d.b, name)))
		case 10, 14: // move to a tier: the reference does nothing
			name := fuzzNames[next()%6]
			tier := tierNames[next()%3]
			err := d.m.move(t, d.rel+"/"+name, tier)
			fi, serr := os.Lstat(filepath.Join(d.b, name))
			switch {
			case (err == nil || errors.Is(err, syscall.EBUSY)) && serr == nil && fi.Mode().IsRegular():
				// EBUSY: the engine was moving the same file.
			case errors.Is(err, syscall.ENOENT) && (os.IsNotExist(serr) || errors.Is(serr, syscall.ENOTDIR)):
				// Move resolves names itself: a path through a file is
				// simply not found.
			case errors.Is(err, syscall.EINVAL) && serr == nil && fi.IsDir():
			default:
				t.Fatalf("move %s to %s: %v", name, tier, err)
			}
		case 11: // write through a shared mapping
			p, ok := d.pick(next())
			if !ok {
				continue
			}
			var st unix.Stat_t
			if unix.Fstat(p.b, &st) != nil || st.Size == 0 {
				continue
			}
			off := int64(next()<<8) % st.Size
			data := pattern(byte(next()), 1+next()*16)
			if int64(len(data)) > st.Size-off {
				data = data[:st.Size-off]
			}
			mp, err := unix.Mmap(p.a, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				t.Fatalf("mmap %s: %v", p.name, err)
			}
			copy(mp[off:], data)
			if err := unix.Munmap(mp); err != nil {
				t.Fatalf("munmap: %v", err)
			}
			if _, err := unix.Pwrite(p.b, data, off); err != nil {
				t.Fatalf("reference pwrite: %v", err)
			}
		case 12: // chmod
			name := fuzzNames[next()%len(fuzzNames)]
			mode := uint32(0o600 | next()&0o77)
			d.same("chmod "+name, unix.Chmod(filepath.Join(d.a, name), mode), unix.Chmod(filepath.Join(d.b, name), mode))
		}
	}
}

func (d *diff) pick(i int) (fdPair, bool) {
	if len(d.fds) == 0 {
		return fdPair{}, false
	}
	return d.fds[i%len(d.fds)], true
}

// compareTrees walks both case roots: the same names, types, modes, sizes
// and contents.
func (d *diff) compareTrees() {
	ta, tb := snapshot(d.t, d.a), snapshot(d.t, d.b)
	if len(ta) != len(tb) {
		d.t.Fatalf("trees differ:\nmount: %v\nplain: %v", keys(ta), keys(tb))
	}
	for k, va := range ta {
		vb, ok := tb[k]
		if !ok {
			d.t.Fatalf("%s only in the mount", k)
		}
		if va != vb {
			d.t.Fatalf("%s differs: mount %q, plain %q", k, short(va), short(vb))
		}
	}
}

func snapshot(t *testing.T, root string) map[string]string {
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := e.Info()
		if err != nil {
			return err
		}
		v := fmt.Sprintf("%v", info.Mode())
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += fmt.Sprintf(" %d %x", info.Size(), b)
		}
		out[rel] = v
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

func keys(m map[string]string) string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return strings.Join(k, " ")
}

func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
