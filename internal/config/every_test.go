package config

import (
	"strings"
	"testing"
)

// manyProblems has independent mistakes on many lines, among them a
// value its type refuses (capacity = "-1") and values of the wrong TOML
// type; each is reported with its line, none hides another (issue 16
// item 11).
const manyProblems = `bogus = 1
[[tier]]
name = "fast tier"
type = "tape"
path = "{A}"
capacity = "-1"
migrate_threshold = 2
[[tier]]
name = "slow"
type = 3
path = "relative/dir"
capacity = 1.5
[policy]
migrate_threshold = "half"
migrate_threads = 0
min_age = "-1s"
max_rate = 100
pin = ["/abs/**", "ok/**", "../x/**"]
interval = "1ns"
[pmem]
pool_ratio = 1.5
segment_size = "1KiB"
[mount]
control_mode = "0800"
read_ahead_kb = "1MiB"
writeback_cache = "yes"
[log]
level = "loud"
[metrics]
listen = "localhost:http"
max_topics = -1
`

func TestEveryProblemReported(t *testing.T) {
	_, err := parse(t, manyProblems)
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		"tierfs.toml:1: bogus: unknown key",
		"tierfs.toml:3: tier[0].name: invalid name",
		"tierfs.toml:4: tier[0].type: unknown type",
		"tierfs.toml:6: tier[0].capacity: negative size",
		"tierfs.toml:7: tier[0].migrate_threshold: must be in (0, 1]",
		"tierfs.toml:10: tier[1].type: wrong type: want a string, got an integer",
		"tierfs.toml:11: tier[1].path: must be an absolute path",
		`tierfs.toml:12: tier[1].capacity: a size needs a unit, e.g. "1.5GiB"`,
		"tierfs.toml:14: policy.migrate_threshold: wrong type: want a number, got a string",
		"tierfs.toml:15: policy.migrate_threads: must be 1 to 64",
		"tierfs.toml:16: policy.min_age: must not be negative",
		`tierfs.toml:17: policy.max_rate: a rate needs a unit, e.g. "100MiB/s"`,
		"tierfs.toml:18: policy.pin[0]: glob \"/abs/**\" must be relative",
		"tierfs.toml:18: policy.pin[2]: glob \"../x/**\" has a \"..\" segment",
		"tierfs.toml:19: policy.interval: must be at least 100ms",
		"tierfs.toml:21: pmem.pool_ratio: must be in [0, 1]",
		"tierfs.toml:22: pmem.segment_size: must be at least 4KiB",
		"tierfs.toml:24: mount.control_mode: invalid mode",
		"tierfs.toml:25: mount.read_ahead_kb: wrong type: want an integer, got a string",
		"tierfs.toml:26: mount.writeback_cache: wrong type: want true or false, got a string",
		`tierfs.toml:28: log.level: unknown level "loud"`,
		`tierfs.toml:30: metrics.listen: port "http" is not a number from 0 to 65535`,
		"tierfs.toml:31: metrics.max_topics: must be 0 or more",
	}
	got := strings.Split(err.Error(), "\n")
	for i, w := range want {
		if i >= len(got) || !strings.HasPrefix(got[i], w) {
			t.Errorf("error %d: want %q", i+1, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %d errors, want %d", len(got), len(want))
	}
	if t.Failed() {
		t.Logf("got:\n%s", err)
	}
}

// A byte-order mark is refused at line 1, and the rest of the file is
// still checked with its lines right (issue 16 item 13e).
func TestByteOrderMark(t *testing.T) {
	_, err := parse(t, "\xef\xbb\xbf"+base+"[policy]\nmigrate_threads = 0\n")
	want := []string{
		"tierfs.toml:1: the file starts with a UTF-8 byte-order mark",
		"tierfs.toml:12: policy.migrate_threads: must be 1 to 64",
	}
	if err == nil {
		t.Fatalf("a file with a byte-order mark was accepted")
	}
	got := strings.Split(err.Error(), "\n")
	if len(got) != len(want) {
		t.Fatalf("got:\n%s\nwant %d errors", err, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("error %d = %q, want %q", i+1, got[i], w)
		}
	}
	// The key on the first line is still found there.
	if _, err := parse(t, "\xef\xbb\xbfbogus = 1\n"+base); err == nil || !strings.Contains(err.Error(), "tierfs.toml:1: bogus: unknown key") {
		t.Errorf("unknown key on the first line after a byte-order mark: %v", err)
	}
	if _, err := parse(t, "\xff\xfe["); err == nil || err.Error() != "tierfs.toml:1: the file is UTF-16 (it starts with a UTF-16 byte-order mark): save it as UTF-8" {
		t.Errorf("UTF-16: %v", err)
	}
}

// The example file, which has every key, is valid under today's rules but
// for its tier paths, which do not exist here.
func TestExampleFileValid(t *testing.T) {
	_, err := Load("../../examples/tierfs.toml")
	if err == nil {
		t.Fatal("the example's tier paths exist here; this test cannot tell")
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		if !strings.Contains(line, ".path: ") || !strings.HasSuffix(line, "does not exist") {
			t.Errorf("examples/tierfs.toml: %s", line)
		}
	}
}

// Errors on one line (an inline table) come in the same order every time.
func TestInlineTableErrorsInOrder(t *testing.T) {
	src := "policy = {interval = 5, max_rate = 100, min_age = 7, migrate_threshold = \"a\"}\n" + base
	want := ""
	for i := 0; i < 20; i++ {
		_, err := parse(t, src)
		if err == nil {
			t.Fatal("no error")
		}
		if got := err.Error(); want == "" {
			want = got
		} else if got != want {
			t.Fatalf("errors came in another order:\n%s\nthen:\n%s", want, got)
		}
	}
	if n := strings.Count(want, "\n") + 1; n != 4 || !strings.HasPrefix(want, "tierfs.toml:1: policy.interval: ") {
		t.Errorf("want 4 errors on line 1, policy.interval first; got:\n%s", want)
	}
}
