package main

import (
	"flag"
	"fmt"
	"path/filepath"

	"github.com/tierfs/tierfs/internal/config"
	"github.com/tierfs/tierfs/tiering"
)

func setupCheck(fs *flag.FlagSet) func([]string) int {
	cfgPath := fs.String("config", "", "the configuration `FILE` (TOML) to check (required)")
	return func(args []string) int {
		if *cfgPath == "" {
			return usageError(fs, "--config is required")
		}
		if len(args) > 1 {
			return usageError(fs, "want at most one MOUNTPOINT")
		}
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			return fail("check", err)
		}
		if len(args) == 1 {
			mp, err := filepath.Abs(args[0])
			if err != nil {
				return fail("check", err)
			}
			if err := cfg.CheckMountpoint(mp); err != nil {
				return fail("check", err)
			}
		}
		fmt.Fprint(stdout, cfg.String())
		for _, t := range cfg.Tiers {
			if who := tiering.LockHolder(t.Path); who != "" {
				fmt.Fprintf(stdout, "tier %s (%s) is in use by a tierfs daemon: %s\n", t.Name, t.Path, who)
			}
		}
		return 0
	}
}
