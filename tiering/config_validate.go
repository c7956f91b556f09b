package tiering

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/units"
)

// cfgTierNameRE is what a tier name may be made of: it appears in paths,
// metrics and the control protocol.
var cfgTierNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// cfgTierKey names a key of the i-th [[tier]] table (0-based, in file order).
func cfgTierKey(i int, key string) string { return fmt.Sprintf("tier[%d].%s", i, key) }

// cfgValidTierType reports whether t is one of the known tier types.
func cfgValidTierType(t string) bool {
	switch t {
	case TypePMem, TypeNVMe, TypeSSD, TypeHDD:
		return true
	}
	return false
}

// cfgThresholdOK reports whether v is a usable migrate_threshold:
// a fraction in (0, 1], or exactly -1 to disable moves.
func cfgThresholdOK(v float64) bool {
	return (v > 0 && v <= 1) || v == -1
}

// Validate checks one tier on its own and reports every problem (joined
// with errors.Join); i is its index in the [[tier]] array and is used to
// name keys in errors. It does not look at other tiers.
func (t TierConfig) Validate(i int) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, units.Errorf(cfgTierKey(i, key), format, args...))
	}
	switch {
	case t.Name == "":
		bad("name", "is required")
	case !cfgTierNameRE.MatchString(t.Name):
		bad("name", "invalid name %q: use only letters, digits, '_' and '-'", t.Name)
	}
	switch {
	case t.Type == "":
		bad("type", "is required (pmem, nvme, ssd or hdd)")
	case !cfgValidTierType(t.Type):
		bad("type", "unknown type %q (want pmem, nvme, ssd or hdd)", t.Type)
	}
	pathErr := cfgCheckTierDir(t.Path)
	if pathErr != nil {
		bad("path", "%s", pathErr)
	}
	switch {
	case t.Capacity < 0:
		bad("capacity", "must not be negative")
	case t.Capacity > 0 && t.Capacity < MinCapacity:
		bad("capacity", "must be 0 (the whole filesystem) or at least %s, the room a tier needs to take a new file; got %s",
			units.ByteSize(MinCapacity), t.Capacity)
	case t.Capacity > 0 && pathErr == nil:
		if size, err := cfgFilesystemSize(t.Path); err == nil && int64(t.Capacity) > size {
			bad("capacity", "%s is more than the filesystem under %s holds (%s): the tier would fill up before "+
				"tierfs counts it full, and its threshold might never be reached; write at most %s, or leave capacity out for the whole filesystem",
				t.Capacity, t.Path, units.Human(size), roundDown(size))
		}
	}
	if t.MigrateThreshold != nil && !cfgThresholdOK(*t.MigrateThreshold) {
		bad("migrate_threshold", "must be in (0, 1], or -1 to disable moves off this tier; got %v", *t.MigrateThreshold)
	}
	return errors.Join(errs...)
}

// MinCapacity is the smallest capacity a tier may be given: a tier takes
// a new file only with 1 MiB free (Store placement), so a smaller one
// would never be used.
const MinCapacity = 1 << 20

// roundDown is n rounded down to whole GiB, or MiB under 1 GiB: a
// capacity to suggest.
func roundDown(n int64) units.ByteSize {
	u := int64(1 << 30)
	if n < u {
		u = 1 << 20
	}
	return units.ByteSize(n / u * u)
}

// cfgFilesystemSize is the size in bytes of the filesystem holding p.
func cfgFilesystemSize(p string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return 0, err
	}
	return int64(st.Blocks) * st.Bsize, nil
}

// cfgCheckTierDir checks that p is an absolute path to an existing
// directory that tierfs can use: writable, on a filesystem with trusted
// xattrs, in parents only root can change, and root's alone once tierfs has
// laid it out (a new or old-layout directory is made so at its first
// mount). It changes nothing: `tierfs check` runs it on live tiers too.
func cfgCheckTierDir(p string) error {
	if p == "" {
		return errors.New("is required")
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("must be an absolute path, got %q", p)
	}
	st, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist", p)
	case err != nil:
		return fmt.Errorf("%s: %v", p, errors.Unwrap(err))
	case !st.IsDir():
		return fmt.Errorf("%s is not a directory", p)
	}
	if err := unix.Access(p, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("%s is not writable: %v", p, err)
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: %v", p, err)
	}
	defer unix.Close(fd)
	// access(2) says yes to root everywhere but on read-only mounts; ask
	// the mount itself.
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return fmt.Errorf("%s: %v", p, err)
	}
	if sfs.Flags&unix.ST_RDONLY != 0 {
		return fmt.Errorf("%s is not writable: on a read-only filesystem", p)
	}
	if _, err := unix.Fgetxattr(fd, trustedPrefix+"probe", nil); err != nil && !errors.Is(err, unix.ENODATA) {
		return noXattrs(p, fd, err)
	}
	if _, err := checkAncestors(p); err != nil {
		return err
	}
	m, err := unix.Openat(fd, metaDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s/%s: %v", p, metaDir, err)
	}
	defer unix.Close(m)
	f, err := readFormat(m)
	if err != nil {
		return fmt.Errorf("%s: %v", p, err)
	}
	if f >= formatData {
		return checkOwned(p, fd)
	}
	return nil
}

