package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierfs/tierfs/internal/testenv"
)

var (
	mkdirMode     = testenv.MkdirMode
	writeFileMode = testenv.WriteFileMode
	poll          = testenv.Poll
)

const waitTimeout = testenv.WaitTimeout

// pathCheck judges by the permission bits of what a walk finds, as the
// kernel's path walk would, and follows no symlink. A directory stands in
// for the mount: the bits are evaluated, no process runs as the peers.
func TestPathCheck(t *testing.T) {
	root := t.TempDir()
	for _, d := range []struct {
		rel  string
		mode os.FileMode
	}{{"d", 0o750}, {"d/sub", 0o700}, {"open", 0o755}} {
		mkdirMode(t, filepath.Join(root, d.rel), d.mode)
	}
	for _, f := range []struct {
		rel  string
		mode os.FileMode
	}{{"d/f", 0o640}, {"d/w", 0o660}, {"d/sub/x", 0o644}, {"open/neg", 0o604}} {
		writeFileMode(t, filepath.Join(root, f.rel), "x", f.mode)
	}
	if err := os.Symlink("d", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	view, err := newMountView(root)
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	owner := peer{uid: uid, gid: gid}
	member := peer{uid: uid + 1, gid: gid + 1, groups: []uint32{gid}}
	other := peer{uid: uid + 1, gid: gid + 1}
	access := &controlAccess{group: -1, allowOther: true, mount: view}

	type check func(*pathCheck, string) error
	reach := func(c *pathCheck, rel string) error { _, err := c.reach(rel); return err }
	list := (*pathCheck).listable
	write := (*pathCheck).writable
	read := func(c *pathCheck, rel string) error {
		st, err := c.reach(rel)
		if err == nil && !c.p.may(&st, mayRead) {
			err = &forbiddenError{"no read"}
		}
		return err
	}
	for _, tc := range []struct {
		name  string
		p     peer
		check check
		rel   string
		want  string // "" for allowed, else a part of the error
	}{
		{"owner reaches deep", owner, reach, "d/sub/x", ""},
		{"owner lists 0700", owner, list, "d/sub", ""},
		{"owner writes 0640", owner, write, "d/f", ""},
		{"member reaches via group x", member, reach, "d/f", ""},
		{"member lists 0750", member, list, "d", ""},
		{"member may not list 0700", member, list, "d/sub", "may not list d/sub"},
		{"member may not search 0700", member, reach, "d/sub/x", "may not search d/sub"},
		{"member may not search for a missing name", member, reach, "d/sub/none", "may not search d/sub"},
		{"member may not write 0640", member, write, "d/f", "may not write d/f"},
		{"member writes 0660", member, write, "d/w", ""},
		{"other may not search 0750", other, reach, "d/f", "may not search d"},
		{"other lists the root", other, list, "", ""},
		{"group bits deny a member what others get", member, read, "open/neg", "no read"},
		{"others read 0604", other, read, "open/neg", ""},
		{"missing", owner, reach, "d/none", "no such file"},
		{"no symlink followed", owner, reach, "link/f", "not a directory"},
	} {
		err := tc.check(access.paths(tc.p), tc.rel)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", tc.name, err, tc.want)
		}
	}

	// A mount that does not let others in, and none at all.
	shut := &controlAccess{group: -1, mount: view}
	if _, err := shut.paths(owner).reach("d/f"); !strings.Contains(fmt.Sprint(err), "allow_other is off") {
		t.Errorf("without allow_other: %v", err)
	}
	none := &controlAccess{group: -1, allowOther: true}
	if _, err := none.paths(owner).reach("d/f"); !errors.Is(err, errNoMount) {
		t.Errorf("without a mount: %v", err)
	}
	// The directory replaced by another filesystem: not the mount.
	moved := &controlAccess{group: -1, allowOther: true, mount: &mountView{path: root, dev: view.dev + 1}}
	if _, err := moved.paths(owner).reach("d/f"); !errors.Is(err, errNoMount) {
		t.Errorf("another filesystem at the mountpoint: %v", err)
	}

	if a := (&controlAccess{group: int(gid) + 7}); !a.privileged(peer{uid: 0}) || a.privileged(other) ||
		!a.privileged(peer{uid: uid + 1, gid: gid + 1, groups: []uint32{gid + 7}}) || !a.privileged(peer{uid: uid + 1, gid: gid + 7}) {
		t.Errorf("privileged: root, and control_group's members by primary or supplementary group")
	}
}
