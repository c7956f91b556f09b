package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tierfs/tierfs/internal/units"
)

// dirs makes the directories the configs below refer to: {A} and {B} are
// two tier directories, {FILE} is a regular file, {MISSING} does not exist.
func dirs(t *testing.T) *strings.Replacer {
	t.Helper()
	a, b := t.TempDir(), t.TempDir()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer("{A}", a, "{B}", b, "{FILE}", file,
		"{MISSING}", filepath.Join(b, "missing"))
}

// base has two valid tiers on lines 1-9; cases append from line 11.
const base = `[[tier]]
name = "fast"
type = "nvme"
path = "{A}"

[[tier]]
name = "slow"
type = "hdd"
path = "{B}"

`

func parse(t *testing.T, src string) (*Config, error) {
	t.Helper()
	return Parse("tierfs.toml", []byte(dirs(t).Replace(src)))
}

func TestParseValid(t *testing.T) {
	c, err := parse(t, base)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(c.Tiers) != 2 || c.Tiers[0].Name != "fast" || c.Tiers[1].Type != "hdd" {
		t.Errorf("tiers = %+v", c.Tiers)
	}
	if c.Source != "tierfs.toml" {
		t.Errorf("Source = %q", c.Source)
	}
	// Everything else is the packages' defaults.
	d := Default()
	if c.Policy.MigrateThreshold != 0.5 || c.Policy.MigrateThreads != 1 ||
		time.Duration(c.Policy.Interval) != 5*time.Second ||
		time.Duration(c.Policy.MinAge) != 30*time.Second || c.Policy.MaxRate != 0 ||
		len(c.Policy.Pin) != 1 || c.Policy.Pin[0] != "__cluster_metadata-*/**" {
		t.Errorf("policy = %+v, want defaults", c.Policy)
	}
	if c.PMem != d.PMem || c.PMem.PoolRatio != 0.8 || c.PMem.SegmentSize != 1<<30 {
		t.Errorf("pmem = %+v, want defaults", c.PMem)
	}
	if c.Mount != d.Mount || c.Mount.SocketMode() != 0o600 || c.Mount.AllowOther ||
		c.Mount.WritebackCache || c.Mount.ReadAheadKB != 4096 || !c.Mount.IOUring {
		t.Errorf("mount = %+v, want defaults", c.Mount)
	}
	if c.Log.Level != "info" {
		t.Errorf("log.level = %q, want info", c.Log.Level)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParseEverything(t *testing.T) {
	c, err := parse(t, base+`[policy]
migrate_threshold = 0.75
migrate_threads = 4
interval = "1m"
min_age = "0s"
max_rate = "200MiB/s"
pin = [
  "__cluster_metadata-*/**",  # the KRaft log
  "*/leader-epoch-checkpoint",
]

[pmem]
pool_ratio = 0.5
segment_size = "256MiB"

[mount]
allow_other = true
control_mode = "0660"
control_group = "0"
writeback_cache = true
read_ahead_kb = 0
io_uring = true

[log]
level = "debug"
`)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	p := c.Policy
	if p.MigrateThreshold != 0.75 || p.MigrateThreads != 4 || time.Duration(p.Interval) != time.Minute ||
		p.MinAge != 0 || p.MaxRate != 200<<20 || len(p.Pin) != 2 {
		t.Errorf("policy = %+v", p)
	}
	if c.PMem.PoolRatio != 0.5 || c.PMem.SegmentSize != 256<<20 {
		t.Errorf("pmem = %+v", c.PMem)
	}
	if !c.Mount.AllowOther || c.Mount.SocketMode() != 0o660 || !c.Mount.WritebackCache || c.Mount.ReadAheadKB != 0 || !c.Mount.IOUring {
		t.Errorf("mount = %+v (mode %v)", c.Mount, c.Mount.SocketMode())
	}
	if gid, err := c.Mount.ControlGID(); gid != 0 || err != nil {
		t.Errorf("ControlGID = %d, %v", gid, err)
	}
	if c.Log.Level != "debug" {
		t.Errorf("log.level = %q", c.Log.Level)
	}
}

func TestStringRoundTrip(t *testing.T) {
	c, err := parse(t, base+`[policy]
max_rate = "1GiB/s"
pin = ["a/**", "b/*.log"]

[pmem]
segment_size = "64MiB"
`)
	if err != nil {
		t.Fatal(err)
	}
	thr := 0.9
	c.Tiers[0].MigrateThreshold = &thr
	c.Tiers[1].Capacity = 10 << 30
	s := c.String()
	for _, want := range []string{
		"[[tier]]", `name = "fast"`, "migrate_threshold = 0.9", `capacity = "10GiB"`,
		"[policy]", "migrate_threshold = 0.5", "migrate_threads = 1", `interval = "5s"`,
		`min_age = "30s"`, `max_rate = "1GiB/s"`, "[pmem]", `segment_size = "64MiB"`,
		"pool_ratio = 0.8", "[mount]", `control_mode = "0600"`, "[log]", `level = "info"`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("String() lacks %q:\n%s", want, s)
		}
	}
	back, err := Parse("effective.toml", []byte(s))
	if err != nil {
		t.Fatalf("Parse(String()): %v\n%s", err, s)
	}
	// The header comment names the source; compare the rest.
	strip := func(s string) string { return s[strings.Index(s, "\n"):] }
	if got := back.String(); strip(got) != strip(s) {
		t.Errorf("round trip changed the configuration:\n%s\n---\n%s", s, got)
	}
	if back.TierThreshold(0) != 0.9 || back.TierThreshold(1) != 0.5 {
		t.Errorf("thresholds after round trip: %v %v", back.TierThreshold(0), back.TierThreshold(1))
	}
	// Defaults alone print and parse too (no tiers: refused by Validate
	// only).
	d := Default()
	if _, err := Parse("d.toml", []byte(d.String())); err == nil ||
		!strings.Contains(err.Error(), "at least one [[tier]]") {
		t.Errorf("Parse(Default().String()) = %v", err)
	}
}

func TestLoad(t *testing.T) {
	r := dirs(t)
	name := filepath.Join(t.TempDir(), "tierfs.toml")
	if err := os.WriteFile(name, []byte(r.Replace(base+"[policy]\nmigrate_threads = 0\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(name)
	if err == nil || !strings.Contains(err.Error(), name+":12: policy.migrate_threads:") {
		t.Errorf("Load = %v, want %s:12: policy.migrate_threads", err, name)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "nope.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		// want is the start of the error: "tierfs.toml:LINE: KEY:".
		want string
		// also must appear in the message.
		also string
	}{
		{"syntax error", base + "[policy\nmigrate_threads = 2\n",
			"tierfs.toml:11: ", "expected '.' or ']'"},
		{"syntax error missing value", base + "[policy]\nmigrate_threads =\n",
			"tierfs.toml:12: policy.migrate_threads: ", "expected value"},
		{"syntax error after multi-line array", base + "[policy]\npin = [\n  \"a/**\",\n  \"b/**\",\n]\ninterval = 5s\n",
			"tierfs.toml:16: policy.interval: ", "expected a top-level item to end"},
		{"duplicate key", base + "[policy]\nmigrate_threads = 2\nmigrate_threads = 3\n",
			"tierfs.toml:13: policy.migrate_threads: ", "already been defined"},
		{"unknown top-level key", "bogus = 1\n" + base,
			"tierfs.toml:1: bogus: ", "unknown key"},
		{"unknown table", base + "[extra]\na = 1\n",
			"tierfs.toml:11: extra: ", "unknown key"},
		{"unknown key in tier", base + "colour = \"red\"\n",
			"tierfs.toml:11: tier[1].colour: ", "unknown key"},
		{"unknown key in first tier", strings.Replace(base, "type = \"nvme\"\n", "type = \"nvme\"\nspeed = 9\n", 1),
			"tierfs.toml:4: tier[0].speed: ", "unknown key"},
		{"unknown key in policy", base + "[policy]\nmigrate_threshold = 0.5\nthreshold = 0.5\n",
			"tierfs.toml:13: policy.threshold: ", "unknown key"},
		{"unknown dotted key in policy", base + "[policy]\nx.y = 1\n",
			"tierfs.toml:12: policy.x.y: ", "unknown key"},
		{"key in wrong case", base + "[policy]\nMigrate_Threads = 2\n",
			"tierfs.toml:12: policy.Migrate_Threads: ", `did you mean "migrate_threads"`},
		{"tier as a table", "[tier]\nname = \"x\"\n",
			"tierfs.toml:1: tier: ", "[[tier]]"},
		{"policy not a table", "policy = 5\n" + base,
			"tierfs.toml:1: policy: ", "must be a table"},
		{"no tiers", "[policy]\nmigrate_threads = 2\n",
			"tierfs.toml: tier: ", "at least one [[tier]] is required"},
		{"duplicate tier names", strings.Replace(base, `"slow"`, `"fast"`, 1),
			"tierfs.toml:7: tier[1].name: ", `duplicate tier name "fast"`},
		{"bad tier name", strings.Replace(base, `"slow"`, `"slow tier"`, 1),
			"tierfs.toml:7: tier[1].name: ", "invalid name"},
		{"missing name", strings.Replace(base, "name = \"slow\"\n", "", 1),
			"tierfs.toml:6: tier[1].name: ", "is required"},
		{"unknown tier type", strings.Replace(base, `"hdd"`, `"tape"`, 1),
			"tierfs.toml:8: tier[1].type: ", `unknown type "tape"`},
		{"tier type wrong type", strings.Replace(base, `"hdd"`, `3`, 1),
			"tierfs.toml:8: tier[1].type: ", "wrong type"},
		{"relative path", strings.Replace(base, `"{B}"`, `"data/slow"`, 1),
			"tierfs.toml:9: tier[1].path: ", "absolute"},
		{"missing path key", strings.Replace(base, "path = \"{B}\"\n", "", 1),
			"tierfs.toml:6: tier[1].path: ", "is required"},
		{"path does not exist", strings.Replace(base, `"{B}"`, `"{MISSING}"`, 1),
			"tierfs.toml:9: tier[1].path: ", "does not exist"},
		{"path is a file", strings.Replace(base, `"{B}"`, `"{FILE}"`, 1),
			"tierfs.toml:9: tier[1].path: ", "not a directory"},
		// /proc refuses new files even to root.
		{"path without trusted xattrs", strings.Replace(base, `"{B}"`, `"/proc"`, 1),
			"tierfs.toml:9: tier[1].path: ", "without trusted extended attributes (proc)"},
		{"same tier path with dot", strings.Replace(base, `"{B}"`, `"{A}/."`, 1),
			"tierfs.toml:9: tier[1].path: ", "same directory as tier[0]"},
		{"same tier path", strings.Replace(base, `"{B}"`, `"{A}"`, 1),
			"tierfs.toml:9: tier[1].path: ", "same directory as tier[0]"},
		{"tier capacity bad", strings.Replace(base, "type = \"nvme\"\n", "type = \"nvme\"\ncapacity = \"12XB\"\n", 1),
			"tierfs.toml:4: tier[0].capacity: ", `invalid size "12XB"`},
		// BurntSushi/toml reports the line of the key in the last [[tier]]
		// (line 11 here); the error is about the first.
		{"tier capacity bad in first of two", strings.Replace(base, "type = \"nvme\"\n", "type = \"nvme\"\ncapacity = \"12XB\"\n", 1) + "capacity = \"1GiB\"\n",
			"tierfs.toml:4: tier[0].capacity: ", `invalid size "12XB"`},
		{"tier capacity negative", base + "capacity = -1\n",
			"tierfs.toml:11: tier[1].capacity: ", "negative"},
		{"tier threshold 1.5", base + "migrate_threshold = 1.5\n",
			"tierfs.toml:11: tier[1].migrate_threshold: ", "(0, 1]"},
		{"tier threshold 0", base + "migrate_threshold = 0\n",
			"tierfs.toml:11: tier[1].migrate_threshold: ", "(0, 1]"},
		{"threshold 0", base + "[policy]\nmigrate_threshold = 0\n",
			"tierfs.toml:12: policy.migrate_threshold: ", "(0, 1]"},
		{"threshold 1.5", base + "[policy]\nmigrate_threshold = 1.5\n",
			"tierfs.toml:12: policy.migrate_threshold: ", "got 1.5"},
		{"threshold -0.5", base + "[policy]\nmigrate_threshold = -0.5\n",
			"tierfs.toml:12: policy.migrate_threshold: ", "got -0.5"},
		{"threshold nan", base + "[policy]\nmigrate_threshold = nan\n",
			"tierfs.toml:12: policy.migrate_threshold: ", "got NaN"},
		{"threshold string", base + "[policy]\n\nmigrate_threshold = \"abc\"\n",
			"tierfs.toml:13: policy.migrate_threshold: ", "wrong type: want a number, got a string"},
		{"threshold as dotted key", base + "policy.migrate_threshold = 2\n",
			"tierfs.toml:11: tier[1].policy.migrate_threshold: ", "unknown key"},
		{"migrate_threads 0", base + "[policy]\nmigrate_threads = 0\n",
			"tierfs.toml:12: policy.migrate_threads: ", "1 to 64"},
		{"migrate_threads 65", base + "[policy]\nmigrate_threads = 65\n",
			"tierfs.toml:12: policy.migrate_threads: ", "1 to 64"},
		{"migrate_threads float", base + "[policy]\nmigrate_threads = 1.5\n",
			"tierfs.toml:12: policy.migrate_threads: ", "want an integer"},
		{"interval zero", base + "[policy]\ninterval = \"0s\"\n",
			"tierfs.toml:12: policy.interval: ", "at least 100ms"},
		{"interval 1ns", base + "[policy]\ninterval = \"1ns\"\n",
			"tierfs.toml:12: policy.interval: ", "at least 100ms"},
		{"min_age 1ms", base + "[policy]\nmin_age = \"1ms\"\n",
			"tierfs.toml:12: policy.min_age: ", "at least 1s"},
		{"max_rate 100KiB/s", base + "[policy]\nmax_rate = \"100KiB/s\"\n",
			"tierfs.toml:12: policy.max_rate: ", "at least 1MiB/s"},
		{"pin with ..", base + "[policy]\npin = [\"../x/**\"]\n",
			"tierfs.toml:12: policy.pin[0]: ", `".." segment`},
		{"pin with .", base + "[policy]\npin = [\"./x\"]\n",
			"tierfs.toml:12: policy.pin[0]: ", `"." segment`},
		{"interval bad", base + "[policy]\ninterval = \"soon\"\n",
			"tierfs.toml:12: policy.interval: ", `invalid duration "soon"`},
		{"interval number", base + "[policy]\ninterval = 5\n",
			"tierfs.toml:12: policy.interval: ", `a duration needs a unit, e.g. "5s"`},
		{"tier capacity without unit", base + "capacity = 1.5\n",
			"tierfs.toml:11: tier[1].capacity: ", `a size needs a unit, e.g. "1.5GiB"`},
		{"tier capacity string without unit", base + "capacity = \"0.5\"\n",
			"tierfs.toml:11: tier[1].capacity: ", `a size needs a unit, e.g. "0.5GiB"`},
		{"tier capacity bare 0", base + "capacity = 0\n",
			"", ""},
		{"max_rate without unit", base + "[policy]\nmax_rate = 100\n",
			"tierfs.toml:12: policy.max_rate: ", `a rate needs a unit, e.g. "100MiB/s"`},
		{"max_rate bare 0", base + "[policy]\nmax_rate = 0\n",
			"", ""},
		{"min_age negative", base + "[policy]\nmin_age = \"-1s\"\n",
			"tierfs.toml:12: policy.min_age: ", "negative"},
		{"max_rate bad", base + "[policy]\nmax_rate = \"fast\"\n",
			"tierfs.toml:12: policy.max_rate: ", `invalid rate "fast"`},
		{"pin bad glob", base + "[policy]\npin = [\n  \"ok/**\",\n  \"[oops\",\n]\n",
			"tierfs.toml:12: policy.pin[1]: ", "bad pattern"},
		{"pin absolute", base + "[policy]\npin = [\"/abs/*\"]\n",
			"tierfs.toml:12: policy.pin[0]: ", "relative"},
		{"pin partial **", base + "[policy]\npin = [\"a**/b\"]\n",
			"tierfs.toml:12: policy.pin[0]: ", "whole path segment"},
		{"pool_ratio 1.5", base + "[pmem]\npool_ratio = 1.5\n",
			"tierfs.toml:12: pmem.pool_ratio: ", "[0, 1]"},
		{"segment_size too small", base + "[pmem]\nsegment_size = \"1KiB\"\n",
			"tierfs.toml:12: pmem.segment_size: ", "at least 4KiB"},
		{"pool_files bad pattern", base + "[pmem]\npool_files = \"[a-\"\n",
			"tierfs.toml:12: pmem.pool_files: ", "bad pattern"},
		{"segment_size bad", base + "[pmem]\nsegment_size = \"big\"\n",
			"tierfs.toml:12: pmem.segment_size: ", "invalid size"},
		{"log level", base + "[log]\nlevel = \"loud\"\n",
			"tierfs.toml:12: log.level: ", `unknown level "loud"`},
		{"log file", base + "[log]\nfile = \"tierfs.log\"\n",
			"tierfs.toml:12: log.file: ", `must be an absolute path, got "tierfs.log"`},
		{"control_mode not octal", base + "[mount]\ncontrol_mode = \"0800\"\n",
			"tierfs.toml:12: mount.control_mode: ", "octal"},
		{"control_mode too big", base + "[mount]\ncontrol_mode = \"1777\"\n",
			"tierfs.toml:12: mount.control_mode: ", "above 0777"},
		{"control_mode number", base + "[mount]\ncontrol_mode = 600\n",
			"tierfs.toml:12: mount.control_mode: ", "wrong type"},
		{"control_group unknown", base + "[mount]\ncontrol_group = \"no-such-group-tierfs\"\n",
			"tierfs.toml:12: mount.control_group: ", "unknown group"},
		{"read_ahead_kb negative", base + "[mount]\nallow_other = true\nread_ahead_kb = -1\n",
			"tierfs.toml:13: mount.read_ahead_kb: ", "between 0 and 65536"},
		{"read_ahead_kb too big", base + "[mount]\nread_ahead_kb = 65537\n",
			"tierfs.toml:12: mount.read_ahead_kb: ", "got 65537"},
		{"read_ahead_kb largest", base + "[mount]\nread_ahead_kb = 65536\n",
			"", ""},
		{"read_ahead_kb string", base + "[mount]\nread_ahead_kb = \"1MiB\"\n",
			"tierfs.toml:12: mount.read_ahead_kb: ", "wrong type"},
		{"writeback_cache string", base + "[mount]\nwriteback_cache = \"yes\"\n",
			"tierfs.toml:12: mount.writeback_cache: ", "wrong type: want true or false"},
		{"io_uring number", base + "[mount]\nio_uring = 1\n",
			"tierfs.toml:12: mount.io_uring: ", "wrong type: want true or false"},
		{"direct_io string", base + "[mount]\ndirect_io = \"on\"\n",
			"tierfs.toml:12: mount.direct_io: ", "wrong type: want true or false"},
		{"direct_io", base + "[mount]\ndirect_io = true\n",
			"", ""},
		{"line after multi-line string", base + "[log]\n# \"\"\" not a string\nlevel = '''\nx = 1\n'''\n",
			"tierfs.toml:13: log.level: ", "unknown level"},
		{"default key reported at its table", base + "[pmem]\n# nothing\n",
			"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.src)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse: no error, want %q", tt.want)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tt.want) || !strings.Contains(msg, tt.also) {
				t.Errorf("error:\n  %s\nwant prefix %q containing %q", msg, tt.want, tt.also)
			}
			if strings.Count(msg, "\n") != 0 {
				t.Errorf("want one error, got:\n%s", msg)
			}
		})
	}
}

func TestValidationErrorAtTableHeader(t *testing.T) {
	// A key missing from its table is reported at the table's header.
	c, err := parse(t, base+"[pmem]\npool_ratio = 0.5\n")
	if err != nil {
		t.Fatal(err)
	}
	c.PMem.SegmentSize = 1
	err = c.Validate()
	if err == nil || !strings.HasPrefix(err.Error(), "tierfs.toml:11: pmem.segment_size: ") {
		t.Errorf("Validate = %v, want tierfs.toml:11: pmem.segment_size", err)
	}
	// A table missing from the file: no line.
	c.PMem.SegmentSize = 1 << 20
	c.Log.Level = "chatty"
	err = c.Validate()
	if err == nil || !strings.HasPrefix(err.Error(), "tierfs.toml: log.level: ") {
		t.Errorf("Validate = %v, want tierfs.toml: log.level", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Key != "log.level" || e.Line != 0 {
		t.Errorf("errors.As(*Error) = %+v", e)
	}
}

func TestSeveralErrors(t *testing.T) {
	_, err := parse(t, "bogus = 1\n"+base+"colour = 2\n[policy]\nx = 1\n[pmem]\npool_ratio = \"lots\"\n")
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		"tierfs.toml:1: bogus: unknown key",
		"tierfs.toml:12: tier[1].colour: unknown key",
		"tierfs.toml:14: policy.x: unknown key",
		"tierfs.toml:16: pmem.pool_ratio: wrong type",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("error %d = %q, want %q", i, lines[i], w)
		}
	}
}

func TestThresholds(t *testing.T) {
	for _, v := range []string{"-1", "-1.0", "1", "1.0", "0.01", "0.5"} {
		t.Run("policy "+v, func(t *testing.T) {
			c, err := parse(t, base+"[policy]\nmigrate_threshold = "+v+"\n")
			if err != nil {
				t.Fatalf("migrate_threshold = %s: %v", v, err)
			}
			var want float64
			fmt.Sscan(v, &want)
			if c.TierThreshold(0) != want || c.TierThreshold(1) != want {
				t.Errorf("TierThreshold = %v, %v; want %v", c.TierThreshold(0), c.TierThreshold(1), want)
			}
		})
	}
	c, err := parse(t, base+"migrate_threshold = -1\n[policy]\nmigrate_threshold = 0.7\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.TierThreshold(0) != 0.7 || c.TierThreshold(1) != -1 || c.TierThreshold(5) != 0.7 {
		t.Errorf("TierThreshold = %v, %v, %v; want 0.7, -1, 0.7",
			c.TierThreshold(0), c.TierThreshold(1), c.TierThreshold(5))
	}
	if c.Tiers[0].MigrateThreshold != nil {
		t.Errorf("tier[0].migrate_threshold = %v, want unset", *c.Tiers[0].MigrateThreshold)
	}
}

func TestCheckMountpoint(t *testing.T) {
	parent := t.TempDir()
	a, b := filepath.Join(parent, "a"), filepath.Join(parent, "b")
	mnt := filepath.Join(t.TempDir(), "mnt")
	for _, d := range []string{a, b, mnt, filepath.Join(b, "kafka")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(parent, link); err != nil {
		t.Fatal(err)
	}
	src := strings.NewReplacer("{A}", a, "{B}", b).Replace(base)
	c, err := Parse("tierfs.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		mountpoint string
		want       string // "" for no error
	}{
		{mnt, ""},
		{mnt + "/", ""},
		{parent, "tierfs.toml:4: tier[0].path: "},       // both tiers are inside it
		{link, "tierfs.toml:4: tier[0].path: "},         // the same through a symlink
		{a, "tierfs.toml:4: tier[0].path: "},            // the mountpoint is a tier
		{b + "/kafka", "tierfs.toml:9: tier[1].path: "}, // inside a tier
		{link + "/b/kafka", "tierfs.toml:9: tier[1].path: "},
		{"", "mountpoint: "},
	}
	for _, tt := range tests {
		err := c.CheckMountpoint(tt.mountpoint)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckMountpoint(%q) = %v", tt.mountpoint, err)
		case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want) && !strings.Contains(err.Error(), tt.want)):
			t.Errorf("CheckMountpoint(%q) = %v, want %q", tt.mountpoint, err, tt.want)
		}
	}
}

