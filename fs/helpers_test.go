package fs

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/tiering"
	"github.com/tierfs/tierfs/tiering/units"
)

// testMount is a real tierfs mount over tiers in a temporary directory.
type testMount struct {
	t     *testing.T
	mnt   string
	tiers []string
	store *tiering.Store
	srv   interface {
		Unmount() error
		Wait()
	}
}

type mountOpt struct {
	capacities []units.ByteSize // per tier; 0 = backing size
	tierDirs   []string         // use these backing dirs instead of fresh ones
	names      []string
}

// requireFUSE skips a test that needs to mount, saying why.
func requireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE needs root (tests run as root in CI)")
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR, 0)
	if err != nil {
		t.Skipf("/dev/fuse cannot be opened: %v", err)
	}
	unix.Close(fd)
}

// errorLog fails the test on any error-level log line from the store.
type errorLog struct{ t testing.TB }

func (e errorLog) Write(p []byte) (int, error) {
	if strings.Contains(string(p), `"level":"error"`) {
		e.t.Errorf("unexpected error log: %s", p)
	}
	return len(p), nil
}

func mount(t testing.TB, o mountOpt) *testMount {
	t.Helper()
	requireFUSE(t)
	syscall.Umask(0)
	base := t.TempDir()
	n := len(o.tierDirs)
	if n == 0 {
		n = max(2, len(o.capacities))
	}
	var cfgs []tiering.TierConfig
	var dirs []string
	for i := 0; i < n; i++ {
		d := filepath.Join(base, "tier"+string(rune('0'+i)))
		if o.tierDirs != nil {
			d = o.tierDirs[i]
		} else if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		name := []string{"fast", "slow", "cold", "colder"}[i]
		if o.names != nil {
			name = o.names[i]
		}
		c := tiering.TierConfig{Name: name, Type: []string{"nvme", "hdd", "hdd", "hdd"}[i], Path: d}
		if i < len(o.capacities) {
			c.Capacity = o.capacities[i]
		}
		cfgs = append(cfgs, c)
		dirs = append(dirs, d)
	}
	log := zerolog.New(errorLog{t})
	st, err := tiering.Open(cfgs, tiering.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := Mount(NewRoot(st, log), mnt, Options{})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	if err := srv.WaitMount(); err != nil {
		t.Fatal(err)
	}
	m := &testMount{mnt: mnt, tiers: dirs, store: st, srv: srv}
	t.Cleanup(func() { m.unmount(t) })
	return m
}

func (m *testMount) unmount(t testing.TB) {
	if m.srv == nil {
		return
	}
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if err = m.srv.Unmount(); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond) // the kernel lets go of the last file a moment after close
	}
	if err != nil {
		t.Errorf("unmount %s: %v", m.mnt, err)
		_ = unix.Unmount(m.mnt, unix.MNT_DETACH)
	}
	m.srv.Wait()
	m.srv = nil
	m.store.Close()
}

func (m *testMount) path(rel string) string { return filepath.Join(m.mnt, rel) }

// tierOf names the tier whose backing holds rel, failing unless exactly one does.
func (m *testMount) tierOf(t testing.TB, rel string) int {
	t.Helper()
	found := -1
	for i, d := range m.tiers {
		if _, err := os.Lstat(filepath.Join(d, rel)); err == nil {
			if found >= 0 {
				t.Fatalf("%s on tiers %d and %d", rel, found, i)
			}
			found = i
		}
	}
	if found < 0 {
		t.Fatalf("%s on no tier", rel)
	}
	return found
}
