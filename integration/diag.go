package integration

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// What a test prints when a process does not do what it should (a broker
// that keeps running on a dead mount): enough to tell a FUSE connection
// that was never aborted from a process stuck somewhere else.

// processReport says whether pid is alive, and the state of each of its
// threads with the kernel function a sleeping one waits in, counted: e.g.
// "pid 123: 61 threads: 58 S (do_epoll_wait 30, futex_wait_queue 28), 3 D
// (request_wait_answer 3)".
func processReport(pid int) string {
	if pid <= 0 {
		return "no pid"
	}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Sprintf("pid %d: gone (%v)", pid, err)
	}
	type bucket struct {
		n     int
		wchan map[string]int
	}
	states := map[string]*bucket{}
	for _, task := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s", pid, task.Name())
		stat, err := os.ReadFile(dir + "/stat")
		if err != nil {
			continue
		}
		// The state is the field after the command, which is in
		// parentheses and may hold spaces.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+3 > len(s) {
			continue
		}
		state := s[i+2 : i+3]
		b := states[state]
		if b == nil {
			b = &bucket{wchan: map[string]int{}}
			states[state] = b
		}
		b.n++
		if w, err := os.ReadFile(dir + "/wchan"); err == nil && len(w) > 0 && string(w) != "0" {
			b.wchan[string(w)]++
		}
	}
	var parts []string
	for _, st := range slices.Sorted(maps.Keys(states)) {
		b := states[st]
		part := fmt.Sprintf("%d %s", b.n, st)
		if len(b.wchan) > 0 {
			var ws []string
			for _, w := range slices.Sorted(maps.Keys(b.wchan)) {
				ws = append(ws, fmt.Sprintf("%s %d", w, b.wchan[w]))
			}
			part += " (" + strings.Join(ws, ", ") + ")"
		}
		parts = append(parts, part)
	}
	return fmt.Sprintf("pid %d: %d threads: %s", pid, len(tasks), strings.Join(parts, ", "))
}

// fuseConnReport names the FUSE connection mounted on mnt and the number
// of requests waiting on it (/sys/fs/fuse/connections/N/waiting; fusectl
// is mounted there when it is not yet). A connection whose daemon died
// has been aborted: nothing waits on it.
func fuseConnReport(mnt string) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	dev := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[4] == mnt {
			dev = fields[2] // major:minor; the last one listed is on top
		}
	}
	if dev == "" {
		return "nothing mounted on " + mnt
	}
	minor := dev[strings.IndexByte(dev, ':')+1:]
	conns := "/sys/fs/fuse/connections"
	if _, err := os.Stat(filepath.Join(conns, minor)); err != nil {
		// fusectl may not be mounted; mounting it changes nothing else.
		_ = mountFusectl(conns)
	}
	w, err := os.ReadFile(filepath.Join(conns, minor, "waiting"))
	if err != nil {
		return fmt.Sprintf("FUSE connection %s on %s: %v", minor, mnt, err)
	}
	return fmt.Sprintf("FUSE connection %s on %s: %s requests waiting", minor, mnt, strings.TrimSpace(string(w)))
}

func mountFusectl(dir string) error {
	return unix.Mount("fusectl", dir, "fusectl", 0, "")
}
