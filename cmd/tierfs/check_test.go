package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// check prints every problem of a file, each as FILE:LINE: KEY: message,
// a value its type refuses and values of the wrong type among them, and
// nothing on stdout (issue 16 item 11: nine errors gave one line).
func TestCheckReportsEveryProblem(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bad := filepath.Join(e.base, "bad.toml")
	writeFile(t, bad, fmt.Sprintf(`[[tier]]
name = "fast"
type = "nvme"
path = %q
capacity = "-1"

[[tier]]
name = "slow"
type = 3
path = %q
capacity = 1.5

[policy]
migrate_threshold = "half"
interval = "1ns"
max_rate = 100
pin = ["../x/**"]

[mount]
read_ahead_kb = -1

[log]
level = "loud"
`, e.fast, e.slow))
	out, errOut, code := tierfs(t, "", "check", "--config", bad)
	want := []string{
		":5: tier[0].capacity: negative size",
		":9: tier[1].type: wrong type",
		":11: tier[1].capacity: a size needs a unit",
		":14: policy.migrate_threshold: wrong type",
		":15: policy.interval: must be at least 100ms",
		":16: policy.max_rate: a rate needs a unit",
		":17: policy.pin[0]: glob \"../x/**\" has a \"..\" segment",
		":20: mount.read_ahead_kb: must be between 0 and 65536",
		":23: log.level: unknown level",
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != 1 || out != "" || len(lines) != len(want) {
		t.Errorf("check: exit %d, stdout %q, %d lines on stderr; want 1, nothing and %d lines:\n%s", code, out, len(lines), len(want), errOut)
	}
	for i, w := range want {
		if w = "tierfs check: " + bad + w; i >= len(lines) || !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: want %q", i+1, w)
		}
	}
}