func TestTiersInsideEachOther(t *testing.T) {
	a := t.TempDir()
	sub := filepath.Join(a, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(sub, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ p0, p1, want string }{
		{a, sub, "is inside tier[0]"},
		{sub, a, "contains tier[0]"},
		{a, link, "is inside tier[0]"},
		{sub, link, "same directory as tier[0]"},
	} {
		src := strings.NewReplacer("{A}", tc.p0, "{B}", tc.p1).Replace(base)
		_, err := Parse("tierfs.toml", []byte(src))
		if err == nil || !strings.HasPrefix(err.Error(), "tierfs.toml:9: tier[1].path: ") ||
			!strings.Contains(err.Error(), tc.want) {
			t.Errorf("tiers %s, %s: %v; want tierfs.toml:9: tier[1].path: ...%s", tc.p0, tc.p1, err, tc.want)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{File: "f.toml", Line: 7, Key: "tier[1].path", Msg: "/x does not exist"}, "f.toml:7: tier[1].path: /x does not exist"},
		{Error{File: "f.toml", Key: "tier", Msg: "at least one [[tier]] is required"}, "f.toml: tier: at least one [[tier]] is required"},
		{Error{File: "f.toml", Line: 3, Msg: "syntax"}, "f.toml:3: syntax"},
		{Error{Key: "log.level", Msg: "bad"}, "log.level: bad"},
		{Error{Line: 2, Key: "k", Msg: "bad"}, "line 2: k: bad"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	// A Config made in code has no file: errors carry only the key.
	c := Default()
	err := c.Validate()
	if err == nil || err.Error() != "tier: at least one [[tier]] is required" {
		t.Errorf("Default().Validate() = %v", err)
	}
	var ke *units.KeyError
	if errors.As(err, &ke) {
		t.Errorf("Validate returned a bare KeyError: %v", ke)
	}
}

func TestLocator(t *testing.T) {
	src := `top = 1
# [[tier]] in a comment
[[tier]]
name = "a" # [policy]
doc = """
[[tier]]
x = 1
"""
"quoted.key" = 2
[[tier]]
arr = [
  { a = 1 },
  [2, 3],
]
lit = '''
'''
name = 'b'
[tier.sub]
k = 1
[ policy ]
migrate_threshold = 0.5
`
	l := scan([]byte(src))
	for key, want := range map[string]int{
		"top":                      1,
		"tier[0]":                  3,
		"tier[0].name":             4,
		"tier[0].doc":              5,
		`tier[0]."quoted.key"`:     9,
		"tier[1]":                  10,
		"tier[1].arr":              11,
		"tier[1].lit":              15,
		"tier[1].name":             17,
		"tier[1].sub":              18,
		"tier[1].sub.k":            19,
		"tier[1].missing":          10,
		"policy":                   20,
		"policy.migrate_threshold": 21,
		"policy.pin[3]":            20,
		"pmem.pool_ratio":          0,
		"tier[2].name":             0,
	} {
		if got := l.line(key); got != want {
			t.Errorf("line(%q) = %d, want %d", key, got, want)
		}
	}
	if got := l.occ["tier.name"]; len(got) != 2 || got[0] != "tier[0].name" || got[1] != "tier[1].name" {
		t.Errorf("occ[tier.name] = %q", got)
	}
	for _, tc := range []struct {
		line      int
		raw, want string
	}{
		{17, "tier.name", "tier[1].name"},
		{4, "tier.name", "tier[0].name"},
		{4, "tier", "tier[0].name"},
		{21, "policy", "policy.migrate_threshold"},
		{2, "tier", ""},
		{6, "tier", ""}, // inside a string
	} {
		if got := l.keyOn(tc.line, tc.raw); got != tc.want {
			t.Errorf("keyOn(%d, %q) = %q, want %q", tc.line, tc.raw, got, tc.want)
		}
	}
}

// Sets tells a key the file sets from one left at its default, whatever
// the value ([mount] supervisor: asked for by name, or the default).
func TestSets(t *testing.T) {
	for _, c := range []struct {
		extra string
		want  bool
	}{
		{"", false},
		{"[mount]\nallow_other = false\n", false},
		{"[mount]\nsupervisor = true\n", true},
		{"[mount]\n# supervisor = true\nsupervisor=false\n", true},
	} {
		cfg, err := parse(t, base+c.extra)
		if err != nil {
			t.Fatalf("%q: %v", c.extra, err)
		}
		if got := cfg.Sets("mount.supervisor"); got != c.want {
			t.Errorf("%q: Sets(mount.supervisor) = %v, want %v", c.extra, got, c.want)
		}
	}
}

// enable_uring_switch with io_uring = false is refused on its line.
func TestEnableURingSwitchWithoutIOUring(t *testing.T) {
	_, err := parse(t, base+"[mount]\nio_uring = false\nenable_uring_switch = true\n")
	if err == nil || !strings.HasPrefix(err.Error(), "tierfs.toml:13: mount.enable_uring_switch: ") {
		t.Errorf("got %v, want an error on line 13, mount.enable_uring_switch", err)
	}
	c, err := parse(t, base+"[mount]\nenable_uring_switch = true\n")
	if err != nil || !c.Mount.EnableURingSwitch || !c.Mount.IOUring {
		t.Errorf("enable_uring_switch with io_uring's default: %+v, %v", c, err)
	}
}

// supervisor_io_uring with supervisor = false is refused on its line.
func TestSupervisorIOUringWithoutSupervisor(t *testing.T) {
	_, err := parse(t, base+"[mount]\nsupervisor = false\nsupervisor_io_uring = true\n")
	if err == nil || !strings.HasPrefix(err.Error(), "tierfs.toml:13: mount.supervisor_io_uring: ") {
		t.Errorf("got %v, want an error on line 13, mount.supervisor_io_uring", err)
	}
}

// passthrough parses, supervised or not; with the write-back cache, which
// the kernel refuses it beside, it is an error on its line.
func TestPassthroughParses(t *testing.T) {
	for _, sup := range []string{"", "supervisor = false\n"} {
		c, err := parse(t, base+"[mount]\n"+sup+"passthrough = true\n")
		if err != nil || !c.Mount.Passthrough || c.Mount.Supervisor != (sup == "") {
			t.Errorf("passthrough with %q: %+v, %v", sup, c.Mount, err)
		}
	}
	_, err := parse(t, base+"[mount]\nwriteback_cache = true\npassthrough = true\n")
	if err == nil || !strings.HasPrefix(err.Error(), "tierfs.toml:13: mount.passthrough: ") || !strings.Contains(err.Error(), "write-back cache") {
		t.Errorf("passthrough with the write-back cache: %v, want an error on line 13, mount.passthrough", err)
	}
}

// The example file, as installed for operators, gives the supervised
// default, which serves /dev/fuse: it does not turn the kernel's io_uring
// switch on (that serves only an unsupervised or supervisor_io_uring
// mount), so the defaults the benchmarks judge are /dev/fuse's.
func TestExampleFileDefaults(t *testing.T) {
	b, err := os.ReadFile("../../examples/tierfs.toml")
	if err != nil {
		t.Fatal(err)
	}
	src := strings.NewReplacer("/mnt/pmem0/tierfs", "{A}", "/data/hdd0/tierfs", "{B}").Replace(string(b))
	c, err := parse(t, src)
	if err != nil {
		t.Fatalf("examples/tierfs.toml with existing tier paths: %v", err)
	}
	if !c.Mount.Supervisor || c.Mount.SupervisorIOUring || c.Mount.EnableURingSwitch || !c.Mount.SpliceWrites || c.Mount.Passthrough {
		t.Errorf("examples/tierfs.toml: supervisor = %v, supervisor_io_uring = %v, enable_uring_switch = %v, splice_writes = %v, passthrough = %v; want true, false, false, true, false", c.Mount.Supervisor, c.Mount.SupervisorIOUring, c.Mount.EnableURingSwitch, c.Mount.SpliceWrites, c.Mount.Passthrough)
	}
	if c, err := parse(t, base+"[mount]\nsplice_writes = false\n"); err != nil {
		t.Errorf("splice_writes = false: %v", err)
	} else if c.Mount.SpliceWrites {
		t.Errorf("splice_writes = false parsed as true")
	}
}
