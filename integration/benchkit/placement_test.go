package benchkit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/testenv"
)

// mergerfsOptionsBefore are the options the suite gave mergerfs until
// issue 19: mergerfs's default minfreespace (4G) skips a smaller fast
// branch.
const mergerfsOptionsBefore = "fsname=tierfs-bench-mergerfs,category.create=ff,cache.files=full," +
	"cache.writeback=false,cache.attr=1,cache.entry=1,cache.negative_entry=1,dropcacheonclose=false"

// TestPlacementMergerfs: mergerfs over a small tmpfs and a directory on
// the disk. With the old options a file written through it lands on the
// disk and the check fails; with MergerfsOptions it lands on the tmpfs and
// the check passes.
func TestPlacementMergerfs(t *testing.T) {
	testenv.FUSE(t)
	ensureTools(t)
	d := tempDir(t)
	var st unix.Statfs_t
	if err := unix.Statfs(d, &st); err != nil {
		t.Fatal(err)
	}
	testenv.Require(t, int64(st.Bavail)*st.Bsize > 5<<30,
		d+" has less than 5 GiB free: mergerfs's default minfreespace (4G) would skip the disk branch too")
	fast, slow := filepath.Join(d, "fast"), filepath.Join(d, "slow")
	unmountFast, err := MountTmpfs(fast, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unmountFast() })
	if err := os.MkdirAll(slow, 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, c := range []struct {
		name, options string
		wantOK        bool
	}{{"before", mergerfsOptionsBefore, false}, {"now", MergerfsOptions, true}} {
		mnt := filepath.Join(d, "mnt-"+c.name)
		unmount, err := MountMergerfsWith(mnt, c.options, fast, slow)
		if err != nil {
			t.Fatal(err)
		}
		p := Placement{Target: "mergerfs (" + c.name + ")", Fast: fast, Others: []string{slow}}
		rel := filepath.Join("dir-"+c.name, "f")
		if err := os.Mkdir(filepath.Join(mnt, filepath.Dir(rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mnt, rel), data, 0o644); err != nil {
			t.Fatal(err)
		}
		fileErr := p.CheckFile(rel, int64(len(data)))
		treeErr := p.CheckTree(int64(len(data)))
		if c.wantOK {
			if fileErr != nil || treeErr != nil {
				t.Errorf("%s: the file should be on the tmpfs: CheckFile: %v; CheckTree: %v", c.options, fileErr, treeErr)
			}
		} else {
			if fileErr == nil || !strings.Contains(fileErr.Error(), "off the fast medium") {
				t.Errorf("%s: CheckFile = %v, want an error saying the file is off the fast medium", c.options, fileErr)
			}
			if treeErr == nil || !strings.Contains(treeErr.Error(), "off the fast medium") {
				t.Errorf("%s: CheckTree = %v, want an error saying a file is off the fast medium", c.options, treeErr)
			}
			if _, err := os.Stat(filepath.Join(slow, rel)); err != nil {
				t.Errorf("%s: the file is not on the disk branch either: %v", c.options, err)
			}
		}
		if err := os.RemoveAll(filepath.Join(mnt, filepath.Dir(rel))); err != nil {
			t.Error(err)
		}
		if err := unmount(); err != nil {
			t.Fatalf("unmount: %v", err)
		}
	}
}

// TestPlacementChecks: the checks on plain directories standing in for
// branches.
func TestPlacementChecks(t *testing.T) {
	d := t.TempDir()
	fast, slow := filepath.Join(d, "fast"), filepath.Join(d, "slow")
	for _, p := range []string{filepath.Join(fast, "a"), filepath.Join(slow, "a")} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path string, n int) {
		t.Helper()
		if err := os.WriteFile(path, make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p := Placement{Target: "peer", Fast: fast, Others: []string{slow}}
	write(filepath.Join(fast, "a", "f"), 100)
	if err := p.CheckFile("a/f", 100); err != nil {
		t.Errorf("a file on the fast branch: %v", err)
	}
	if err := p.CheckFile("a/f", 99); err == nil {
		t.Errorf("a file of another size passed")
	}
	if err := p.CheckFile("a/missing", 1); err == nil {
		t.Errorf("a file on no branch passed")
	}
	if err := p.CheckFile("../x", 1); err == nil {
		t.Errorf("a path outside the mount passed")
	}
	if err := p.CheckTree(100); err != nil {
		t.Errorf("CheckTree(100) with 100 bytes on the fast branch: %v", err)
	}
	if err := p.CheckTree(101); err == nil {
		t.Errorf("CheckTree(101) with 100 bytes on the fast branch passed")
	}
	// An empty file on the slow branch is a directory entry, not data;
	// one with data fails both checks.
	write(filepath.Join(slow, "a", "empty"), 0)
	if err := p.CheckTree(1); err != nil {
		t.Errorf("an empty file on the slow branch: %v", err)
	}
	write(filepath.Join(slow, "a", "g"), 10)
	if err := p.CheckTree(1); err == nil || !strings.Contains(err.Error(), "1 file(s) off the fast medium") {
		t.Errorf("CheckTree with a file on the slow branch: %v", err)
	}
	write(filepath.Join(fast, "a", "g"), 10)
	if err := p.CheckFile("a/g", 10); err == nil {
		t.Errorf("a file on both branches passed")
	}
	if err := os.Symlink("f", filepath.Join(fast, "a", "l")); err != nil {
		t.Fatal(err)
	}
	if err := p.CheckFile("a/l", 100); err == nil {
		t.Errorf("a symlink passed as the file")
	}
}
