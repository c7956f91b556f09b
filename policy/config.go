// Package policy plans moves of files between tiers. It is pure: it reads a
// snapshot and returns a plan, with no I/O.
package policy

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/tierfs/tierfs/internal/units"
)

// Config is the [policy] table.
type Config struct {
	// MigrateThreshold is the fraction of a tier's capacity above which
	// files are moved down to the next tier; -1 disables moves. A tier
	// may override it with its own migrate_threshold.
	MigrateThreshold float64 `toml:"migrate_threshold"`
	// MigrateThreads is how many moves run at once (1..64).
	MigrateThreads int `toml:"migrate_threads"`
	// Interval is how often a plan is made.
	Interval units.Duration `toml:"interval"`
	// MinAge is how long a file must be left alone (not written) before
	// it may be moved.
	MinAge units.Duration `toml:"min_age"`
	// MaxRate caps the bytes per second copied by moves; 0 is unlimited.
	MaxRate units.Rate `toml:"max_rate"`
	// Pin lists globs, relative to the mount root, of files that never
	// leave the first tier. Segments use path.Match syntax; "**" as a
	// whole segment matches any number of directories.
	Pin []string `toml:"pin"`
}

// MaxMigrateThreads is the most migrate_threads may be.
const MaxMigrateThreads = 64

// The smallest values that are not slips. The engine plans every
// interval, and a plan walks every file of every tier: planning every
// 10 ms took most of a CPU (docs/perf.md, "Figures the code rests on"),
// and 100 ms keeps that an order of magnitude lower (the tests, which plan
// every 100-200 ms, need no more). A min_age under a
// second counts a file as sealed between two appends of a producer that
// batches, and its move is then redone; 0 stays for "sealed at once". A
// move copies whole files (a 1 GiB segment by default) and no new plan is
// made while moves run: under 1 MiB/s one segment holds the policy up for
// over a quarter of an hour.
const (
	MinInterval = units.Duration(100 * time.Millisecond)
	MinMinAge   = units.Duration(time.Second)
	MinMaxRate  = units.Rate(1 << 20)
)

// DefaultConfig returns the [policy] defaults.
func DefaultConfig() Config {
	return Config{
		MigrateThreshold: 0.5,
		MigrateThreads:   1,
		Interval:         units.Duration(5 * time.Second),
		MinAge:           units.Duration(30 * time.Second),
		MaxRate:          0,
		Pin:              []string{"__cluster_metadata-*/**"},
	}
}

// Validate checks the values and reports every problem (joined with
// errors.Join); errors are *units.KeyError with keys such as
// "policy.migrate_threshold" ("policy.pin[2]" for the third pin glob).
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, units.Errorf(key, format, args...))
	}
	if t := c.MigrateThreshold; !((t > 0 && t <= 1) || t == -1) {
		bad("policy.migrate_threshold", "must be in (0, 1], or -1 to disable moves; got %v", t)
	}
	if c.MigrateThreads < 1 || c.MigrateThreads > MaxMigrateThreads {
		bad("policy.migrate_threads", "must be 1 to %d, got %d", MaxMigrateThreads, c.MigrateThreads)
	}
	if c.Interval < MinInterval {
		bad("policy.interval", "must be at least %v (each plan looks at every file of every tier), got %v",
			time.Duration(MinInterval), c.Interval)
	}
	switch {
	case c.MinAge < 0:
		bad("policy.min_age", "must not be negative, got %v", c.MinAge)
	case c.MinAge > 0 && c.MinAge < MinMinAge:
		bad("policy.min_age", "must be 0 (every file counts as sealed at once) or at least %v "+
			"(a file left alone for less may still be being written), got %v", time.Duration(MinMinAge), c.MinAge)
	}
	switch {
	case c.MaxRate < 0:
		bad("policy.max_rate", "must not be negative (0 is unlimited)")
	case c.MaxRate > 0 && c.MaxRate < MinMaxRate:
		bad("policy.max_rate", "must be 0 (unlimited) or at least %v (a move copies whole segments, "+
			"and no plan is made while one runs), got %v", MinMaxRate, c.MaxRate)
	}
	for i, g := range c.Pin {
		if err := CheckPinGlob(g); err != nil {
			bad(fmt.Sprintf("policy.pin[%d]", i), "%v", err)
		}
	}
	return errors.Join(errs...)
}

// CheckPinGlob checks a pin glob: a relative slash-separated path whose
// segments are path.Match patterns or "**", none empty, "." or "..".
func CheckPinGlob(g string) error {
	if g == "" {
		return fmt.Errorf("empty glob")
	}
	if strings.HasPrefix(g, "/") {
		return fmt.Errorf("glob %q must be relative to the mount root (no leading '/')", g)
	}
	for _, seg := range strings.Split(g, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("glob %q has an empty path segment", g)
		case seg == "." || seg == "..":
			// Files are named from the mount root without them, so such
			// a glob would never match.
			return fmt.Errorf("glob %q has a %q segment: write the path from the mount root without \".\" or \"..\"", g, seg)
		case seg == "**":
		case strings.Contains(seg, "**"):
			return fmt.Errorf("glob %q: \"**\" must be a whole path segment", g)
		default:
			if _, err := path.Match(seg, ""); err != nil {
				return fmt.Errorf("glob %q: bad pattern %q", g, seg)
			}
		}
	}
	return nil
}
