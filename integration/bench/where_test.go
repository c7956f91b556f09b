package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/integration"
	"github.com/tierfs/tierfs/integration/benchkit"
)

// TestWhereTimeGoes accounts for the time of each operation of the
// judged micro workloads (issue 19, item 3: "why, from a profile") on raw
// tmpfs, tierfs with the defaults and mergerfs: per write(2), per MiB
// read, per small file, how long the caller waited, how much CPU the
// caller, the FUSE daemon and the rest of the machine (the kernel's own
// threads, interrupts) spent, how long the CPUs sat idle, and how often a
// CPU went idle (a halt: on a VM, leaving the guest) and the machine
// switched tasks. Read from the kernel's counters around each measured
// section (cpuidle, schedstat, /proc/stat), with no profiler attached.
//
//	TIERFS_BENCH_RUNS      rounds (default 5)
//	TIERFS_WHERE_HALTPOLL  a comma list of values for the cpuidle-haltpoll
//	                       driver's guest_halt_poll_ns to run the rounds
//	                       under, each in turn, restored after (default:
//	                       the machine's as found, untouched)
//	TIERFS_WHERE_PERF      a directory: after the rounds, one more round
//	                       of each workload on tierfs and mergerfs under
//	                       `perf record -a -g` (not in the figures), and
//	                       each one's `perf report` there
//
//	TIERFS_BENCH=1 go test -count=1 -v -run TestWhereTimeGoes ./integration/bench/
func TestWhereTimeGoes(t *testing.T) {
	fsBenchSetup(t, map[string]string{"mergerfs": "mergerfs"})
	runs := microEnvInt(t, "TIERFS_BENCH_RUNS", 5)
	const seq, appendSize, read, small = 512 << 20, 128 << 20, 256 << 20, 5000
	tmpfsSize := fmt.Sprintf("%dm", (seq+seq/2)>>20+256)
	policy := "\n[policy]\nmigrate_threshold = -1\ninterval = \"1h\"\n"
	dir := integration.WorkDir(t)
	fs := mountTierfsDefaults(t, "tierfs", filepath.Join(dir, "tierfs"), integration.TierfsOptions{
		FastSize: tmpfsSize, Extra: policy}, "", transportDevFuse, true)
	mkdir := func(p string) string { return mkdirAll(t, p) }
	mfsBranch := mkdir(filepath.Join(fs.Fast, "bench-mergerfs"))
	mfsSlow := mkdir(filepath.Join(dir, "mergerfs-slow"))
	mfsMnt := filepath.Join(dir, "mergerfs-mnt")
	mountMergerfs(t, mfsMnt, mfsBranch, mfsSlow)
	mfsPid := benchkit.PidOf("mergerfs", mfsMnt)
	if mfsPid == 0 {
		t.Fatalf("no mergerfs process for %s", mfsMnt)
	}
	targets := []whereTarget{
		{microTarget: microTarget{name: "raw", dir: mkdir(filepath.Join(fs.Fast, "bench-raw"))}},
		{microTarget: microTarget{name: "tierfs", dir: mkdir(filepath.Join(fs.Mnt, "bench-tierfs")), mnt: fs.Mnt,
			place: &benchkit.Placement{Target: "tierfs", Fast: fs.FastData, Others: []string{fs.SlowData}}}, daemon: fs.Pid},
		{microTarget: microTarget{name: "mergerfs", dir: mkdir(filepath.Join(mfsMnt, "bench-mergerfs")), mnt: mfsMnt,
			place: &benchkit.Placement{Target: "mergerfs", Fast: mfsBranch, Others: []string{mfsSlow}}},
			daemon: func() int { return mfsPid }},
	}
	workloads := whereWorkloads(seq, appendSize, read, small)

	polls := []string{""}
	if v := os.Getenv("TIERFS_WHERE_HALTPOLL"); v != "" {
		polls = strings.Split(v, ",")
		for _, p := range polls {
			if _, err := strconv.ParseUint(p, 10, 64); err != nil {
				t.Fatalf("TIERFS_WHERE_HALTPOLL: %q is not a number of nanoseconds", p)
			}
		}
	}
	found, haveHaltPoll := haltPoll()
	if len(polls) > 1 || polls[0] != "" {
		if !haveHaltPoll {
			t.Fatalf("TIERFS_WHERE_HALTPOLL: this machine has no %s (not a KVM guest with cpuidle-haltpoll)", haltPollParam)
		}
		t.Cleanup(func() { setHaltPoll(t, found) })
	}
	for _, tg := range targets {
		if _, err := microSeqWrite(tg.dir, seq/8, 1<<20, tg.placed); err != nil {
			t.Fatalf("warm-up on %s: %v", tg.name, err)
		}
	}

	var md strings.Builder
	md.WriteString("## Where the time of an operation goes\n\n")
	md.WriteString("The judged micro workloads on raw tmpfs, tierfs with the defaults (supervised, `/dev/fuse`) and mergerfs " +
		"over the same tmpfs, accounted for from the kernel's counters around each measured section, with no profiler " +
		"attached (`TestWhereTimeGoes`). Per operation (a `write(2)`, a MiB read, a small file), medians of the rounds: " +
		"how long the caller waited (*wall*); the CPU time of the caller (the test's process), of the FUSE daemon " +
		"(tierfs's serving daemon, mergerfs) and of everything else (*rest*: the kernel's threads and interrupts, the " +
		"machine's busy time less the other two); the CPUs' idle time (*idle*, summed over the CPUs); how often a CPU " +
		"went idle (*idles*: on a VM with cpuidle-haltpoll, each one a halt that leaves the guest, and a wake-up of a " +
		"halted CPU is an interrupt through the host); and the machine's task switches (*switches*). Wall × CPUs = " +
		"caller + daemon + rest + idle, up to the counters' rounding.\n\n")
	for _, p := range polls {
		label := "guest_halt_poll_ns as found"
		if p != "" {
			setHaltPoll(t, p)
			label = "guest_halt_poll_ns = " + p
		}
		cur, _ := haltPoll()
		if !haveHaltPoll {
			label = "no cpuidle-haltpoll driver"
		} else if p == "" {
			label += " (" + cur + ")"
		}
		res := map[string]map[string][]whereSample{}
		for _, w := range workloads {
			res[w.name] = map[string][]whereSample{}
			for r := 0; r < runs; r++ {
				for i := range targets {
					tg := targets[inTurn(r, i, len(targets))]
					unix.Sync()
					s, err := w.measure(tg)
					if err != nil {
						t.Fatalf("%s on %s (run %d, %s): %v", w.name, tg.name, r+1, label, err)
					}
					res[w.name][tg.name] = append(res[w.name][tg.name], s)
					t.Logf("%s, run %d, %-28s %-9s %s", label, r+1, w.name, tg.name, s)
				}
			}
		}
		fmt.Fprintf(&md, "### %s\n\n", label)
		var rows [][]string
		for _, w := range workloads {
			for _, tg := range targets {
				rows = append(rows, whereRow(w, tg.name, res[w.name][tg.name]))
			}
		}
		md.WriteString(benchkit.Table([]string{"workload, per operation", "target", "rate", "wall µs", "caller CPU µs",
			"daemon CPU µs", "rest CPU µs", "idle µs", "idles", "switches"}, rows))
		md.WriteString("\n")
	}
	if perfDir := os.Getenv("TIERFS_WHERE_PERF"); perfDir != "" {
		if haveHaltPoll {
			setHaltPoll(t, found) // the profiles are of the machine as found
		}
		wherePerf(t, perfDir, workloads, targets[1:])
		fmt.Fprintf(&md, "System-wide profiles of one more round of each workload on tierfs and mergerfs (`perf record -a -g`, "+
			"not in the figures above, with guest_halt_poll_ns as found) were written to `TIERFS_WHERE_PERF`.\n\n")
	}
	st := requireSupervision(t, "tierfs", requireTransport(t, "tierfs", fs, transportDevFuse), true)
	requireNoTakeover(t, "tierfs", st)
	if lines := fs.ErrorLines(); len(lines) > 0 {
		t.Errorf("tierfs logged errors:\n%s", strings.Join(lines, "\n"))
	}
	fmt.Fprintf(&md, "%d rounds, each running every target once in turns (raw, tierfs, mergerfs, then the other way). "+
		"Rerun: `TIERFS_BENCH=1 go test -count=1 -v -run '^TestWhereTimeGoes$' ./integration/bench/` "+
		"(`TIERFS_WHERE_HALTPOLL=0,200000` runs the rounds under each value of the guest's halt polling in turn).\n", runs)
	t.Logf("\n%s", md.String())
	if err := benchkit.Fragment(benchkit.ReportRoot(integration.RepoRoot(t)), "where", md.String()); err != nil {
		t.Fatal(err)
	}
}

