// Command tierfs mounts a tiered filesystem for Kafka and talks to the
// daemons of mounted ones.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

const usageText = `tierfs: a tiered filesystem for Kafka

Usage:
  tierfs mount --config FILE [--debug] [--writeback-cache] [--io-uring] [--direct-io] MOUNTPOINT
        mount the tiers described in FILE on MOUNTPOINT and serve it in the
        foreground until it is unmounted or SIGINT/SIGTERM arrives; the
        flags override the file's [mount] writeback_cache, io_uring and
        direct_io
  tierfs check --config FILE [MOUNTPOINT]
        validate FILE (and MOUNTPOINT) and print the effective configuration
  tierfs status [--json] MOUNTPOINT
        show each tier's capacity, usage and file count, and the policy:
        moves queued and in flight, moves done, bytes moved, last errors,
        pins
  tierfs ls [--json] [-r] PATH...
        show which tier holds each file at or under PATH
  tierfs migrate --to TIER [--wait] PATH...
        move files (every file under a directory) to TIER now, ahead of the
        policy's moves (--tier TIER says the same); --wait shows their
        progress until they end; a file already there is said to be
  tierfs pin --tier TIER [--wait] PATH...
        keep files on TIER (moving them there), across restarts (--to TIER
        says the same)
  tierfs unpin PATH...
        let the policy move pinned files again
  tierfs umount [--lazy] [--timeout D] MOUNTPOINT
        unmount a tierfs and wait until its daemon has exited
  tierfs reload MOUNTPOINT
        make the daemon re-read its configuration file (as SIGHUP does) and
        apply thresholds, rates, threads, intervals, pins and the log level;
        an invalid file is refused and the running configuration stays
  tierfs restart [--json] [--binary FILE [--timeout D]] MOUNTPOINT
        replace the daemon of a mount made with [mount] supervisor = true:
        the new daemon takes the live mount over; prints the pause; with
        --binary the new daemon runs FILE (an upgrade; root's, writable by
        no one else), and if it does not serve within D the previous
        binary takes back
  tierfs plan [--config FILE | --live MOUNTPOINT] [--peak RATE] [--slow-bw RATE | --measure] [--burst DURATION] [--json]
        size the fast tier for bursts: how long one at the peak rate is
        absorbed, how long the reserve takes to drain, the ingest the tiers
        sustain, and the threshold that absorbs a burst of --burst
  tierfs version
        print the version, the source revision it was built from and the
        Go and go-fuse versions
  tierfs help [COMMAND]
        print this help, or a command's
  tierfs CONFIG MOUNTPOINT [-o OPTIONS]
        the form mount(8) runs for 'mount -t fuse.tierfs CONFIG MOUNTPOINT'
        and /etc/fstab (through mount.fuse3): mount, and return once the
        mount answers, the daemon running on detached; OPTIONS may hold
        writeback_cache, io_uring, direct_io (=true or =false) and debug

Run 'tierfs COMMAND -h' for a command's flags.
`

// command is one subcommand.
type command struct {
	name  string
	args  string // positional arguments, for the usage line
	short string
	// setup defines the flags and returns the function that runs the
	// command with the positional arguments; it returns the exit status.
	setup func(fs *flag.FlagSet) func(args []string) int
}

var commands []*command

func init() {
	commands = []*command{
		{name: "mount", args: "--config FILE [--debug] [--writeback-cache] [--io-uring] [--direct-io] MOUNTPOINT", short: "mount and serve a tierfs in the foreground", setup: setupMount},
		{name: "check", args: "--config FILE [MOUNTPOINT]", short: "validate a configuration and print it", setup: setupCheck},
		{name: "status", args: "[--json] MOUNTPOINT", short: "show the tiers of a mounted tierfs", setup: setupStatus},
		{name: "ls", args: "[--json] [-r] PATH...", short: "show which tier holds each file", setup: setupLs},
		{name: "migrate", args: "--to TIER [--wait] PATH...", short: "move files, or every file under a directory, to a tier now", setup: setupMigrate},
		{name: "pin", args: "--tier TIER [--wait] PATH...", short: "keep files on a tier (moving them there), across restarts", setup: setupPin},
		{name: "unpin", args: "PATH...", short: "let the policy move pinned files again", setup: setupUnpin},
		{name: "reload", args: "MOUNTPOINT", short: "make the daemon re-read its configuration file and apply it live", setup: setupReload},
		{name: "restart", args: "[--json] [--binary FILE [--timeout D]] MOUNTPOINT", short: "replace the daemon of a supervised mount, which stays mounted", setup: setupRestart},
		{name: "umount", args: "[--lazy] [--timeout D] MOUNTPOINT", short: "unmount a tierfs and wait until its daemon has exited", setup: setupUmount},
		{name: "plan", args: planArgs, short: planShort, setup: setupPlan},
		{name: "version", args: "", short: "print the version", setup: setupVersion},
	}
}

func findCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// stdout and stderr are where commands write; tests of run in-process may
// swap them.
var stdout, stderr io.Writer = os.Stdout, os.Stderr

func run(args []string, out, errw io.Writer) int {
	stdout, stderr = out, errw
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return 2
	}
	if isMountHelperForm(args) {
		return runMountHelper(args)
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && name == "help" {
			if c := findCommand(args[1]); c != nil {
				fs := newFlagSet(c)
				c.setup(fs)
				fs.SetOutput(stdout)
				fs.Usage()
				return 0
			}
			fmt.Fprintf(stderr, "tierfs: unknown command %q\n\n%s", args[1], usageText)
			return 2
		}
		fmt.Fprint(stdout, usageText)
		return 0
	case "-v", "-version", "--version":
		name = "version"
	}
	c := findCommand(name)
	if c == nil {
		fmt.Fprintf(stderr, "tierfs: unknown command %q\n\n%s", name, usageText)
		return 2
	}
	fs := newFlagSet(c)
	runFn := c.setup(fs)
	pos, err := parseInterspersed(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2 // the FlagSet printed the error and the usage
	}
	return runFn(pos)
}

func newFlagSet(c *command) *flag.FlagSet {
	fs := flag.NewFlagSet("tierfs "+c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: tierfs %s %s\n\n%s.\n", c.name, c.args, upperFirst(c.short))
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintf(w, "\nFlags:\n")
			printFlags(w, fs)
		}
	}
	return fs
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// parseInterspersed parses flags anywhere among the arguments (the flag
// package stops at the first positional one) and returns the positional
// arguments in order. Everything after "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError reports a wrong use of a command: the message, then the
// command's usage, on stderr; the exit status is 2.
func usageError(fs *flag.FlagSet, format string, a ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, a...))
	fs.Usage()
	return 2
}

// fail prints an error of a command and returns exit status 1. Each line
// of a multi-line error (several configuration problems) gets the prefix.
func fail(cmd string, err error) int {
	prefix := "tierfs: "
	if cmd != "" {
		prefix = "tierfs " + cmd + ": "
	}
	for _, line := range strings.Split(strings.TrimRight(err.Error(), "\n"), "\n") {
		fmt.Fprintf(stderr, "%s%s\n", prefix, line)
	}
	return 1
}
