package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Require skips outside CI and fails under CI=true: run in a child so the
// outcome can be judged.
func TestRequire(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		Require(t, false, "the child's missing thing")
		return
	}
	for _, c := range []struct {
		ci       string
		wantFail bool
		wantText string
	}{
		{"", false, "SKIP"},
		{"true", true, "CI=true and this test cannot run: the child's missing thing"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRequire$", "-test.v")
		cmd.Env = append(os.Environ(), "TESTENV_CHILD=1", "CI="+c.ci)
		out, err := cmd.CombinedOutput()
		if (err != nil) != c.wantFail || !strings.Contains(string(out), c.wantText) {
			t.Errorf("CI=%q: err %v, output:\n%s\nwant failed=%v and %q", c.ci, err, out, c.wantFail, c.wantText)
		}
	}
}