type whereTarget struct {
	microTarget
	daemon func() int // the FUSE daemon's pid; nil for raw
}

// whereWorkload is one judged workload: setup (untimed, unaccounted),
// then the measured section, then the check of where its files went.
type whereWorkload struct {
	name, op, unit string
	ops            int64
	perOp          float64 // the rate's unit per operation
	setup          func(tg whereTarget) error
	run            func(tg whereTarget) error
	after          func(tg whereTarget) error
}

func whereWorkloads(seq, appendSize, read int64, small int) []whereWorkload {
	file := func(tg whereTarget, name string) string { return filepath.Join(tg.dir, name) }
	check := func(name string, size int64) func(tg whereTarget) error {
		return func(tg whereTarget) error {
			path := file(tg, name)
			return errors.Join(tg.placed(path, size), os.Remove(path))
		}
	}
	return []whereWorkload{
		{name: "1 MiB sequential write", op: "write(2) of 1 MiB", unit: "MB/s", ops: seq >> 20, perOp: 1 << 20,
			run: func(tg whereTarget) error {
				_, err := microWrite(file(tg, "seq"), seq, 1<<20, 0)
				return err
			}, after: check("seq", seq)},
		{name: "16 KiB appends, fsync every 1 MiB", op: "write(2) of 16 KiB", unit: "MB/s", ops: appendSize >> 14, perOp: 16 << 10,
			run: func(tg whereTarget) error {
				_, err := microWrite(file(tg, "append"), appendSize, 16<<10, 1<<20)
				return err
			}, after: check("append", appendSize)},
		{name: "cold read", op: "MiB read", unit: "MB/s", ops: read >> 20, perOp: 1 << 20,
			setup: func(tg whereTarget) error {
				if _, err := microWrite(file(tg, "cold"), read, 1<<20, 0); err != nil {
					return err
				}
				return benchkit.DropCaches()
			},
			run: func(tg whereTarget) error {
				_, err := microRead(file(tg, "cold"), read)
				return err
			}, after: check("cold", read)},
		{name: "small files: create, write 4 KiB, close, unlink", op: "file", unit: "files/s", ops: int64(small), perOp: 1,
			run: func(tg whereTarget) error {
				_, err := microSmallFiles(filepath.Join(tg.dir, "small"), small, tg.placed)
				return err
			}},
	}
}

