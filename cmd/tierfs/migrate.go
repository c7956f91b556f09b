package main

// The client commands that act on the policy: migrate, pin, unpin and
// reload.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/units"
)

// target is one file named on the command line, located in its mount.
type target struct {
	arg  string // as given
	root string // the mount
	rel  string // relative to root, "/"-separated
}

// resolveTargets locates each path in its mount, printing those that are
// not in one; ok is false if any was not.
func resolveTargets(cmd string, args []string) (ts []target, ok bool) {
	ok = true
	for _, a := range args {
		root, rel, err := locate(a)
		if err != nil {
			fmt.Fprintf(stderr, "tierfs %s: %s: %v\n", cmd, a, err)
			ok = false
			continue
		}
		ts = append(ts, target{arg: a, root: root, rel: rel})
	}
	return ts, ok
}

// clients gives one control client per mount, and checks once per mount
// that it has the tier named (when tier is not "").
type clients struct {
	cmd   string
	tier  string
	byMnt map[string]*control.Client
	bad   map[string]error
}

func newClients(cmd, tier string) *clients {
	return &clients{cmd: cmd, tier: tier, byMnt: map[string]*control.Client{}, bad: map[string]error{}}
}

func (cs *clients) get(root string) (*control.Client, error) {
	if c, ok := cs.byMnt[root]; ok {
		return c, nil
	}
	if err, ok := cs.bad[root]; ok {
		return nil, err
	}
	c, err := control.NewClient(root)
	if err == nil && cs.tier != "" {
		err = checkTierOf(c, cs.tier)
	}
	if err != nil {
		cs.bad[root] = err
		// Say it once per mount, not once per file.
		fmt.Fprintf(stderr, "tierfs %s: %v\n", cs.cmd, err)
		return nil, err
	}
	cs.byMnt[root] = c
	return c, nil
}

// checkTierOf fails with the tiers there are when the mount has no tier
// named tier.
func checkTierOf(c *control.Client, tier string) error {
	ctx, cancel := context.WithTimeout(context.Background(), control.RequestTimeout)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	var names []string
	for _, t := range st.Tiers {
		if t.Name == tier {
			return nil
		}
		names = append(names, t.Name)
	}
	return fmt.Errorf("%s has no tier named %q (its tiers: %s)", c.Mountpoint(), tier, strings.Join(names, ", "))
}

// filesOf expands a directory to the files under it; a file is itself.
// Symlinks and other files that are not regular have no data to move:
// they are left out and counted in skipped.
func filesOf(c *control.Client, t target) (files []target, skipped skips, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), control.RequestTimeout)
	defer cancel()
	ents, err := c.List(ctx, t.rel, false)
	if err != nil {
		return nil, skips{}, notFoundErr(err)
	}
	if !(len(ents) == 1 && ents[0].Path == t.rel && !ents[0].IsDir) {
		if ents, err = c.List(ctx, t.rel, true); err != nil {
			return nil, skips{}, notFoundErr(err)
		}
	}
	for _, e := range ents {
		if e.IsDir {
			continue
		}
		var st unix.Stat_t
		// Asked of the mount; a file gone meanwhile is left to the daemon.
		if unix.Lstat(filepath.Join(t.root, filepath.FromSlash(e.Path)), &st) == nil {
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
			case unix.S_IFLNK:
				skipped.symlinks++
				continue
			default:
				skipped.special++
				continue
			}
		}
		files = append(files, target{arg: t.arg, root: t.root, rel: e.Path})
	}
	return files, skipped, nil
}

// skips counts the files filesOf left out.
type skips struct{ symlinks, special int }

