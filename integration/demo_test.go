package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemo runs what the README's first command runs (`make demo`:
// examples/demo.sh) with this tree's tierfs and the pinned Kafka jars: it
// must pass, and say where its metrics are. It broke once without a test
// noticing, when `tierfs status --json` changed under it.
func TestDemo(t *testing.T) {
	k := RequireKafka(t)
	root := RepoRoot(t)
	cmd := exec.Command("bash", filepath.Join(root, "examples", "demo.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "TIERFS="+TierfsBinary(t), "KAFKA_LIBS="+k.Libs, "JAVA="+k.Java)
	out, err := cmd.CombinedOutput()
	text := string(out)
	if err != nil {
		t.Fatalf("examples/demo.sh: %v\n%s", err, tailLines(text, 60))
	}
	for _, want := range []string{"==> demo passed:", "==> metrics: http://"} {
		if !strings.Contains(text, want) {
			t.Errorf("the demo's output lacks %q\n%s", want, tailLines(text, 60))
		}
	}
	if ms := mountsUnder(filepath.Join(root, ".demo")); len(ms) > 0 {
		t.Errorf("the demo left mounts behind: %v", ms)
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