// measure runs w's setup, then its measured section between two
// snapshots of the machine's counters, then its check.
func (w whereWorkload) measure(tg whereTarget) (whereSample, error) {
	if w.setup != nil {
		if err := w.setup(tg); err != nil {
			return whereSample{}, err
		}
	}
	pid := 0
	if tg.daemon != nil {
		pid = tg.daemon()
	}
	a := takeWhere(pid)
	err := w.run(tg)
	b := takeWhere(pid)
	if err == nil && w.after != nil {
		err = w.after(tg)
	}
	if err != nil {
		return whereSample{}, err
	}
	if pid != 0 && (a.daemon < 0 || b.daemon < 0) {
		return whereSample{}, fmt.Errorf("the daemon of %s (pid %d) could not be read", tg.name, pid)
	}
	n := float64(w.ops)
	us := func(d float64) float64 { return d / n * 1e6 }
	s := whereSample{
		wall:     us(b.wall.Sub(a.wall).Seconds()),
		caller:   us(b.self - a.self),
		idle:     us(b.idle - a.idle),
		idles:    float64(b.idles-a.idles) / n,
		switches: float64(b.switches-a.switches) / n,
	}
	s.rate = w.perOp / (s.wall / 1e6)
	if w.unit == "MB/s" {
		s.rate /= 1e6
	}
	if pid != 0 {
		s.daemon = us(b.daemon - a.daemon)
	}
	s.rest = max(0, s.wall*float64(runtime.NumCPU())-s.idle-s.caller-s.daemon)
	return s, nil
}

