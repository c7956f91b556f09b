package mountutil

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
)

// oneFile is a go-fuse tree with one file, f.
type oneFile struct{ gofs.Inode }

func (r *oneFile) OnAdd(ctx context.Context) {
	ch := r.NewPersistentInode(ctx, &gofs.MemRegularFile{Data: []byte("hello"), Attr: fuse.Attr{Mode: 0o644}}, gofs.StableAttr{})
	r.AddChild("f", ch, false)
}

// Mount serves a filesystem over the transport asked for (io_uring where
// the kernel's switch lets it, else /dev/fuse), sets the read-ahead from
// the [mount] table, and Unmount leaves nothing mounted; with io_uring
// the requests really come over the rings.
func TestMountServes(t *testing.T) {
	requireFUSE(t)
	for _, uring := range []bool{false, true} {
		name := "dev-fuse"
		if uring {
			name = "io_uring"
		}
		t.Run(name, func(t *testing.T) {
			if uring {
				testenv.URing(t)
			}
			mp := filepath.Join(t.TempDir(), "mnt")
			if err := os.Mkdir(mp, 0o755); err != nil {
				t.Fatal(err)
			}
			mo := fuse.MountOptions{FsName: "mountutil-test", Name: "mountutil-test", MaxWrite: 1 << 20, DirectMount: true}
			rawFS := gofs.NewNodeFS(&oneFile{}, &gofs.Options{MountOptions: mo})
			s, err := Mount(mp, rawFS, mo, Config{IOUring: uring, ReadAheadKB: 512}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(); err != nil {
				t.Fatal(err)
			}
			mounted := true
			defer func() {
				if mounted {
					unix.Unmount(mp, unix.MNT_DETACH)
				}
			}()
			if s.IOUring() != uring {
				t.Fatalf("IOUring() = %v, want %v", s.IOUring(), uring)
			}
			before := s.URingServed()
			if b, err := os.ReadFile(filepath.Join(mp, "f")); err != nil || string(b) != "hello" {
				t.Fatalf("read f: %q, %v", b, err)
			}
			if uring {
				if s.URingServed() <= before {
					t.Errorf("no request came over io_uring (served %d before the read, %d after)", before, s.URingServed())
				}
				if q, n := s.URingQueues(); q < 1 || n < 1 {
					t.Errorf("URingQueues() = %d, %d", q, n)
				}
			} else if s.URingServed() != 0 {
				t.Errorf("URingServed() = %d through /dev/fuse", s.URingServed())
			}
			var st unix.Stat_t
			if err := unix.Stat(mp, &st); err != nil {
				t.Fatal(err)
			}
			ra, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev)))
			if err != nil || strings.TrimSpace(string(ra)) != "512" {
				t.Errorf("the mount's read_ahead_kb = %q, %v; want 512", ra, err)
			}
			if err := s.Unmount(); err != nil {
				t.Fatal(err)
			}
			mounted = false
			if state, _, err := Inspect(mp); err != nil || state != Unmounted {
				t.Errorf("after Unmount: %v, %v", state, err)
			}
		})
	}
}
