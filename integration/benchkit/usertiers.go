package benchkit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/mountutil"
)

// The variables that point `make bench` at an operator's own tiers
// (make bench BENCH_FAST_DIR=/mnt/nvme/x BENCH_SLOW_DIR=/mnt/hdd/y), and
// the one that puts its report elsewhere than the repository's docs/.
const (
	EnvFastDir = "TIERFS_BENCH_FAST_DIR"
	EnvSlowDir = "TIERFS_BENCH_SLOW_DIR"
	EnvOut     = "TIERFS_BENCH_OUT"
)

// UserTiers are two directories on an operator's own devices that the
// micro suite and the burst scenario run on instead of the suite's tmpfs
// and loop devices. Everything they write goes under them, in
// subdirectories made by Dirs; Clean empties them again.
type UserTiers struct {
	Fast, Slow string
}

// UserTiersFromEnv reads EnvFastDir and EnvSlowDir: nil when neither is
// set, an error when one is set alone or either is refused (CheckUserDir).
func UserTiersFromEnv() (*UserTiers, error) {
	fast, slow := os.Getenv(EnvFastDir), os.Getenv(EnvSlowDir)
	if fast == "" && slow == "" {
		return nil, nil
	}
	if fast == "" || slow == "" {
		return nil, fmt.Errorf("%s and %s go together (the fast and the slow tier): got %q and %q", EnvFastDir, EnvSlowDir, fast, slow)
	}
	return OpenUserTiers(fast, slow)
}

// OpenUserTiers checks both directories (CheckUserDir) and that they are
// two, neither inside the other.
func OpenUserTiers(fast, slow string) (*UserTiers, error) {
	var errs []error
	f, err := CheckUserDir(fast)
	errs = append(errs, err)
	s, err := CheckUserDir(slow)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if f == s || strings.HasPrefix(s+"/", f+"/") || strings.HasPrefix(f+"/", s+"/") {
		return nil, fmt.Errorf("the fast tier %s and the slow tier %s must be two directories, neither inside the other", f, s)
	}
	return &UserTiers{Fast: f, Slow: s}, nil
}

// CheckUserDir refuses a directory the benchmarks must not write in:
// anything but an existing, empty directory owned by root (not a
// symlink to one: the benchmarks then write only where the operator made
// room for them, and no one else can have put anything there). It
// returns the directory as an absolute, clean path.
func CheckUserDir(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("an empty directory name")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Lstat(abs, &st); err != nil {
		return "", fmt.Errorf("benchmark tier %s: %w", dir, err)
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return "", fmt.Errorf("benchmark tier %s: a symlink; give the directory itself", dir)
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return "", fmt.Errorf("benchmark tier %s: not a directory", dir)
	case st.Uid != 0:
		return "", fmt.Errorf("benchmark tier %s: owned by uid %d, not root (mkdir it as root: the benchmarks run as root and write only in a directory root made for them)", dir, st.Uid)
	}
	ents, err := os.ReadDir(abs)
	if err != nil {
		return "", fmt.Errorf("benchmark tier %s: %w", dir, err)
	}
	if len(ents) > 0 {
		return "", fmt.Errorf("benchmark tier %s: not empty (%d entries, %s first): the benchmarks write and remove files there and want an empty directory of their own", dir, len(ents), ents[0].Name())
	}
	return abs, nil
}

// Dirs makes the directory name under each tier for one use (a target,
// a broker): fast/name and slow/name, which must not exist yet.
func (u *UserTiers) Dirs(name string) (fast, slow string, err error) {
	if name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
		return "", "", fmt.Errorf("benchmark directory %q: want a plain name", name)
	}
	fast, slow = filepath.Join(u.Fast, name), filepath.Join(u.Slow, name)
	for _, d := range []string{fast, slow} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return "", "", err
		}
	}
	return fast, slow, nil
}

// Clean removes everything under the two directories, which stay,
// empty. It refuses, removing nothing, while anything is mounted on or
// under either (a removal would go into the mount).
func (u *UserTiers) Clean() error {
	ms, err := mountutil.Mounts()
	if err != nil {
		return err
	}
	for _, m := range ms {
		for _, d := range []string{u.Fast, u.Slow} {
			if m.Mountpoint == d || strings.HasPrefix(m.Mountpoint, d+"/") {
				return fmt.Errorf("not cleaning %s: %s is still mounted there", d, m.Mountpoint)
			}
		}
	}
	var errs []error
	for _, d := range []string{u.Fast, u.Slow} {
		ents, err := os.ReadDir(d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range ents {
			// RemoveAll does not follow symlinks: it removes them.
			if err := os.RemoveAll(filepath.Join(d, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// ReportRoot is where the report goes: EnvOut when set (its docs/bench
// and docs/BENCHMARKS.md), else the repository root.
func ReportRoot(repoRoot string) string {
	if o := os.Getenv(EnvOut); o != "" {
		return o
	}
	return repoRoot
}