type whereSample struct {
	rate, wall, caller, daemon, rest, idle, idles, switches float64
}

func (s whereSample) String() string {
	return fmt.Sprintf("%10.1f/s wall %8.1fµs caller %7.1f daemon %7.1f rest %7.1f idle %7.1f idles %5.2f switches %5.2f",
		s.rate, s.wall, s.caller, s.daemon, s.rest, s.idle, s.idles, s.switches)
}

func whereRow(w whereWorkload, target string, ss []whereSample) []string {
	col := func(f func(whereSample) float64, prec int) string {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		return strconv.FormatFloat(benchkit.Median(v), 'f', prec, 64)
	}
	daemon := col(func(s whereSample) float64 { return s.daemon }, 1)
	if target == "raw" {
		daemon = "–"
	}
	return []string{w.name + ": " + w.op, target, col(func(s whereSample) float64 { return s.rate }, 0) + " " + w.unit,
		col(func(s whereSample) float64 { return s.wall }, 1), col(func(s whereSample) float64 { return s.caller }, 1), daemon,
		col(func(s whereSample) float64 { return s.rest }, 1), col(func(s whereSample) float64 { return s.idle }, 1),
		col(func(s whereSample) float64 { return s.idles }, 2), col(func(s whereSample) float64 { return s.switches }, 2)}
}

// whereSnap is the machine's counters at one instant.
type whereSnap struct {
	wall     time.Time
	self     float64 // this process's user+system seconds (getrusage)
	daemon   float64 // the daemon's run time over its threads (schedstat), seconds; -1 unknown
	idle     float64 // seconds in idle states, summed over the CPUs
	idles    uint64  // entries into idle states other than polling
	switches uint64  // /proc/stat ctxt
}

func takeWhere(pid int) whereSnap {
	s := whereSnap{wall: time.Now(), daemon: -1}
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		s.self = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	if pid != 0 {
		s.daemon = schedRun(pid)
	}
	states, _ := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*/cpuidle/state[0-9]*")
	for _, st := range states {
		name, _ := os.ReadFile(filepath.Join(st, "name"))
		us, _ := readUint(filepath.Join(st, "time"))
		s.idle += float64(us) / 1e6
		if strings.TrimSpace(string(name)) != "POLL" {
			n, _ := readUint(filepath.Join(st, "usage"))
			s.idles += n
		}
	}
	if len(states) == 0 {
		// No cpuidle: /proc/stat's idle, in ticks.
		c := benchkit.TakeCPU()
		s.idle = c.Total - c.Busy
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "ctxt "); ok {
				s.switches, _ = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			}
		}
	}
	return s
}

// schedRun is the time pid's threads have run, from their schedstat
// (nanoseconds, unlike /proc/PID/stat's ticks), or -1.
func schedRun(pid int) float64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return -1
	}
	var ns uint64
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, task.Name()))
		if err != nil {
			continue // a thread that exited between the two reads
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			v, _ := strconv.ParseUint(f[0], 10, 64)
			ns += v
		}
	}
	return float64(ns) / 1e9
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

const haltPollParam = "/sys/module/haltpoll/parameters/guest_halt_poll_ns"

