package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tierfs/tierfs/internal/testenv"
	"github.com/tierfs/tierfs/internal/version"
)

// repoRoot is the checkout the tests run in (cmd/tierfs is two levels
// down).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// git runs git in dir and returns its trimmed output.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).Output()
	if err != nil {
		t.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out))
}

// versionField is the value after "NAME:" in `tierfs version`'s output.
func versionField(t *testing.T, out, name string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == name {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %q line in:\n%s", name, out)
	return ""
}

// `make build` stamps the commit and whether the tree had changes even
// where GOFLAGS says -buildvcs=false (issue 18, item 5), and `tierfs
// version` prints them with the Go and go-fuse versions.
func TestMakeBuildStampsVersion(t *testing.T) {
	root := repoRoot(t)
	_, errMake := exec.LookPath("make")
	_, errGit := exec.LookPath("git")
	testenv.Require(t, errMake == nil && errGit == nil, "make and git are needed to build the Makefile way")
	testenv.Require(t, exec.Command("git", "-C", root, "rev-parse", "HEAD").Run() == nil, "a git checkout is needed")
	t.Parallel()

	bin := filepath.Join(t.TempDir(), "tierfs")
	cmd := exec.Command("make", "--no-print-directory", "-C", root, "build", "BIN="+bin)
	cmd.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("tierfs version: %v\n%s", err, out)
	}
	text := string(out)
	if got, want := versionField(t, text, "revision"), git(t, root, "rev-parse", "HEAD"); got != want {
		t.Errorf("revision %q, want %q (git rev-parse HEAD)\n%s", got, want, text)
	}
	wantMod := "no"
	if git(t, root, "status", "--porcelain", "--untracked-files=no") != "" {
		wantMod = "yes"
	}
	if got := versionField(t, text, "modified"); got != wantMod {
		t.Errorf("modified %q, want %q (git status)\n%s", got, wantMod, text)
	}
	if first := strings.SplitN(text, "\n", 2)[0]; first != "tierfs "+git(t, root, "describe", "--tags", "--always", "--dirty") {
		t.Errorf("first line %q, want tierfs and git describe's version", first)
	}
	checkToolVersions(t, text)
}

// checkToolVersions checks the go and go-fuse lines against this build
// and go.mod.
func checkToolVersions(t *testing.T, text string) {
	t.Helper()
	if got, want := versionField(t, text, "go"), runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH; got != want {
		t.Errorf("go %q, want %q", got, want)
	}
	gomod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var want string
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == version.GoFuseModule {
			want = f[1]
		}
	}
	if want == "" {
		t.Fatalf("go.mod names no %s", version.GoFuseModule)
	}
	if got := versionField(t, text, "go-fuse"); got != want {
		t.Errorf("go-fuse %q, want %q (go.mod)", got, want)
	}
}

// A binary built without the stamp (go build, -buildvcs=false) says the
// revision is unknown rather than inventing one, and still names Go and
// go-fuse.
func TestVersionWithoutStamp(t *testing.T) {
	cmd := exec.Command(tierfsBin, "version")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tierfs version: %v\n%s", err, out)
	}
	text := string(out)
	checkToolVersions(t, text)
	// What Go recorded in the binary, if anything.
	info, err := exec.Command("go", "version", "-m", tierfsBin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	want := "unknown"
	for _, line := range strings.Split(string(info), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.revision=") {
			want = strings.TrimPrefix(f[1], "vcs.revision=")
		}
	}
	if rev := versionField(t, text, "revision"); !strings.HasPrefix(rev, want) {
		t.Errorf("revision %q; the binary's build information says %q", rev, want)
	}
}