// cfgSameDir reports whether two paths are one directory (a bind mount or
// a second name of it): their device and inode numbers match.
func cfgSameDir(a, b string) bool {
	var sa, sb unix.Stat_t
	if unix.Stat(a, &sa) != nil || unix.Stat(b, &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// cfgResolvePath cleans p and resolves symlinks where it can.
func cfgResolvePath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	return filepath.Clean(p)
}

// cfgPathWithin reports whether child is parent or lies below it. Both must be
// clean and absolute.
func cfgPathWithin(child, parent string) bool {
	if child == parent || parent == "/" {
		return true
	}
	return strings.HasPrefix(child, parent+string(filepath.Separator))
}

// ValidateTiers checks the [[tier]] tables: at least one; each with a unique
// valid name, a known type, an absolute path to an existing writable
// directory, a capacity of 0 or from MinCapacity up to its filesystem's
// size and a migrate_threshold that is unset, in (0, 1] or -1; and no
// tier's directory equal to or inside another's (after resolving
// symlinks). Every problem is reported, each a *units.KeyError naming the
// key, e.g. "tier[1].path", with 0-based indexes in file order, joined
// with errors.Join.
func ValidateTiers(tiers []TierConfig) error {
	if len(tiers) == 0 {
		return units.Errorf("tier", "at least one [[tier]] is required")
	}
	var errs []error
	names := make(map[string]int, len(tiers))
	for i, t := range tiers {
		if err := t.Validate(i); err != nil {
			errs = append(errs, err)
		}
		if t.Name == "" {
			continue
		}
		if j, dup := names[t.Name]; dup {
			errs = append(errs, units.Errorf(cfgTierKey(i, "name"), "duplicate tier name %q (also tier[%d])", t.Name, j))
			continue
		}
		names[t.Name] = i
	}
	resolved := make([]string, len(tiers))
	for i, t := range tiers {
		if !filepath.IsAbs(t.Path) {
			continue // reported by Validate
		}
		resolved[i] = cfgResolvePath(t.Path)
		for j := 0; j < i; j++ {
			if resolved[j] == "" {
				continue
			}
			var err error
			switch {
			case resolved[i] == resolved[j] || cfgSameDir(resolved[i], resolved[j]):
				err = units.Errorf(cfgTierKey(i, "path"), "%s is the same directory as tier[%d] %q (%s)",
					t.Path, j, tiers[j].Name, tiers[j].Path)
			case cfgPathWithin(resolved[i], resolved[j]):
				err = units.Errorf(cfgTierKey(i, "path"), "%s is inside tier[%d] %q (%s)",
					t.Path, j, tiers[j].Name, tiers[j].Path)
			case cfgPathWithin(resolved[j], resolved[i]):
				err = units.Errorf(cfgTierKey(i, "path"), "%s contains tier[%d] %q (%s)",
					t.Path, j, tiers[j].Name, tiers[j].Path)
			}
			if err != nil {
				errs = append(errs, err)
				break // one overlap per tier says enough
			}
		}
	}
	return errors.Join(errs...)
}

// CheckMountpoint refuses a tier directory that is the mountpoint or lies
// inside it (tierfs would recurse into itself), and a mountpoint inside a
// tier directory. Paths are compared cleaned and, where they can be,
// with symlinks resolved. Errors are *units.KeyError naming "tier[i].path".
func CheckMountpoint(tiers []TierConfig, mountpoint string) error {
	if mountpoint == "" {
		return units.Errorf("mountpoint", "is required")
	}
	mp := cfgResolvePath(mountpoint)
	for i, t := range tiers {
		if t.Path == "" {
			continue
		}
		tp := cfgResolvePath(t.Path)
		switch {
		case tp == mp:
			return units.Errorf(cfgTierKey(i, "path"), "%s is the mountpoint", t.Path)
		case cfgPathWithin(tp, mp):
			return units.Errorf(cfgTierKey(i, "path"), "%s is inside the mountpoint %s", t.Path, mountpoint)
		case cfgPathWithin(mp, tp):
			return units.Errorf(cfgTierKey(i, "path"), "the mountpoint %s is inside this tier's directory %s", mountpoint, t.Path)
		}
	}
	return nil
}
