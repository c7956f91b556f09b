package benchkit

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// CPU accounting for the Kafka runs: where the machine's CPU time goes
// while a producer or a consumer moves a GiB, read from /proc (no profiler
// attached, so the figures are the runs' own). On a machine whose runs are
// CPU-bound, a target's throughput against another's is about the inverse
// of their CPU seconds per GiB.

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on the
// architectures this runs on (x86-64, arm64).
const clockTicks = 100

// CPUSnap is the machine's busy and total CPU time, and that of some
// processes, at one instant.
type CPUSnap struct {
	Busy, Total float64   // seconds, summed over all CPUs
	Procs       []float64 // user+system seconds of each pid; -1: unknown
}

// TakeCPU reads /proc/stat and /proc/PID/stat of pids (a pid of 0 or a
// process that is gone reads as -1).
func TakeCPU(pids ...int) CPUSnap {
	var s CPUSnap
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := bytes.Cut(b, []byte("\n"))
		f := strings.Fields(string(line))
		// cpu user nice system idle iowait irq softirq steal (guest
		// time is already in user); summed in ticks, so that busy
		// never exceeds total by a rounding
		var busy, total uint64
		for i := 1; i < len(f) && i <= 8; i++ {
			v, _ := strconv.ParseUint(f[i], 10, 64)
			total += v
			if i != 4 && i != 5 {
				busy += v
			}
		}
		s.Busy, s.Total = float64(busy)/clockTicks, float64(total)/clockTicks
	}
	for _, pid := range pids {
		s.Procs = append(s.Procs, ProcCPU(pid))
	}
	return s
}

// ProcCPU is the user+system time of pid (all its threads), in seconds,
// or -1.
func ProcCPU(pid int) float64 {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The fields after the command (in parentheses, and it may hold
	// spaces): state is field 3, utime 14, stime 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return -1
	}
	u, err1 := strconv.ParseFloat(f[11], 64)
	k, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return (u + k) / clockTicks
}

// CPUUse is what happened between two snapshots, per GiB moved.
type CPUUse struct {
	Machine float64   // the machine's busy CPU seconds per GiB
	Procs   []float64 // each process's CPU seconds per GiB; -1: unknown
	Busy    float64   // the machine's busy fraction, 0 to 1 (1: every CPU busy throughout)
}

// Use is the CPU time from a to b, per GiB of bytes.
func (a CPUSnap) Use(b CPUSnap, bytes int64) CPUUse {
	gib := float64(bytes) / (1 << 30)
	u := CPUUse{Machine: (b.Busy - a.Busy) / gib}
	if d := b.Total - a.Total; d > 0 {
		u.Busy = min(1, (b.Busy-a.Busy)/d)
	}
	for i := range a.Procs {
		if a.Procs[i] < 0 || i >= len(b.Procs) || b.Procs[i] < 0 {
			u.Procs = append(u.Procs, -1)
			continue
		}
		u.Procs = append(u.Procs, (b.Procs[i]-a.Procs[i])/gib)
	}
	return u
}

// PidOf is a process, other than this one, whose command line holds every
// one of words, or 0: how the benchmarks find the mergerfs daemon of a
// mount.
func PidOf(words ...string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		cmd := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		ok := true
		for _, w := range words {
			if !strings.Contains(cmd, w) {
				ok = false
				break
			}
		}
		if ok {
			return pid
		}
	}
	return 0
}
