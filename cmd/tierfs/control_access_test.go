package main

// Who may do what over a widened control socket: real users, a real
// mount, the real client.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/testenv"
)

// newSharedEnv is a tierfs setup that other users can reach (the test's
// temporary directories are root's, 0700), with mountConf added.
func newSharedEnv(t *testing.T, mountConf string) *env {
	t.Helper()
	e := newEnv(t)
	for _, d := range []string{filepath.Dir(e.base), e.base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.config, string(conf)+"\n"+mountConf)
	return e
}

var (
	mkdirMode     = testenv.MkdirMode
	writeFileMode = testenv.WriteFileMode
)

// lsPaths is the set of files `ls --json` printed.
func lsPaths(t *testing.T, out string) map[string]lsEntry {
	t.Helper()
	var ents []lsEntry
	if err := json.Unmarshal([]byte(out), &ents); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}
	m := map[string]lsEntry{}
	for _, e := range ents {
		m[e.Path] = e
	}
	return m
}

// wantDenied checks that a client command failed with the daemon's
// permission message.
func wantDenied(t *testing.T, what, stderr string, code int, msg string) {
	t.Helper()
	if code != 1 || !strings.Contains(stderr, "permission denied") || !strings.Contains(stderr, msg) {
		t.Errorf("%s: exit %d, stderr %q; want 1 and permission denied, %q", what, code, stderr, msg)
	}
}

