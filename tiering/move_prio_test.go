package tiering

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadPrio is what the kernel says of thread tid's CPU and I/O
// priority: its nice value and scheduling policy (/proc's stat, fields 19
// and 41) and its ioprio_get(2).
type threadPrio struct {
	nice, policy, ioprio int
}

func prioOf(t *testing.T, tid int) threadPrio {
	t.Helper()
	b, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command, which is in parentheses and may hold
	// spaces: state is field 3.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	nice, err1 := strconv.Atoi(f[19-3])
	policy, err2 := strconv.Atoi(f[41-3])
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("stat of thread %d: %v in %q", tid, err, b)
	}
	io, _, errno := unix.Syscall(unix.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(tid), 0)
	if errno != 0 {
		t.Fatalf("ioprio_get of thread %d: %v", tid, errno)
	}
	return threadPrio{nice: nice, policy: policy, ioprio: int(io)}
}

// copyThreads runs do, which moves a file, and returns the priority of
// each thread the move's copy ran on (by thread id), read on that thread
// while it copied.
func copyThreads(t *testing.T, do func() error) (map[int]threadPrio, error) {
	t.Helper()
	var mu sync.Mutex
	seen := map[int]threadPrio{}
	FailPoint = func(step string) {
		if step == "copy:data" {
			tid := unix.Gettid()
			p := prioOf(t, tid)
			mu.Lock()
			seen[tid] = p
			mu.Unlock()
		}
	}
	defer func() { FailPoint = nil }()
	err := do()
	return seen, err
}

// A move the policy or an operator asks for copies at the lowest CPU
// priority (SCHED_IDLE, nice 19) and the lowest best-effort I/O priority,
// on a thread of its own that exits after the copy, so that no other
// work of the daemon runs at that priority; a spill, which a write waits
// for, copies at the priority the daemon has.
func TestMoveCopiesInTheBackground(t *testing.T) {
	self := prioOf(t, unix.Gettid())
	if self.policy == unix.SCHED_IDLE || self.nice == 19 {
		t.Fatalf("the test itself runs at the lowest priority (%+v): it could not tell", self)
	}

	s := openTest(t, twoTiers(t, TypeNVMe, 4<<20), Options{})
	writeStoreFile(t, s, "", "moved", noise(3<<20, 3))
	seen, err := copyThreads(t, func() error { return s.Move("moved", "slow") })
	if err != nil {
		t.Fatalf("move: %v", err)
	}
	if len(seen) == 0 {
		t.Fatal("the move's copy never reached copy:data")
	}
	want := threadPrio{nice: 19, policy: unix.SCHED_IDLE, ioprio: ioprioLowestBE}
	for tid, p := range seen {
		if p != want {
			t.Errorf("the move copied on thread %d at %+v, want %+v", tid, p, want)
		}
		// The thread goes with the copy (it exits once its goroutine has
		// handed the result over): nothing else runs on it.
		threadExits(t, tid)
	}

	// A spill: the fast tier (4 MiB) is too small for this write.
	h, _, err := s.Create(RelPath(""), "spilled", unix.O_RDWR, 0o644, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if _, err := h.Write(noise(3<<20, 4), 0); err != nil {
		t.Fatal(err)
	}
	seen, err = copyThreads(t, func() error {
		_, err := h.Write(noise(3<<20, 5), 3<<20)
		return err
	})
	if err != nil {
		t.Fatalf("write that spills: %v", err)
	}
	if m := s.Status().Moves; m.Spills != 1 {
		t.Fatalf("the write did not spill its file: %+v", m)
	}
	if len(seen) == 0 {
		t.Fatal("the spill's copy never reached copy:data")
	}
	for tid, p := range seen {
		if p.policy == unix.SCHED_IDLE || p.nice == 19 {
			t.Errorf("the spill copied on thread %d at %+v: the write waiting for it would wait behind every other program", tid, p)
		}
	}
}

// threadExits fails t unless thread tid of this process exits within
// nsWait.
func threadExits(t *testing.T, tid int) {
	t.Helper()
	deadline := time.Now().Add(nsWait)
	for {
		_, err := os.Stat("/proc/self/task/" + strconv.Itoa(tid))
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("the copy's thread %d is still there %v after the move (%v): another goroutine could run at its priority", tid, nsWait, err)
			return
		}
		time.Sleep(time.Millisecond)
	}
}
