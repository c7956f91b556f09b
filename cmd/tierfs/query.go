package main

// The client commands: status and ls.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	tfs "github.com/tierfs/tierfs/fs"
	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/fusedev"
	"github.com/tierfs/tierfs/internal/supervisor"
	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/mountutil"
	"github.com/tierfs/tierfs/policy/engine"
	"github.com/tierfs/tierfs/tiering"
)

// canonicalPath is path made absolute (against the working directory) and
// clean, with symlinks resolved where that is possible.
func canonicalPath(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if resolved, err := filepath.EvalSymlinks(abs); err == nil {
		return resolved, nil
	}
	return abs, nil
}

// locate finds the tierfs mount holding path. It returns the mount root
// and path relative to it ("" for the root itself, "/"-separated).
func locate(path string) (root, rel string, err error) {
	canon, err := canonicalPath(path)
	if err != nil {
		return "", "", err
	}
	m, err := mountutil.FindTierfsMount(canon)
	if err != nil {
		return "", "", err
	}
	r, err := filepath.Rel(m.Mountpoint, canon)
	if err != nil || r == ".." || strings.HasPrefix(r, "../") {
		return "", "", fmt.Errorf("%s is not inside the tierfs mount %s", canon, m.Mountpoint)
	}
	if r == "." {
		r = ""
	}
	return m.Mountpoint, filepath.ToSlash(r), nil
}

func setupStatus(fs *flag.FlagSet) func([]string) int {
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	return func(args []string) int {
		if len(args) != 1 {
			return usageError(fs, "want exactly one MOUNTPOINT")
		}
		root, _, err := locate(args[0])
		if err != nil {
			// Not in mountinfo (another mount namespace?): the
			// socket may still answer for the path as given.
			if root, err = canonicalPath(args[0]); err != nil {
				return fail("status", err)
			}
		}
		c, err := control.NewClient(root)
		if err != nil {
			return fail("status", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), control.RequestTimeout)
		defer cancel()
		st, err := c.Status(ctx)
		if err != nil {
			return fail("status", err)
		}
		st.Supervisor = askSupervisor(root)
		if *asJSON {
			return printJSON(st)
		}
		printStatus(st)
		return 0
	}
}

func printJSON(v any) int {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fail("", err)
	}
	fmt.Fprintf(stdout, "%s\n", b)
	return 0
}

func printStatus(st control.StatusResponse) {
	fmt.Fprintf(stdout, "Mountpoint: %s\n\n", st.Mountpoint)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "TIER\tTYPE\tPATH\tCAPACITY\tUSED\tUSE%\tFILES")
	for _, t := range st.Tiers {
		use := "-"
		if t.CapacityBytes > 0 {
			// Rounded up, as df does: a tier in use never shows 0%.
			use = strconv.FormatInt((t.UsedBytes*100+t.CapacityBytes-1)/t.CapacityBytes, 10) + "%"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", t.Name, t.Type, t.Path,
			units.Human(t.CapacityBytes), units.Human(t.UsedBytes), use, t.Files)
	}
	tw.Flush()
	for _, t := range st.Tiers {
		if p := t.Pool; p != nil {
			fmt.Fprintf(stdout, "PMem pool on %s: %d free slots of %s (%s free, target %d slots), %s taken by segments since mount.\n",
				t.Name, p.FreeSlots, units.Human(p.SegmentBytes), units.Human(p.FreeBytes), p.TargetSlots, units.Human(p.UsedBytes))
		}
	}
	if r := st.Requests; r != nil {
		if r.Transport == "io_uring" {
			fmt.Fprintf(stdout, "Requests: over io_uring, %d queues (one per CPU) of %d threads, %d answered.\n",
				r.Queues, r.ThreadsPerQueue, r.ServedIOUring)
		} else if r.SpliceWrites {
			fmt.Fprintf(stdout, "Requests: through %s; writes of %d KiB and more spliced to the tiers, %d so far.\n", r.Transport, fusedev.SpliceMin>>10, r.SplicedWrites)
		} else {
			fmt.Fprintf(stdout, "Requests: through %s.\n", r.Transport)
		}
		if d, ok := dataPathText[r.DataPath]; ok {
			fmt.Fprintf(stdout, "Data: %s.\n", d)
		}
		if r.Passthrough {
			fmt.Fprintf(stdout, "Passthrough: pinned files opened read-only are read by the kernel from their tier; %d such handles open, %d given since the mount.\n",
				r.PassthroughOpen, r.PassthroughGiven)
		}
	}
	if d := st.Daemon; d != nil {
		fmt.Fprintf(stdout, "Daemon: pid %d, %s, serving since %s.\n", d.Pid, d.Version, d.Started.Format(time.RFC3339))
	}
	if sv := st.Supervisor; sv != nil {
		fmt.Fprintf(stdout, "Supervisor: daemon generation %d, %d takeovers", sv.Generation, sv.Takeovers)
		if n := len(sv.PausesMs); n > 0 {
			fmt.Fprintf(stdout, " (last pause %.1f ms)", sv.PausesMs[n-1])
		}
		if sv.Binary != "" {
			fmt.Fprintf(stdout, "; daemons start from %s", sv.Binary)
		}
		fmt.Fprintln(stdout, ".")
	}
	fmt.Fprintf(stdout, "\nOpen files: %d.\n", st.OpenFiles)
	printMoves(st.Moves)
	if st.Policy != nil {
		printPolicy(st)
	}
}