// With control_mode = "0666" any user can connect, and sees and acts on
// only what it could through the mount: not the names in root's 0700
// directory, not root's files to migrate, pin or unpin, no reload.
func TestControlSocketOtherUser(t *testing.T) {
	requireUsers(t)
	t.Parallel()
	u := newTestUser(t)
	e := newSharedEnv(t, "[mount]\nallow_other = true\ncontrol_mode = \"0666\"\n")
	d := startDaemon(t, e)
	if !strings.Contains(d.stderr.String(), "world-writable") {
		t.Errorf("no warning about the world-writable socket in the log:\n%s", d.stderr.String())
	}

	mnt := e.mnt
	at := func(rel string) string { return filepath.Join(mnt, rel) }
	mkdirMode(t, at("secret"), 0o700)
	mkdirMode(t, at("secret/sub"), 0o755)
	writeFileMode(t, at("secret/data.log"), "root's secret", 0o600)
	writeFileMode(t, at("secret/sub/deep.log"), "deeper", 0o644)
	mkdirMode(t, at("shared"), 0o755)
	writeFileMode(t, at("shared/root.log"), "root's, readable", 0o644)
	writeFileMode(t, at("shared/other.log"), "root's, readable, not pinned", 0o644)
	writeFileMode(t, at("shared/mine.log"), "the user's", 0o644)
	if err := os.Chown(at("shared/mine.log"), int(u.uid), int(u.gid)); err != nil {
		t.Fatal(err)
	}
	writeFileMode(t, at("top.log"), "top", 0o644)
	mustTierfs(t, "", "pin", "--tier", "fast", at("secret/data.log"), at("shared/root.log"))

	// status: the daemon's figures, and only the paths the user could
	// see.
	out, errOut, code := u.tierfs(t, "status", "--json", mnt)
	if code != 0 {
		t.Fatalf("status as %s: exit %d, %s", u.name, code, errOut)
	}
	var st control.StatusResponse
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Tiers) != 2 || st.Tiers[0].Files == 0 || st.Policy == nil {
		t.Errorf("status as the user lacks the daemon's figures: %s", out)
	}
	if strings.Contains(out, "secret") || strings.Contains(out, e.fast) || st.Policy.Pins["shared/root.log"] != "fast" {
		t.Errorf("status as the user: want the pin of shared/root.log, not secret's nor the tiers' paths:\n%s", out)
	}
	if root := mustTierfs(t, "", "status", "--json", mnt); !strings.Contains(root, "secret/data.log") {
		t.Errorf("status as root lacks the pin of secret/data.log:\n%s", root)
	}

	// ls: not into secret/, whichever way it is asked.
	out, errOut, code = u.tierfs(t, "ls", "-r", "--json", mnt)
	if code != 0 {
		t.Fatalf("ls -r as the user: exit %d, %s", code, errOut)
	}
	got := lsPaths(t, out)
	for _, p := range []string{"top.log", "shared/root.log", "shared/other.log", "shared/mine.log"} {
		if _, ok := got[p]; !ok {
			t.Errorf("ls -r as the user lacks %s: %s", p, out)
		}
	}
	if strings.Contains(out, "secret/") {
		t.Errorf("ls -r as the user lists names inside root's 0700 directory:\n%s", out)
	}
	if rootLs := lsPaths(t, mustTierfs(t, "", "ls", "-r", "--json", mnt)); len(rootLs) != 6 {
		t.Errorf("ls -r as root: %v, want all 6 files", rootLs)
	}
	out, _, _ = u.tierfs(t, "ls", "-r", mnt)
	if !tableHasRow(out, "fast", "-", "secret/") || strings.Contains(out, "data.log") || strings.Contains(out, "deep.log") {
		t.Errorf("ls -r table as the user: want secret/ itself (the root is readable), nothing inside:\n%s", out)
	}
	_, errOut, code = u.tierfs(t, "ls", at("secret"))
	wantDenied(t, "ls secret", errOut, code, "may not list secret")
	_, errOut, code = u.tierfs(t, "ls", "-r", at("secret/sub"))
	wantDenied(t, "ls -r secret/sub", errOut, code, "may not search secret")
	_, errOut, code = u.tierfs(t, "ls", at("secret/data.log"))
	wantDenied(t, "ls secret/data.log", errOut, code, "may not search secret")
	// Whether a name exists in there is not told either.
	_, errOut2, _ := u.tierfs(t, "ls", at("secret/nothing.log"))
	if strings.ReplaceAll(errOut2, "nothing.log", "data.log") != errOut {
		t.Errorf("ls of a missing and an existing name in secret/ differ:\n%s\n%s", errOut, errOut2)
	}

	// What the commands do not ask, asked directly as the user: root's
	// jobs (root's pins queued them) and moves outside the engine.
	uc := u.clientAs(t, mnt)
	rc, err := control.NewClient(mnt)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ae *control.APIError
	if _, err := rc.Job(ctx, 1); err != nil {
		t.Errorf("GET /v1/job?id=1 as root: %v", err)
	}
	if _, err := uc.Job(ctx, 1); !errors.As(err, &ae) || ae.Code != http.StatusForbidden || !strings.Contains(ae.Msg, "did not queue it") {
		t.Errorf("GET /v1/job of root's pin, as the user: %v; want 403", err)
	}

	// migrate, pin, unpin: not root's files. (--wait: had a move been
	// queued, it is over when the command returns.)
	_, errOut, code = u.tierfs(t, "migrate", "--wait", "--to", "slow", at("secret/sub/deep.log"))
	wantDenied(t, "migrate secret/sub/deep.log", errOut, code, "may not search secret")
	_, errOut, code = u.tierfs(t, "migrate", "--wait", "--to", "slow", at("shared/other.log"))
	wantDenied(t, "migrate shared/other.log", errOut, code, "may not write shared/other.log")
	_, errOut, code = u.tierfs(t, "pin", "--wait", "--tier", "slow", at("shared/root.log"))
	wantDenied(t, "pin shared/root.log", errOut, code, "may not write shared/root.log")
	_, errOut, code = u.tierfs(t, "pin", "--wait", "--tier", "slow", at("secret/data.log"))
	wantDenied(t, "pin secret/data.log", errOut, code, "may not search secret")
	_, errOut, code = u.tierfs(t, "unpin", at("shared/root.log"))
	wantDenied(t, "unpin shared/root.log", errOut, code, "may not write shared/root.log")
	_, errOut, code = u.tierfs(t, "unpin", at("secret/data.log"))
	wantDenied(t, "unpin secret/data.log", errOut, code, "may not search secret")
	for _, m := range lsJSON(t, "", "-r", mnt) {
		if m.Tier != "fast" {
			t.Errorf("%s moved to %s on the user's request", m.Path, m.Tier)
		}
	}
	st, _ = statusJSON(t, mnt)
	if p := st.Policy.Pins; len(p) != 2 || p["secret/data.log"] != "fast" || p["shared/root.log"] != "fast" {
		t.Errorf("root's pins after the user's requests: %v", p)
	}

	// reload: root's.
	_, errOut, code = u.tierfs(t, "reload", mnt)
	wantDenied(t, "reload", errOut, code, "only root may reload")
	if strings.Contains(d.stderr.String(), "configuration reloaded") {
		t.Errorf("the user's reload request reloaded:\n%s", d.stderr.String())
	}
	mustTierfs(t, "", "reload", mnt)

	// The user's own file is the user's to move and pin.
	if out, errOut, code := u.tierfs(t, "migrate", "--wait", "--to", "slow", at("shared/mine.log")); code != 0 || !strings.Contains(out, "moved to slow") {
		t.Errorf("migrate --wait of the user's file: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := u.tierfs(t, "pin", "--tier", "fast", "--wait", at("shared/mine.log")); code != 0 || !strings.Contains(out, "pinned to fast") {
		t.Errorf("pin of the user's file: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := u.tierfs(t, "unpin", at("shared/mine.log")); code != 0 {
		t.Errorf("unpin of the user's file: exit %d\n%s%s", code, out, errOut)
	}
	if got := lsJSON(t, "", at("shared/mine.log")); got["shared/mine.log"].Tier != "fast" {
		t.Errorf("the user's file after migrate and pin: %+v, want on fast", got)
	}
}

// control_group's members may do everything, as root may; others cannot
// connect to a 0660 socket, and are told why.
func TestControlSocketGroupMember(t *testing.T) {
	requireUsers(t)
	t.Parallel()
	g := newTestGroup(t)
	member, outsider := newTestUser(t, g), newTestUser(t)
	e := newSharedEnv(t, fmt.Sprintf("[mount]\nallow_other = true\ncontrol_mode = \"0660\"\ncontrol_group = %q\n", g.name))
	d := startDaemon(t, e)
	at := func(rel string) string { return filepath.Join(e.mnt, rel) }
	mkdirMode(t, at("secret"), 0o700)
	writeFileMode(t, at("secret/data.log"), "root's secret", 0o600)

	out, errOut, code := member.tierfs(t, "ls", "-r", "--json", e.mnt)
	if _, ok := lsPaths(t, out)["secret/data.log"]; code != 0 || !ok {
		t.Errorf("ls -r as a member of control_group: exit %d, %s%s; want secret/data.log", code, out, errOut)
	}
	if out, errOut, code := member.tierfs(t, "migrate", "--wait", "--to", "slow", at("secret/data.log")); code != 0 || !strings.Contains(out, "moved to slow") {
		t.Errorf("migrate as a member: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := member.tierfs(t, "pin", "--tier", "fast", "--wait", at("secret/data.log")); code != 0 {
		t.Errorf("pin as a member: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := member.tierfs(t, "unpin", at("secret/data.log")); code != 0 {
		t.Errorf("unpin as a member: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := member.tierfs(t, "reload", e.mnt); code != 0 || !strings.Contains(out, "configuration reloaded") {
		t.Errorf("reload as a member: exit %d\n%s%s", code, out, errOut)
	}
	// The daemon logs the reload as it answers: wait for the line.
	poll(t, "the daemon's log of the member's reload", func() (bool, error) {
		return strings.Contains(d.stderr.String(), "configuration reloaded"), nil
	})

	_, errOut, code = outsider.tierfs(t, "status", e.mnt)
	if code != 1 || !strings.Contains(errOut, "permission denied on the control socket") || !strings.Contains(errOut, "control_mode") {
		t.Errorf("status by a user outside control_group: exit %d, %q; want 1 and why", code, errOut)
	}

	// A group that does not exist fails the mount, naming the key.
	e2 := newEnv(t)
	conf, _ := os.ReadFile(e2.config)
	writeFile(t, e2.config, string(conf)+fmt.Sprintf("\n[mount]\ncontrol_group = %q\n", "tierfs-t-no-such-group"))
	if _, errOut, code := tierfs(t, "", "mount", "--config", e2.config, e2.mnt); code != 1 || !strings.Contains(errOut, "mount.control_group") || !strings.Contains(errOut, "unknown group") {
		t.Errorf("mount with an unknown control_group: exit %d, %q", code, errOut)
	}
	if mounted(e2.mnt) {
		t.Errorf("mounted with an unknown control_group")
	}
}
