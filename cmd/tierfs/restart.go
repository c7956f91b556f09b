package main

import (
	"encoding/json"
	"flag"
	"fmt"

	"github.com/tierfs/tierfs/internal/supervisor"
)

func setupRestart(fs *flag.FlagSet) func([]string) int {
	asJSON := fs.Bool("json", false, "print the result as JSON")
	return func(args []string) int {
		if len(args) != 1 {
			return usageError(fs, "want exactly one MOUNTPOINT")
		}
		mp, err := canonicalPath(args[0])
		if err != nil {
			return fail("restart", err)
		}
		r, err := supervisor.Restart(mp)
		if err != nil {
			return fail("restart", err)
		}
		if *asJSON {
			b, _ := json.Marshal(r)
			fmt.Fprintln(stdout, string(b))
			return 0
		}
		fmt.Fprintf(stdout, "daemon replaced: pid %d -> %d (generation %d); the mount paused %.1f ms\n", r.OldPid, r.NewPid, r.Gen, r.PauseMs)
		return 0
	}
}