// printMoves is the move ledger in `tierfs status`: every move since the
// mount, the policy's, the operator's and the spills, counted once.
func printMoves(m tiering.MoveStats) {
	fmt.Fprintf(stdout, "Moves: %d moved (%s), %d skipped, %d failed, %d in flight; %d spills.\n",
		m.Moved, units.Human(m.BytesMoved), m.Skipped, m.Failed, m.InFlight, m.Spills)
	if m.Started > 0 {
		tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  REASON\tSTARTED\tMOVED\tSKIPPED\tFAILED\tBYTES")
		for _, r := range m.ByReason {
			if r.Started == 0 {
				continue
			}
			var skipped int64
			for o, n := range r.Outcomes {
				if o != tiering.OutcomeMoved && o != tiering.OutcomeFailed {
					skipped += n
				}
			}
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%s\n", r.Reason, r.Started, r.Outcomes[tiering.OutcomeMoved],
				skipped, r.Outcomes[tiering.OutcomeFailed], units.Human(r.BytesMoved))
		}
		tw.Flush()
	}
	if len(m.LastErrors) > 0 {
		fmt.Fprintln(stdout, "  Last move errors:")
		for _, e := range m.LastErrors {
			fmt.Fprintf(stdout, "    %s\n", e)
		}
	}
}

// dataPathText explains control.RequestsStatus.DataPath in `tierfs status`.
var dataPathText = map[string]string{
	tfs.DataPageCache: "through the page cache (writes sent to the tiers at once, reads cached)",
	tfs.DataWriteback: "write-back cache (writes gathered by the kernel; what is not fsynced is lost if the daemon dies)",
	tfs.DataDirectIO:  "direct I/O (read and write bypass the page cache; sendfile and mmap use it)",
}

