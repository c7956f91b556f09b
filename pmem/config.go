// Package pmem is the persistent-memory backend: a pool of preallocated
// segment files on a pmem tier and mmap writes.
package pmem

import (
	"math"

	"github.com/tierfs/tierfs/tiering/units"
)

// Config is the [pmem] table.
type Config struct {
	// PoolRatio is the fraction (0..1) of the pmem tier's capacity
	// preallocated as segment files.
	PoolRatio float64 `toml:"pool_ratio"`
	// SegmentSize is the size of one preallocated segment file.
	SegmentSize units.ByteSize `toml:"segment_size"`
}

// MinSegmentSize is the smallest segment_size: one page.
const MinSegmentSize = 4 << 10

// DefaultConfig returns the [pmem] defaults.
func DefaultConfig() Config {
	return Config{PoolRatio: 0.8, SegmentSize: 1 << 30}
}

// Validate checks the values; errors are *units.KeyError with keys
// "pmem.pool_ratio" and "pmem.segment_size".
func (c Config) Validate() error {
	if math.IsNaN(c.PoolRatio) || c.PoolRatio < 0 || c.PoolRatio > 1 {
		return units.Errorf("pmem.pool_ratio", "must be in [0, 1], got %v", c.PoolRatio)
	}
	if c.SegmentSize < MinSegmentSize {
		return units.Errorf("pmem.segment_size", "must be at least %s, got %s",
			units.ByteSize(MinSegmentSize), c.SegmentSize)
	}
	return nil
}
