package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/tierfs/tierfs/internal/version"
)

func setupVersion(fs *flag.FlagSet) func([]string) int {
	return func(args []string) int {
		if len(args) > 0 {
			return usageError(fs, "unexpected arguments: %s", strings.Join(args, " "))
		}
		fmt.Fprint(stdout, version.Read().String())
		return 0
	}
}
