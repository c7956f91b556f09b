package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tierfs/tierfs/internal/units"
)

// Values that are almost surely slips are refused with the rule that
// refuses them, and every problem is reported (issue 16 items 11, 12).
func TestValidateMinimums(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string // "" when valid
	}{
		{"interval 1ns", func(c *Config) { c.Interval = 1 }, "policy.interval: must be at least 100ms"},
		{"interval 99ms", func(c *Config) { c.Interval = units.Duration(99 * time.Millisecond) }, "policy.interval: must be at least 100ms"},
		{"interval 100ms", func(c *Config) { c.Interval = units.Duration(100 * time.Millisecond) }, ""},
		{"min_age 1ns", func(c *Config) { c.MinAge = 1 }, "policy.min_age: must be 0 (every file counts as sealed at once) or at least 1s"},
		{"min_age 999ms", func(c *Config) { c.MinAge = units.Duration(999 * time.Millisecond) }, "at least 1s"},
		{"min_age 0", func(c *Config) { c.MinAge = 0 }, ""},
		{"min_age 1s", func(c *Config) { c.MinAge = units.Duration(time.Second) }, ""},
		{"max_rate 100B/s", func(c *Config) { c.MaxRate = 100 }, "policy.max_rate: must be 0 (unlimited) or at least 1MiB/s"},
		{"max_rate 0", func(c *Config) { c.MaxRate = 0 }, ""},
		{"max_rate 1MiB/s", func(c *Config) { c.MaxRate = 1 << 20 }, ""},
	} {
		c := DefaultConfig()
		tc.set(&c)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	c := DefaultConfig()
	c.Interval, c.MinAge, c.MaxRate, c.MigrateThreads = 1, 1, 1, 0
	var keys []string
	for _, e := range err2list(c.Validate()) {
		var ke *units.KeyError
		if errors.As(e, &ke) {
			keys = append(keys, ke.Key)
		}
	}
	if got := strings.Join(keys, " "); got != "policy.migrate_threads policy.interval policy.min_age policy.max_rate" {
		t.Errorf("Validate of four bad keys reported %q", got)
	}
}

func err2list(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// A pin glob that can never match a path as the engine names files
// ("a/b", no "." or ".." segments, no empty ones, not absolute) is
// refused (issue 16 item 13d).
func TestCheckPinGlob(t *testing.T) {
	for _, g := range []string{"../x/**", "./x", "x/./y", "x/..", "x/../y", "..", ".", "/abs/*", "", "a//b", "a/", "a**/b", "[oops"} {
		if err := CheckPinGlob(g); err == nil {
			t.Errorf("CheckPinGlob(%q) accepted a glob that never matches", g)
		}
	}
	for _, g := range []string{"__cluster_metadata-*/**", "**/*.index", "a/**/b", "orders-?/*.log", ".hidden/*", "x/..y"} {
		if err := CheckPinGlob(g); err != nil {
			t.Errorf("CheckPinGlob(%q): %v", g, err)
		}
	}
}