// setHaltPoll sets the guest's halt polling to v nanoseconds.
func setHaltPoll(t *testing.T, v string) {
	t.Helper()
	if err := os.WriteFile(haltPollParam, []byte(v), 0o644); err != nil {
		t.Errorf("setting %s to %s: %v", haltPollParam, v, err)
	}
}

// haltPoll is the guest's halt polling (ns) as it is now, and whether the
// machine has it.
func haltPoll() (string, bool) {
	b, err := os.ReadFile(haltPollParam)
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// wherePerf runs each workload once more on each target under a
// system-wide `perf record`, and writes the profile and its report
// (sorted by command and symbol, callees not folded in) to dir.
func wherePerf(t *testing.T, dir string, workloads []whereWorkload, targets []whereTarget) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	perf, err := exec.LookPath("perf")
	if err != nil {
		t.Fatalf("TIERFS_WHERE_PERF: no perf on PATH (Debian: apt-get install linux-perf): %v", err)
	}
	for i, w := range workloads {
		for _, tg := range targets {
			base := filepath.Join(dir, fmt.Sprintf("%d-%s", i+1, tg.name))
			if w.setup != nil {
				if err := w.setup(tg); err != nil {
					t.Fatalf("%s on %s: %v", w.name, tg.name, err)
				}
			}
			// Events start disabled (-D -1) and are turned on and off
			// through a control pipe, each step acknowledged: the
			// profile holds the measured section and nothing else.
			ctlR, ctlW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			ackR, ackW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			// The profile ends with its workload, a cat of a pipe this
			// closes: perf then writes the whole file and exits 0.
			stdinR, stdinW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			rec := exec.Command(perf, "record", "-a", "-g", "-F", "1999", "-D", "-1", "--control", "fd:3,4", "-o", base+".data", "--", "cat")
			rec.ExtraFiles = []*os.File{ctlR, ackW}
			rec.Stdin = stdinR
			var out strings.Builder
			rec.Stdout, rec.Stderr = &out, &out
			if err := rec.Start(); err != nil {
				t.Fatalf("perf record: %v", err)
			}
			ctlR.Close()
			ackW.Close()
			stdinR.Close()
			ack := bufio.NewReader(ackR)
			command := func(c string) {
				t.Helper()
				if _, err := ctlW.WriteString(c + "\n"); err != nil {
					t.Fatalf("perf record, %s: %v\n%s", c, err, out.String())
				}
				// perf writes "ack\n" and a NUL after it.
				if l, err := ack.ReadString('\n'); err != nil || strings.Trim(l, "\x00\n") != "ack" {
					t.Fatalf("perf record, %s: answered %q, %v\n%s", c, l, err, out.String())
				}
			}
			command("enable")
			err = w.run(tg)
			command("disable")
			stdinW.Close()
			werr := rec.Wait()
			ctlW.Close()
			ackR.Close()
			if err == nil && w.after != nil {
				err = w.after(tg)
			}
			if err != nil {
				t.Fatalf("%s on %s under perf: %v", w.name, tg.name, err)
			}
			if werr != nil {
				t.Fatalf("perf record for %s on %s: %v\n%s", w.name, tg.name, werr, out.String())
			}
			// By process first, then by process and symbol.
			var rep []byte
			for _, sort := range []string{"comm", "comm,dso,sym"} {
				b, err := exec.Command(perf, "report", "-i", base+".data", "--stdio", "--no-children",
					"--sort", sort, "--percent-limit", "0.5", "-g", "none").Output()
				if err != nil {
					t.Fatalf("perf report for %s on %s: %v", w.name, tg.name, err)
				}
				rep = append(rep, b...)
			}
			if !strings.Contains(string(rep), "%") {
				t.Fatalf("perf report for %s on %s has no samples:\n%s", w.name, tg.name, rep)
			}
			if err := os.WriteFile(base+".txt", []byte("# "+w.name+" on "+tg.name+"\n"+string(rep)), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("perf: %s on %s: %s.txt", w.name, tg.name, base)
		}
	}
}
