// Package pmem is the persistent-memory backend: a pool of preallocated
// segment files on a pmem tier and mmap writes.
package pmem

import (
	"errors"
	"math"
	"path"

	"github.com/tierfs/tierfs/internal/units"
)

// Config is the [pmem] table.
type Config struct {
	// PoolRatio is the fraction (0..1) of the pmem tier's capacity
	// preallocated as segment files.
	PoolRatio float64 `toml:"pool_ratio"`
	// SegmentSize is the size of one preallocated segment file.
	SegmentSize units.ByteSize `toml:"segment_size"`
	// PoolFiles is the shape of a file that takes a slot from the pool
	// when it is created on a pmem tier: a path.Match pattern over its
	// parent directory's name and its own, "dir/name". The default is a
	// Kafka log segment in a partition directory. Files of other shapes
	// are plain files on any tier.
	PoolFiles string `toml:"pool_files"`
}

// DefaultPoolFiles matches Kafka log segments: <topic>-<partition>/<offset>.log.
const DefaultPoolFiles = "*-[0-9]*/[0-9]*.log"

// Matches reports whether a file named name in a directory named dir is
// pool-shaped. A bad pattern (Validate refuses it) matches nothing.
func (c Config) Matches(dir, name string) bool {
	pat := c.PoolFiles
	if pat == "" {
		pat = DefaultPoolFiles
	}
	ok, err := path.Match(pat, dir+"/"+name)
	return err == nil && ok
}

// MinSegmentSize is the smallest segment_size: one page.
const MinSegmentSize = 4 << 10

// DefaultConfig returns the [pmem] defaults.
func DefaultConfig() Config {
	return Config{PoolRatio: 0.8, SegmentSize: 1 << 30, PoolFiles: DefaultPoolFiles}
}

// Validate checks the values and reports every problem (joined with
// errors.Join); errors are *units.KeyError with keys "pmem.pool_ratio",
// "pmem.segment_size" and "pmem.pool_files".
func (c Config) Validate() error {
	var errs []error
	if math.IsNaN(c.PoolRatio) || c.PoolRatio < 0 || c.PoolRatio > 1 {
		errs = append(errs, units.Errorf("pmem.pool_ratio", "must be in [0, 1], got %v", c.PoolRatio))
	}
	if c.SegmentSize < MinSegmentSize {
		errs = append(errs, units.Errorf("pmem.segment_size", "must be at least %s, got %s",
			units.ByteSize(MinSegmentSize), c.SegmentSize))
	}
	if _, err := path.Match(c.PoolFiles, "d/n"); err != nil {
		errs = append(errs, units.Errorf("pmem.pool_files", "bad pattern %q: %v", c.PoolFiles, err))
	}
	return errors.Join(errs...)
}
