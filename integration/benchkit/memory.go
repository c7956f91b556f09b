package benchkit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ReportingParam is the kernel's free page reporting threshold: free
// blocks of 2^order pages or more are reported to the hypervisor (a
// virtio-balloon device), which takes their memory back.
const ReportingParam = "/sys/module/page_reporting/parameters/page_reporting_order"

// buddyinfo lists the free blocks of every order, one column per order.
const buddyinfo = "/proc/buddyinfo"

// memoryNote, when not empty, is how HoldGuestMemory left the machine;
// every fragment written while it holds says so.
var memoryNote string

// HoldGuestMemory keeps this virtual machine's memory in the guest for a
// benchmark run, and returns the func that gives it back (it may be
// called more than once).
//
// Why: where the guest reports its free memory to the hypervisor (free
// page reporting, of free blocks of 2^page_reporting_order pages), memory
// a run frees goes back to the host within seconds, and the next write
// into it faults on the host first: writing into such memory runs several
// times slower than into memory the guest kept (docs/perf.md, 14, has the
// figures). A Kafka run frees its topic's memory and the next run
// takes fresh memory, so each figure depended on the memory it happened
// to get; and a FUSE target writes every byte twice (the mount's page
// cache, then the tier), so it paid twice. A machine that keeps its
// memory, as a broker's does, pays neither.
//
// So, where ReportingParam exists, it is set one above the largest block
// order (no free block is ever that large, so nothing is reported) and
// touch bytes are written to a private tmpfs under work and freed, so
// that the memory the runs take is the guest's. Elsewhere it does
// nothing and returns an empty note. It needs root. A run killed before
// restore leaves reporting paused, and the next one, finding it so,
// leaves it so: `echo 9 > ReportingParam` (the value the fragments'
// footers name) puts it back.
func HoldGuestMemory(work string, touch int64) (restore func() error, note string, err error) {
	return holdMemory(ReportingParam, buddyinfo, func() error { return touchMemory(work, touch) }, touch)
}

// holdMemory is HoldGuestMemory for the switch at param, the block
// orders read from buddy, and touch to fill the memory in.
func holdMemory(param, buddy string, touch func() error, touchBytes int64) (restore func() error, note string, err error) {
	b, err := os.ReadFile(param)
	if errors.Is(err, os.ErrNotExist) {
		return func() error { return nil }, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading the free page reporting order: %w", err)
	}
	old := strings.TrimSpace(string(b))
	orders, err := blockOrders(buddy)
	if err != nil {
		return nil, "", err
	}
	off := strconv.Itoa(orders) // one above the largest order, orders-1
	if old != off {
		if err := os.WriteFile(param, []byte(off+"\n"), 0); err != nil {
			return nil, "", fmt.Errorf("pausing free page reporting (echo %s > %s): %w", off, param, err)
		}
	}
	restore = onceErr(func() error {
		memoryNote = ""
		if old == off {
			return nil
		}
		if err := os.WriteFile(param, []byte(old+"\n"), 0); err != nil {
			return fmt.Errorf("putting free page reporting back to order %s (echo %s > %s): %w", old, old, param, err)
		}
		return nil
	})
	if err := touch(); err != nil {
		return nil, "", errors.Join(fmt.Errorf("touching the memory: %w", err), restore())
	}
	note = fmt.Sprintf("the guest's free page reporting paused (page_reporting_order %s → %s) and %s of memory written and freed first, so that no run takes memory back from the hypervisor (benchkit.HoldGuestMemory)",
		old, off, humanBytes(touchBytes))
	memoryNote = note
	return restore, note, nil
}

// blockOrders is how many block orders the buddy allocator has: the
// columns of buddyinfo after "Node N, zone NAME".
func blockOrders(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading the block orders: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[0] == "Node" && f[2] == "zone" {
			return len(f) - 4, nil
		}
	}
	return 0, fmt.Errorf("reading the block orders: no zone line in %s", path)
}

// touchMemory writes n bytes into a file on a tmpfs of its own under
// work, then unmounts it: the memory goes back to the guest's free
// lists, touched.
func touchMemory(work string, n int64) (err error) {
	dir := filepath.Join(work, "touch-memory")
	if isMountpoint(dir) {
		// Left by a run that was killed while touching: its memory is
		// held there until unmounted.
		if err := unmountPath(dir); err != nil {
			return fmt.Errorf("unmounting the tmpfs a killed run left on %s: %w", dir, err)
		}
	}
	unmount, err := MountTmpfs(dir, n+(1<<20))
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, unmount(), os.Remove(dir))
	}()
	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	for done := int64(0); done < n; {
		m, err := f.Write(buf[:min(int64(len(buf)), n-done)])
		if err != nil {
			return err
		}
		done += int64(m)
	}
	return nil
}

// humanBytes is n as "11.6 GiB", or in whole MiB under a GiB.
func humanBytes(n int64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// MemAvailable is MemAvailable of /proc/meminfo in bytes (0 if it
// cannot be read).
func MemAvailable() int64 { return meminfo("MemAvailable:") }

// meminfo is the line of /proc/meminfo named key ("MemTotal:"), in
// bytes; 0 if it cannot be read.
func meminfo(key string) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == key {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