// String says what was skipped, "" if nothing.
func (s skips) String() string {
	var parts []string
	if s.symlinks > 0 {
		parts = append(parts, plural(s.symlinks, "symlink"))
	}
	if s.special > 0 {
		parts = append(parts, plural(s.special, "special file")+" (FIFO, socket or device)")
	}
	if len(parts) == 0 {
		return ""
	}
	return "skipped " + strings.Join(parts, " and ") + ": only regular files have data to move"
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func notFoundErr(err error) error {
	var ae *control.APIError
	if errors.As(err, &ae) && ae.Code == 404 {
		return errors.New("no such file or directory")
	}
	return err
}

// queued is a move the command waits for.
type queued struct {
	c       *control.Client
	rel     string
	id      uint64
	queued  time.Time
	moving  time.Time // when first seen copying
	from    int64     // bytes done then
	last    control.JobResponse
	printed time.Time // of the last plain progress line
}

func setupMigrate(fs *flag.FlagSet) func([]string) int {
	to := tierFlag(fs, "to", "tier", "the `TIER` to move the files to (required)")
	wait := fs.Bool("wait", false, "wait until the moves end, showing their progress")
	return func(args []string) int {
		if *to == "" {
			return usageError(fs, "--to (or --tier) is required")
		}
		if len(args) == 0 {
			return usageError(fs, "want at least one PATH")
		}
		ts, ok := resolveTargets("migrate", args)
		status := 0
		if !ok {
			status = 1
		}
		cs := newClients("migrate", *to)
		var jobs []*queued
		for _, t := range ts {
			c, err := cs.get(t.root)
			if err != nil {
				status = 1
				continue
			}
			files, skipped, err := filesOf(c, t)
			if err != nil {
				fmt.Fprintf(stderr, "tierfs migrate: %s: %v\n", t.arg, err)
				status = 1
				continue
			}
			if msg := skipped.String(); msg != "" {
				fmt.Fprintf(stderr, "tierfs migrate: %s: %s\n", t.arg, msg)
			} else if len(files) == 0 {
				fmt.Fprintf(stderr, "tierfs migrate: %s: no files to move\n", t.arg)
			}
			for _, f := range files {
				ctx, cancel := context.WithTimeout(context.Background(), control.RequestTimeout)
				j, err := c.Migrate(ctx, f.rel, *to)
				cancel()
				if err != nil {
					fmt.Fprintf(stderr, "tierfs migrate: %s: %v\n", f.rel, fileErr(err, "migrate", f.rel))
					status = 1
					continue
				}
				if j.Already {
					fmt.Fprintf(stdout, "%s: already on %s\n", f.rel, *to)
					continue
				}
				if !*wait {
					fmt.Fprintf(stdout, "%s: queued to move to %s (job %d)\n", f.rel, *to, j.ID)
					continue
				}
				jobs = append(jobs, &queued{c: c, rel: f.rel, id: j.ID, queued: time.Now(), last: j})
			}
		}
		if *wait && len(jobs) > 0 {
			if rc := waitJobs("migrate", jobs); rc != 0 {
				status = rc
			}
		}
		return status
	}
}

func setupPin(fs *flag.FlagSet) func([]string) int {
	tier := tierFlag(fs, "tier", "to", "the `TIER` to keep the files on (required)")
	wait := fs.Bool("wait", false, "wait until the files are on the tier, showing the moves' progress")
	return func(args []string) int {
		if *tier == "" {
			return usageError(fs, "--tier (or --to) is required")
		}
		if len(args) == 0 {
			return usageError(fs, "want at least one PATH")
		}
		ts, ok := resolveTargets("pin", args)
		status := 0
		if !ok {
			status = 1
		}
		cs := newClients("pin", *tier)
		var jobs []*queued
		for _, t := range ts {
			c, err := cs.get(t.root)
			if err != nil {
				status = 1
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), control.RequestTimeout)
			p, err := c.Pin(ctx, t.rel, *tier)
			cancel()
			if err != nil {
				fmt.Fprintf(stderr, "tierfs pin: %s: %v\n", t.arg, fileErr(notFoundErr(err), "pin", t.rel))
				status = 1
				continue
			}
			if p.Job.Finished && p.Job.Already {
				fmt.Fprintf(stdout, "%s: pinned to %s, where it is already\n", p.Path, p.Tier)
			} else {
				fmt.Fprintf(stdout, "%s: pinned to %s\n", p.Path, p.Tier)
			}
			if *wait && !p.Job.Finished {
				jobs = append(jobs, &queued{c: c, rel: p.Path, id: p.Job.ID, queued: time.Now(), last: p.Job})
			} else if p.Job.State == control.JobFailed {
				fmt.Fprintf(stderr, "tierfs pin: %s: move to %s failed: %s\n", p.Path, *tier, p.Job.Error)
				status = 1
			}
		}
		if len(jobs) > 0 {
			if rc := waitJobs("pin", jobs); rc != 0 {
				status = rc
			}
		}
		return status
	}
}

