package mountutil

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// State describes what is found at a mountpoint.
type State int

const (
	// Unmounted means nothing is mounted at the path.
	Unmounted State = iota
	// Mounted means a live mount is there.
	Mounted
	// Stale means a mount is there but its server is gone: stat fails
	// with ENOTCONN ("transport endpoint is not connected") or
	// ECONNABORTED.
	Stale
)

func (s State) String() string {
	switch s {
	case Unmounted:
		return "unmounted"
	case Mounted:
		return "mounted"
	case Stale:
		return "stale"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// TierfsFSType is the fstype of a tierfs mount made by go-fuse with
// MountOptions.Name set to "tierfs".
const TierfsFSType = "fuse.tierfs"

// MountInfo is one line of /proc/self/mountinfo, reduced to what tierfs
// needs.
type MountInfo struct {
	Mountpoint string // absolute path, octal escapes decoded
	FSType     string // e.g. "fuse.tierfs", "ext4"
	Source     string // e.g. "tierfs", "/dev/sda1"
	// Dev is the filesystem's device, "major:minor"; for FUSE the minor
	// is the connection's number (/sys/fs/fuse/connections/N).
	Dev string

	id, parent int // mount IDs, to tell stacked mounts apart
}

// ID is the mount's ID in this namespace (mountinfo's first field).
func (m MountInfo) ID() int { return m.id }

// IsTierfs reports whether m looks like a tierfs mount: fstype
// "fuse.tierfs", or a plain "fuse" mount whose source is "tierfs".
func (m MountInfo) IsTierfs() bool {
	if m.FSType == TierfsFSType {
		return true
	}
	return (m.FSType == "fuse" || m.FSType == "fuseblk") && m.Source == "tierfs"
}

const mountinfoPath = "/proc/self/mountinfo"

// Mounts returns the mounts of the calling process's mount namespace in
// the order of /proc/self/mountinfo (later entries are mounted on top of
// earlier ones).
func Mounts() ([]MountInfo, error) {
	f, err := os.Open(mountinfoPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMountinfo(f)
}

// ParseMountinfo parses text in the format of /proc/<pid>/mountinfo
// (see proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Fields 5 (mountpoint), and the first two after the "-" separator
// (fstype, source) are returned, with octal escapes such as \040
// decoded. Empty lines are ignored; malformed lines are an error.
func ParseMountinfo(r io.Reader) ([]MountInfo, error) {
	var out []MountInfo
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		fields := strings.Fields(line)
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			return nil, fmt.Errorf("mountinfo line %d: malformed: %q", lineNo, line)
		}
		id, err1 := strconv.Atoi(fields[0])
		parent, err2 := strconv.Atoi(fields[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo line %d: malformed mount IDs: %q", lineNo, line)
		}
		mi := MountInfo{
			Mountpoint: unescapeOctal(fields[4]),
			FSType:     unescapeOctal(fields[sep+1]),
			Dev:        fields[2],
			id:         id,
			parent:     parent,
		}
		if sep+2 < len(fields) {
			mi.Source = unescapeOctal(fields[sep+2])
		}
		out = append(out, mi)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// unescapeOctal decodes the \ooo escapes the kernel uses in mountinfo
// for space, tab, newline and backslash (and possibly other bytes).
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			v := (int(s[i+1]-'0') << 6) | (int(s[i+2]-'0') << 3) | int(s[i+3]-'0')
			if v <= 0xff {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// canonical returns the cleaned absolute form of path, with symlinks
// resolved when that is possible (it is not on a stale mount or for a
// path that does not exist).
func canonical(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if resolved, err := filepath.EvalSymlinks(abs); err == nil {
		return resolved, nil
	}
	return abs, nil
}

// lookup returns the topmost mount whose mountpoint is exactly one of
// paths.
func lookup(mounts []MountInfo, paths ...string) (MountInfo, bool) {
	var found MountInfo
	ok := false
	for i, m := range mounts {
		for _, p := range paths {
			if m.Mountpoint == p && (!ok || !buried(mounts, i)) {
				found, ok = m, true
			}
		}
	}
	return found, ok
}

// isStaleErr reports whether err says the FUSE server behind a mount is
// gone.
func isStaleErr(err error) bool {
	return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED)
}

// Inspect reports the state of mountpoint and, when something is
// mounted there, its fstype. A path that does not exist is Unmounted
// with no error. A path below a stale mount (stat fails with ENOTCONN)
// is reported as Stale with the fstype of the dead mount.
func Inspect(mountpoint string) (State, string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return Unmounted, "", err
	}
	var st unix.Stat_t
	statErr := unix.Stat(abs, &st)
	if statErr == nil {
		// stat may be answered from the kernel's attribute cache for a
		// second after the daemon died; statfs always asks the daemon.
		var sfs unix.Statfs_t
		if err := unix.Statfs(abs, &sfs); isStaleErr(err) {
			statErr = err
		}
	}
	mounts, err := Mounts()
	if err != nil {
		return Unmounted, "", fmt.Errorf("reading %s: %w", mountinfoPath, err)
	}
	if statErr != nil {
		if isStaleErr(statErr) {
			if m, ok := lookup(mounts, abs); ok {
				return Stale, m.FSType, nil
			}
			// Below a stale mount: report the innermost one.
			if m, ok := innermost(mounts, abs); ok {
				return Stale, m.FSType, nil
			}
			return Stale, "", nil
		}
		if errors.Is(statErr, unix.ENOENT) {
			return Unmounted, "", nil
		}
		return Unmounted, "", &os.PathError{Op: "stat", Path: abs, Err: statErr}
	}
	cands := []string{abs}
	if resolved, err := filepath.EvalSymlinks(abs); err == nil && resolved != abs {
		cands = append(cands, resolved)
	}
	if m, ok := lookup(mounts, cands...); ok {
		return Mounted, m.FSType, nil
	}
	return Unmounted, "", nil
}

// Prepare checks that mountpoint can be mounted on: it must exist, be a
// directory and have nothing (live or stale) mounted on it. The errors
// say what to do about it.
func Prepare(mountpoint string) error {
	return prepare(mountpoint, false)
}

// PrepareForce is Prepare, except that a stale mount left by a tierfs
// that died is lazily unmounted (MNT_DETACH) instead of being an error.
// A live mount is still an error.
func PrepareForce(mountpoint string) error {
	return prepare(mountpoint, true)
}

func prepare(mountpoint string, force bool) error {
	state, fstype, err := Inspect(mountpoint)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	switch state {
	case Stale:
		if !force {
			return staleError(mountpoint)
		}
		abs, err := filepath.Abs(mountpoint)
		if err != nil {
			return err
		}
		if err := unix.Unmount(abs, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("%w; lazy unmount failed: %v", staleError(mountpoint), err)
		}
		if state, _, err := Inspect(mountpoint); err != nil {
			return err
		} else if state != Unmounted {
			return fmt.Errorf("mountpoint %s is still %s after a lazy unmount", mountpoint, state)
		}
	case Mounted:
		if fstype == "" {
			fstype = "unknown"
		}
		return fmt.Errorf("mountpoint %s is already mounted (fstype %s); unmount it first (`fusermount3 -u %s` or `umount %s`)",
			mountpoint, fstype, mountpoint, mountpoint)
	}
	fi, err := os.Stat(mountpoint)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("mountpoint %s does not exist; create it first (mkdir -p %s)", mountpoint, mountpoint)
		}
		return fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory", mountpoint)
	}
	return nil
}

func staleError(mountpoint string) error {
	return fmt.Errorf("mountpoint %s is stale (transport endpoint is not connected): a previous tierfs died; run `fusermount3 -u %s` or `umount -l %s`",
		mountpoint, mountpoint, mountpoint)
}

// Unmount unmounts whatever is mounted at mountpoint (one layer). It
// tries umount(2), then `fusermount3 -u` if that is installed, and a
// lazy umount (MNT_DETACH) as the last resort. Nothing mounted is not an
// error.
func Unmount(mountpoint string) error {
	state, _, err := Inspect(mountpoint)
	if err != nil {
		return err
	}
	if state == Unmounted {
		return nil
	}
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	var errs []error
	err = unix.Unmount(abs, 0)
	if err == nil || errors.Is(err, unix.EINVAL) {
		// EINVAL: not a mountpoint (any more).
		return nil
	}
	errs = append(errs, fmt.Errorf("umount: %w", err))
	if fm, lerr := exec.LookPath("fusermount3"); lerr == nil {
		out, err := exec.Command(fm, "-u", abs).CombinedOutput()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("fusermount3 -u: %v: %s", err, strings.TrimSpace(string(out))))
	}
	err = unix.Unmount(abs, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) {
		return nil
	}
	errs = append(errs, fmt.Errorf("umount -l: %w", err))
	return fmt.Errorf("unmounting %s: %w", mountpoint, errors.Join(errs...))
}

