package benchkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tierfs/tierfs/internal/testenv"
)

// The harness takes only empty root-owned directories, two of them,
// and empties them again.
func TestUserTiers(t *testing.T) {
	testenv.Root(t, "checking directories owned by root")
	base := tempDir(t)
	mk := func(name string) string {
		t.Helper()
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fast, slow := mk("fast"), mk("slow")
	full := mk("full")
	if err := os.WriteFile(filepath.Join(full, "keep"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := mk("other")
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(fast, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ fast, slow, want string }{
		{full, slow, "not empty"},
		{fast, other, "owned by uid 65534, not root"},
		{link, slow, "a symlink"},
		{fast, file, "not a directory"},
		{fast, filepath.Join(base, "missing"), "no such file"},
		{fast, fast, "two directories"},
		{base, slow, "not empty"},
	} {
		if _, err := OpenUserTiers(c.fast, c.slow); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("OpenUserTiers(%s, %s): %v, want an error saying %q", c.fast, c.slow, err, c.want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(full, "keep")); err != nil || string(b) != "mine" {
		t.Errorf("a refused directory was touched: %q, %v", b, err)
	}

	t.Setenv(EnvFastDir, fast)
	t.Setenv(EnvSlowDir, "")
	if _, err := UserTiersFromEnv(); err == nil {
		t.Errorf("one directory of two accepted")
	}
	t.Setenv(EnvSlowDir, slow)
	u, err := UserTiersFromEnv()
	if err != nil || u == nil || u.Fast != fast || u.Slow != slow {
		t.Fatalf("UserTiersFromEnv: %+v, %v", u, err)
	}
	f, s, err := u.Dirs("tierfs")
	if err != nil || f != filepath.Join(fast, "tierfs") || s != filepath.Join(slow, "tierfs") {
		t.Fatalf("Dirs: %s %s %v", f, s, err)
	}
	if _, _, err := u.Dirs("tierfs"); err == nil {
		t.Errorf("Dirs made the same directory twice")
	}
	if _, _, err := u.Dirs("../x"); err == nil {
		t.Errorf("Dirs took a path")
	}
	// Something outside, reachable through a symlink inside: stays.
	outside := mk("outside")
	if err := os.WriteFile(filepath.Join(outside, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(f, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A mount under a tier: Clean refuses, removing nothing.
	mnt := filepath.Join(f, "mnt")
	unmount, err := MountTmpfs(mnt, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Clean(); err == nil || !strings.Contains(err.Error(), "still mounted") {
		t.Errorf("Clean with a mount under the fast tier: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s, "data")); err != nil {
		t.Errorf("Clean refused but removed: %v", err)
	}
	if err := unmount(); err != nil {
		t.Fatal(err)
	}
	if err := u.Clean(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{fast, slow} {
		if ents, err := os.ReadDir(d); err != nil || len(ents) != 0 {
			t.Errorf("%s after Clean: %v %v", d, ents, err)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "keep")); err != nil {
		t.Errorf("Clean followed a symlink out: %v", err)
	}
	t.Setenv(EnvOut, "")
	if ReportRoot("/repo") != "/repo" {
		t.Errorf("ReportRoot without %s", EnvOut)
	}
	t.Setenv(EnvOut, "/elsewhere")
	if ReportRoot("/repo") != "/elsewhere" {
		t.Errorf("ReportRoot with %s", EnvOut)
	}
}

// make bench on two directories of the operator's: the micro suite runs
// there, tiny (TIERFS_BENCH_SCALE, one run), and its report has a row for
// each workload with a figure for each target, in the directory asked
// for; the two directories are empty after, and the repository's own
// report untouched.
func TestUserTiersMicroSuite(t *testing.T) {
	testenv.FUSE(t)
	_, err := exec.LookPath("mergerfs")
	testenv.Require(t, err == nil, "mergerfs is missing (make deps installs it)")
	_, err = os.Stat(URingParam)
	testenv.Require(t, err == nil, "the micro suite's io_uring row needs a kernel with FUSE over io_uring")
	// The suite holds the io_uring switch's lock itself while it runs
	// (its io_uring row's daemon turns the switch on): taking it here too would
	// leave the suite waiting for this test.
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	base := tempDir(t)
	fast, slow, out := filepath.Join(base, "fast"), filepath.Join(base, "slow"), filepath.Join(base, "out")
	for _, d := range []string{fast, slow} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	repoReport := filepath.Join(root, BenchReport)
	before, _ := os.ReadFile(repoReport)
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	cmd := exec.Command(goCmd, "test", "-count=1", "-timeout", "10m", "-run", "^TestMicro$", "-v", "./integration/bench/")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "TIERFS_BENCH=1", "TIERFS_KAFKA_RACE=0", "TIERFS_BENCH_HOLD_MEMORY=0",
		"TIERFS_BENCH_SCALE=0.02", "TIERFS_BENCH_RUNS=1",
		EnvFastDir+"="+fast, EnvSlowDir+"="+slow, EnvOut+"="+out)
	start := time.Now()
	b, err := cmd.CombinedOutput()
	t.Logf("the micro suite on two directories took %v", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("go test TestMicro on %s and %s: %v\n%s", fast, slow, err, lastLines(string(b), 60))
	}
	md, err := os.ReadFile(filepath.Join(out, BenchDir, "micro.md"))
	if err != nil {
		t.Fatalf("the report of the run: %v\n%s", err, lastLines(string(b), 60))
	}
	report, err := os.ReadFile(filepath.Join(out, BenchReport))
	if err != nil || !strings.Contains(string(report), "BENCH_FAST_DIR="+fast) {
		t.Errorf("the assembled report %s does not name the tiers (%v)", filepath.Join(out, BenchReport), err)
	}
	text := string(md)
	for _, s := range []string{"on your tiers", fast, slow, "| workload | raw fast dir | tierfs (defaults) | mergerfs |",
		"smoke run", "io_uring", "direct I/O", "write-back cache"} {
		if !strings.Contains(text, s) {
			t.Errorf("micro.md lacks %q:\n%s", s, text)
		}
	}
	// A row per workload, a figure in each target's column: the rows of
	// the main table, from its header to the first line outside it (the
	// other modes' labels have commas too).
	rows := 0
	i := strings.Index(text, "| workload | raw fast dir |")
	if i < 0 {
		t.Fatalf("micro.md has no main table:\n%s", text)
	}
	main := text[i:]
	for _, line := range strings.Split(main, "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(line, "|")
		if len(cells) != 8 {
			t.Errorf("main table row %q: %d cells, want 8", line, len(cells))
			continue
		}
		rows++
		for i, target := range []string{"raw", "tierfs", "mergerfs"} {
			if c := strings.TrimSpace(cells[2+i]); c == "" || !strings.ContainsAny(c, "0123456789") {
				t.Errorf("row %q: no figure for %s", strings.TrimSpace(cells[1]), target)
			}
		}
	}
	if rows != 6 {
		t.Errorf("%d workload rows in the main table, want 6:\n%s", rows, text)
	}
	for _, d := range []string{fast, slow} {
		if ents, err := os.ReadDir(d); err != nil || len(ents) != 0 {
			t.Errorf("%s after the run: %v %v", d, ents, err)
		}
	}
	if after, _ := os.ReadFile(repoReport); string(after) != string(before) {
		t.Errorf("the run on your tiers rewrote the repository's %s", BenchReport)
	}
}