func setupUnpin(fs *flag.FlagSet) func([]string) int {
	return func(args []string) int {
		if len(args) == 0 {
			return usageError(fs, "want at least one PATH")
		}
		ts, ok := resolveTargets("unpin", args)
		status := 0
		if !ok {
			status = 1
		}
		cs := newClients("unpin", "")
		for _, t := range ts {
			c, err := cs.get(t.root)
			if err != nil {
				status = 1
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), control.RequestTimeout)
			err = c.Unpin(ctx, t.rel)
			cancel()
			if err != nil {
				fmt.Fprintf(stderr, "tierfs unpin: %s: %v\n", t.arg, fileErr(err, "unpin", t.rel))
				status = 1
				continue
			}
			fmt.Fprintf(stdout, "%s: unpinned\n", t.rel)
		}
		return status
	}
}

func setupReload(fs *flag.FlagSet) func([]string) int {
	return func(args []string) int {
		if len(args) != 1 {
			return usageError(fs, "want exactly one MOUNTPOINT")
		}
		c, err := clientFor(args[0])
		if err != nil {
			return fail("reload", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), control.RequestTimeout)
		defer cancel()
		res, err := c.Reload(ctx)
		if err != nil {
			rc := fail("reload", err)
			var ae *control.APIError
			if errors.As(err, &ae) && ae.Code == 400 {
				fmt.Fprintln(stderr, "tierfs reload: refused; the daemon keeps its running configuration")
			}
			return rc
		}
		fmt.Fprintf(stdout, "configuration reloaded from %s\n", res.Config)
		if len(res.Changes) == 0 {
			fmt.Fprintln(stdout, "  nothing changed")
		}
		for _, ch := range res.Changes {
			fmt.Fprintf(stdout, "  %s\n", ch)
		}
		for _, ch := range res.Restart {
			fmt.Fprintf(stdout, "  not applied until the next mount: %s\n", ch)
		}
		return 0
	}
}

// clientFor finds the daemon of the mount at or above path.
func clientFor(path string) (*control.Client, error) {
	root, _, err := locate(path)
	if err != nil {
		// Not in mountinfo (another mount namespace?): the socket may
		// still answer for the path as given.
		if root, err = canonicalPath(path); err != nil {
			return nil, err
		}
	}
	return control.NewClient(root)
}