// innermost returns the mount with the longest mountpoint that contains
// abs, the topmost one where several are stacked on one path. (A mount
// hidden by one over a parent directory is not detected.)
func innermost(mounts []MountInfo, abs string) (MountInfo, bool) {
	var best MountInfo
	ok := false
	for i, m := range mounts {
		if !contains(m.Mountpoint, abs) || buried(mounts, i) {
			continue
		}
		if !ok || len(m.Mountpoint) > len(best.Mountpoint) {
			best, ok = m, true
		}
	}
	return best, ok
}

// buried reports whether another mount is stacked on mounts[i], that
// is, mounted on the same mountpoint with mounts[i] as its parent.
// (The order of mountinfo lines is not the mount order, so the IDs are
// what tells which of two mounts on one path is on top.)
func buried(mounts []MountInfo, i int) bool {
	for j, m := range mounts {
		if j != i && m.parent == mounts[i].id && m.Mountpoint == mounts[i].Mountpoint {
			return true
		}
	}
	return false
}

// contains reports whether path is mp or below it.
func contains(mp, path string) bool {
	if mp == "/" {
		return strings.HasPrefix(path, "/")
	}
	return path == mp || strings.HasPrefix(path, mp+"/")
}

// FindMount returns the innermost mount containing path (which need not
// exist). Symlinks are resolved when possible.
func FindMount(path string) (MountInfo, error) {
	abs, err := canonical(path)
	if err != nil {
		return MountInfo{}, err
	}
	mounts, err := Mounts()
	if err != nil {
		return MountInfo{}, fmt.Errorf("reading %s: %w", mountinfoPath, err)
	}
	if m, ok := innermost(mounts, abs); ok {
		return m, nil
	}
	return MountInfo{}, fmt.Errorf("no mount contains %s", abs)
}

// FindTierfsMount returns the innermost tierfs mount (see
// MountInfo.IsTierfs) containing path.
func FindTierfsMount(path string) (MountInfo, error) {
	abs, err := canonical(path)
	if err != nil {
		return MountInfo{}, err
	}
	mounts, err := Mounts()
	if err != nil {
		return MountInfo{}, fmt.Errorf("reading %s: %w", mountinfoPath, err)
	}
	var best MountInfo
	ok := false
	for i, m := range mounts {
		if !m.IsTierfs() || !contains(m.Mountpoint, abs) || buried(mounts, i) {
			continue
		}
		if !ok || len(m.Mountpoint) > len(best.Mountpoint) {
			best, ok = m, true
		}
	}
	if ok {
		return best, nil
	}
	return MountInfo{}, fmt.Errorf("%s is not inside a tierfs mount", abs)
}