// printPolicy is the "Policy:" section of `tierfs status`.
func printPolicy(st control.StatusResponse) {
	p := st.Policy
	state := "enabled"
	if !p.Enabled {
		state = "disabled (migrate_threshold = -1)"
	}
	rate := "unlimited"
	if p.MaxRate > 0 {
		rate = p.MaxRate.String()
	}
	fmt.Fprintf(stdout, "\nPolicy: %s; every %s, files idle for %s, %d thread(s), max rate %s.\n",
		state, p.Interval, p.MinAge, p.MigrateThreads, rate)
	var th []string
	for _, t := range st.Tiers {
		if v, ok := p.Thresholds[t.Name]; ok {
			s := strconv.FormatFloat(v, 'f', -1, 64)
			if v == -1 {
				s = "off"
			}
			th = append(th, t.Name+" "+s)
		}
	}
	fmt.Fprintf(stdout, "  Thresholds: %s\n", strings.Join(th, ", "))
	if len(p.PinGlobs) > 0 {
		fmt.Fprintf(stdout, "  Pin globs: %s\n", strings.Join(p.PinGlobs, ", "))
	}
	fmt.Fprintf(stdout, "  Queue: %d queued, %d in flight; copies waited %s for max rate.\n",
		len(p.Queued), len(p.InFlight), (time.Duration(p.ThrottledSeconds * 1e9)).Round(time.Millisecond))
	if len(p.InFlight)+len(p.Queued) > 0 {
		tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  STATE\tPATH\tTO\tPROGRESS\tREASON")
		row := func(state string, j engine.JobStatus) {
			prog := "-"
			if j.Total > 0 {
				prog = fmt.Sprintf("%d%% of %s", min(j.Done*100/j.Total, 100), units.Human(j.Total))
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", state, j.Path, j.To, prog, j.Reason)
		}
		for _, j := range p.InFlight {
			row("moving", j)
		}
		const maxQueued = 20
		for i, j := range p.Queued {
			if i == maxQueued {
				fmt.Fprintf(tw, "  ...\t%d more queued\t\t\t\n", len(p.Queued)-maxQueued)
				break
			}
			row("queued", j)
		}
		tw.Flush()
	}
	if len(p.PlanErrors) > 0 {
		fmt.Fprintln(stdout, "  Last planning errors:")
		for _, e := range p.PlanErrors {
			fmt.Fprintf(stdout, "    %s\n", e)
		}
	}
	if len(p.Pins) > 0 {
		fmt.Fprintln(stdout, "  Pins:")
		tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
		for _, path := range sortedKeys(p.Pins) {
			fmt.Fprintf(tw, "    %s\t%s\n", path, p.Pins[path])
		}
		tw.Flush()
	}
}

// lsEntry is one file in `tierfs ls --json`.
type lsEntry struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	Tier string `json:"tier"`
}

func setupLs(fs *flag.FlagSet) func([]string) int {
	asJSON := fs.Bool("json", false, "print a JSON array of the files instead of a table")
	recursive := fs.Bool("r", false, "list directories recursively")
	return func(args []string) int {
		if len(args) == 0 {
			args = []string{"."}
		}
		status := 0
		var all []tiering.Entry
		for _, p := range args {
			ents, err := lsOne(p, *recursive)
			if err != nil {
				fmt.Fprintf(stderr, "tierfs ls: %s: %v\n", p, err)
				status = 1
				continue
			}
			all = append(all, ents...)
		}
		if *asJSON {
			files := []lsEntry{}
			for _, e := range all {
				if !e.IsDir {
					files = append(files, lsEntry{Path: e.Path, Size: e.Size, Tier: e.Tier})
				}
			}
			if rc := printJSON(files); rc != 0 {
				return rc
			}
			return status
		}
		if len(all) > 0 {
			tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "TIER\tSIZE\tPATH")
			for _, e := range all {
				if e.IsDir {
					fmt.Fprintf(tw, "%s\t%s\t%s/\n", e.Tier, "-", e.Path)
				} else {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Tier, units.Human(e.Size), e.Path)
				}
			}
			tw.Flush()
		}
		return status
	}
}

func lsOne(path string, recursive bool) ([]tiering.Entry, error) {
	root, rel, err := locate(path)
	if err != nil {
		return nil, err
	}
	c, err := control.NewClient(root)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), control.RequestTimeout)
	defer cancel()
	ents, err := c.List(ctx, rel, recursive)
	var ae *control.APIError
	if errors.As(err, &ae) && ae.Code == 404 {
		return nil, errors.New("no such file or directory")
	}
	return ents, err
}

// askSupervisor is what the supervisor of a supervised mount says of its
// daemons; nil when the mount has none, or its socket refuses the caller
// (it is root's alone).
func askSupervisor(mountpoint string) *control.SupervisorStatus {
	sock, err := supervisor.SocketPath(mountpoint)
	if err != nil {
		return nil
	}
	if _, err := os.Stat(sock); err != nil {
		return nil
	}
	s, err := supervisor.Query(mountpoint)
	if err != nil {
		return nil
	}
	return &control.SupervisorStatus{Generation: s.Gen, Takeovers: s.Takeovers, PausesMs: s.Pauses, Binary: s.Binary}
}
