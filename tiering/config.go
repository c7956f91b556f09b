package tiering

import (
	"github.com/tierfs/tierfs/internal/units"
)

// Tier types, fastest first.
const (
	TypePMem = "pmem"
	TypeNVMe = "nvme"
	TypeSSD  = "ssd"
	TypeHDD  = "hdd"
)

// TierConfig is one [[tier]] table.
type TierConfig struct {
	Name string `toml:"name"`
	Type string `toml:"type"`
	Path string `toml:"path"`
	// Capacity caps what tierfs stores on the tier; 0 means the backing
	// filesystem's size.
	Capacity units.ByteSize `toml:"capacity"`
	// MigrateThreshold overrides [policy] migrate_threshold for this tier;
	// nil means inherit.
	MigrateThreshold *float64 `toml:"migrate_threshold"`
}
