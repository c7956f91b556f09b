package benchkit

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// The CPU accounting reads what the kernel counts: a process that spins
// shows the CPU time it spent, the machine at least as much, and an
// exited process reads as unknown; PidOf finds a process by its command
// line.
func TestCPUAccounting(t *testing.T) {
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 60", "tierfs-cpu-test-7391")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	// Until the child has exec'd the shell, its command line is this
	// test's (seen on a loaded machine in a CI run): wait for the exec.
	got := 0
	for deadline := time.Now().Add(10 * time.Second); got != pid && time.Now().Before(deadline); {
		got = PidOf("tierfs-cpu-test-7391", "sleep 60")
	}
	if got != pid {
		t.Errorf("PidOf = %d, want %d", got, pid)
	}
	if got := PidOf("no-such-process-tierfs-cpu-test"); got != 0 {
		t.Errorf("PidOf of nothing = %d, want 0", got)
	}
	a := TakeCPU(pid, 0, os.Getpid())
	if a.Total <= 0 || a.Busy <= 0 || a.Busy > a.Total {
		t.Fatalf("machine times busy %v, total %v", a.Busy, a.Total)
	}
	if a.Procs[1] != -1 {
		t.Errorf("pid 0 reads as %v, want -1", a.Procs[1])
	}
	// Spin until this process has used 200 ms of CPU by its own count:
	// the machine's busy time must grow by at least as much (within
	// a tick per CPU).
	self := ProcCPU(os.Getpid())
	deadline := time.Now().Add(time.Minute)
	for ProcCPU(os.Getpid())-self < 0.2 {
		if time.Now().After(deadline) {
			t.Fatal("this process's CPU time did not grow by 200 ms in a minute of spinning")
		}
	}
	b := TakeCPU(pid, 0, os.Getpid())
	u := a.Use(b, 1<<30)
	if u.Procs[2] < 0.2 {
		t.Errorf("this process used %v s per GiB (1 GiB given), want ≥ 0.2", u.Procs[2])
	}
	if u.Machine < u.Procs[2]-0.05 {
		t.Errorf("machine busy %v s, less than this process's %v s", u.Machine, u.Procs[2])
	}
	if u.Busy <= 0 || u.Busy > 1 {
		t.Errorf("busy fraction %v, want in (0, 1]", u.Busy)
	}
	if u.Procs[0] < 0 || u.Procs[1] != -1 {
		t.Errorf("per-process use %v: want the shell's ≥ 0 and pid 0's -1", u.Procs)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if c := ProcCPU(pid); c != -1 {
		t.Errorf("an exited process reads as %v, want -1", c)
	}
	if half := a.Use(b, 1<<29); half.Machine < 1.9*u.Machine || half.Machine > 2.1*u.Machine {
		t.Errorf("per GiB of half a GiB: %v, want twice %v", half.Machine, u.Machine)
	}
}
