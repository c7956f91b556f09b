package tiering

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// A move the policy or an operator asked for is background work: its
// copy must not take the CPU or the disk from the programs on the mount
// (on a small machine the copy competed with Kafka's broker for the CPU,
// docs/perf.md 17). So the copy runs on an OS thread of its own at the
// lowest CPU priority (SCHED_IDLE, else nice 19) and the lowest
// best-effort I/O priority. A spill is not: the write that wants room
// waits for it.

// Linux's ioprio_set(2) encoding (no wrapper in x/sys/unix).
const (
	ioprioWhoProcess = 1 // a thread id, despite the name
	ioprioClassBE    = 2
	ioprioClassShift = 13
	ioprioLowestBE   = ioprioClassBE<<ioprioClassShift | 7
)

// lowThread, when set, is called on the background thread once its
// priorities are lowered (tests read them there).
var lowThread func()

// runner runs a move's bulk work: in the background (inBackground) or
// on the caller's goroutine.
type runner func(fn func() error) error

func inForeground(fn func() error) error { return fn() }

// inBackground runs fn on an OS thread at the lowest CPU and I/O
// priority and waits for it. The goroutine never unlocks its thread, so
// the thread exits with it and no other goroutine ever runs at that
// priority. fn takes no lock that the foreground waits for: a lock held
// on this thread would be held for as long as the thread waits for a CPU.
func inBackground(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		lowerThread()
		if lowThread != nil {
			lowThread()
		}
		done <- fn()
	}()
	return <-done
}

// lowerThread gives the calling thread the lowest CPU and I/O priority.
// Lowering needs no privilege; where it is refused anyway (a seccomp
// filter) the work runs at the priority it has.
func lowerThread() {
	attr := unix.SchedAttr{Policy: unix.SCHED_IDLE, Nice: 19}
	_ = unix.SchedSetAttr(0, &attr, 0)
	// Also where SCHED_IDLE is refused, and the nice value the kernel
	// shows with it (it may keep the old one under SCHED_IDLE).
	_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
	_, _, _ = unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(unix.Gettid()), ioprioLowestBE)
}

// runner is how this move runs its copy: a spill in the foreground.
func (m *move) runner() runner {
	if m.o.Reason == ReasonSpill {
		return inForeground
	}
	return inBackground
}