// waitJobs polls the jobs until they end, showing their progress: one
// line redrawn on a terminal, plain lines otherwise. It returns 1 if a
// move failed.
func waitJobs(cmd string, jobs []*queued) int {
	tty := false
	if f, ok := stdout.(*os.File); ok {
		tty = isTerminal(f)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	every := 250 * time.Millisecond
	if tty {
		every = 100 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	status := 0
	drawn := false
	clear := func() {
		if drawn {
			fmt.Fprint(stdout, "\r\033[K")
			drawn = false
		}
	}
	for {
		var left []*queued
		for _, q := range jobs {
			rctx, cancel := context.WithTimeout(ctx, control.RequestTimeout)
			j, err := q.c.Job(rctx, q.id)
			cancel()
			if ctx.Err() != nil {
				break
			}
			if err != nil {
				clear()
				fmt.Fprintf(stderr, "tierfs %s: %s: %v\n", cmd, q.rel, err)
				status = 1
				continue
			}
			now := time.Now()
			if j.State == control.JobMoving && q.moving.IsZero() {
				q.moving, q.from = now, j.BytesDone
			}
			q.last = j
			switch j.State {
			case control.JobDone:
				clear()
				if j.Already {
					fmt.Fprintf(stdout, "%s: already on %s\n", q.rel, j.To)
					break
				}
				// The copy's own time: not the time spent queued.
				took := time.Duration(j.MoveMs) * time.Millisecond
				fmt.Fprintf(stdout, "%s: moved to %s (%s in %s%s)\n", q.rel, j.To,
					units.Human(j.BytesTotal), took, rateText(", ", q.rate(now)))
			case control.JobFailed:
				clear()
				fmt.Fprintf(stderr, "tierfs %s: %s: move to %s failed: %s\n", cmd, q.rel, j.To, j.Error)
				status = 1
			default:
				left = append(left, q)
			}
		}
		if ctx.Err() != nil {
			clear()
			fmt.Fprintf(stderr, "tierfs %s: interrupted; the moves go on in the daemon (see tierfs status)\n", cmd)
			return 130
		}
		jobs = left
		if len(jobs) == 0 {
			return status
		}
		now := time.Now()
		if tty {
			fmt.Fprint(stdout, "\r"+progressLine(jobs, now, terminalWidth())+"\033[K")
			drawn = true
		} else {
			for _, q := range jobs {
				// A line a second, from the first second of copying on: a
				// move that ends at once (or finds the file already there)
				// prints none.
				if q.last.State == control.JobMoving && !q.moving.IsZero() && now.Sub(q.moving) >= time.Second && now.Sub(q.printed) >= time.Second {
					q.printed = now
					fmt.Fprintf(stdout, "%s: %d%% (%s of %s%s) to %s\n", q.rel, percent(q.last),
						units.Human(q.last.BytesDone), units.Human(q.last.BytesTotal), rateText(", ", q.rate(now)), q.last.To)
				}
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
}

// rate is the job's copy speed in bytes per second: the bytes copied
// over the time the copy has run, as the daemon counts it (the time
// queued is not in it); 0 until a millisecond of copying.
func (q *queued) rate(time.Time) float64 {
	if q.last.MoveMs <= 0 {
		return 0
	}
	return float64(q.last.BytesDone) / (float64(q.last.MoveMs) / 1000)
}

// rateText is sep and the rate, or "" while there is none to show.
func rateText(sep string, r float64) string {
	if r <= 0 {
		return ""
	}
	return sep + units.Human(int64(r)) + "/s"
}

func percent(j control.JobResponse) int64 {
	if j.BytesTotal <= 0 {
		return 0
	}
	return min(j.BytesDone*100/j.BytesTotal, 100)
}

// progressLine shows the first move under way (or that the moves wait in
// the queue) in at most width columns.
func progressLine(jobs []*queued, now time.Time, width int) string {
	var cur *queued
	moving := 0
	for _, q := range jobs {
		if q.last.State == control.JobMoving {
			if cur == nil {
				cur = q
			}
			moving++
		}
	}
	if cur == nil {
		return fmt.Sprintf("waiting: %d move(s) queued", len(jobs))
	}
	const barWidth = 20
	filled := int(percent(cur.last) * barWidth / 100)
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", barWidth-filled)
	if filled > 0 && filled < barWidth {
		bar = strings.Repeat("=", filled-1) + ">" + strings.Repeat(" ", barWidth-filled)
	}
	tail := fmt.Sprintf(" [%s] %3d%% %s/%s%s", bar, percent(cur.last),
		units.Human(cur.last.BytesDone), units.Human(cur.last.BytesTotal), rateText(" ", cur.rate(now)))
	if more := len(jobs) - 1; more > 0 {
		tail += fmt.Sprintf(" (+%d)", more)
	}
	path := cur.rel
	if width > 0 {
		if room := width - 1 - len(tail); room < len(path) {
			if room < 4 {
				return strings.TrimSpace(tail)
			}
			path = "..." + path[len(path)-(room-3):]
		}
	}
	return path + tail
}

// terminalWidth is stdout's width in columns, or 0 if unknown.
func terminalWidth() int {
	f, ok := stdout.(*os.File)
	if !ok {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// tierFlag defines --name and its alias --alias for one tier: migrate
// says --to and pin --tier, and each takes the other's.
func tierFlag(fs *flag.FlagSet, name, alias, usage string) *string {
	v := fs.String(name, "", usage)
	fs.StringVar(v, alias, "", "the same as --"+name+" `TIER`")
	return v
}

// fileErr is err as printed after "tierfs OP: REL: ": the daemon's
// message begins "OP REL: " too, which would name the file twice.
func fileErr(err error, op, rel string) error {
	var ae *control.APIError
	if errors.As(err, &ae) {
		if msg, ok := strings.CutPrefix(ae.Msg, op+" "+rel+": "); ok {
			return errors.New(msg)
		}
	}
	return err
}
