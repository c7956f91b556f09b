package mountutil

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// A queue of FUSE over io_uring is kicked by a request sent from its CPU
// (the kernel queues a request on its sender's CPU): a GETATTR of the
// mount's root forced past the cache. The kicks come from a child
// process, never from the daemon: a process that dies with a request of
// its own mount in flight waits, uninterruptibly, for the answer, which
// only the next daemon can give, and the supervisor starts that one only
// once this one has exited.
const kickEnv = "TIERFS_URING_KICK"

type kickOrder struct {
	Mountpoint string `json:"mountpoint"`
	Queues     []int  `json:"queues"`
	PerQueue   int    `json:"per_queue"`
}

func init() {
	// The kicker is this binary started again (kickQueues): it does
	// its work before main.
	if v := os.Getenv(kickEnv); v != "" {
		os.Exit(kickMain(v))
	}
}

// kickMain sends the requests of order: perQueue from a thread bound to
// each queue's CPU. It prints "Q 1" once a thread runs on Q's CPU ("Q 0"
// if none can), closes its output, and exits once every request is
// answered.
func kickMain(v string) int {
	var o kickOrder
	if err := json.Unmarshal([]byte(v), &o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	out := make(chan string, len(o.Queues))
	var wg sync.WaitGroup
	for _, q := range o.Queues {
		pinned := make(chan bool, o.PerQueue)
		for range o.PerQueue {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				var set unix.CPUSet
				set.Set(q)
				if unix.SchedSetaffinity(0, &set) != nil {
					pinned <- false
					return
				}
				pinned <- true
				var stx unix.Statx_t
				unix.Statx(unix.AT_FDCWD, o.Mountpoint, unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &stx)
			}()
		}
		go func() {
			ok := false
			for range o.PerQueue {
				ok = <-pinned || ok
			}
			out <- fmt.Sprintf("%d %d", q, map[bool]int{false: 0, true: 1}[ok])
		}()
	}
	for range o.Queues {
		fmt.Println(<-out)
	}
	os.Stdout.Close()
	wg.Wait()
	return 0
}

// kickQueues sends perQueue requests from each CPU of queues, from a
// child process, and returns once they are sent (not answered): the
// queues whose CPU the child could run on.
func (s *Server) kickQueues(queues []int, perQueue int) (map[int]bool, error) {
	b, _ := json.Marshal(kickOrder{Mountpoint: s.mountpoint, Queues: queues, PerQueue: perQueue})
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), kickEnv+"="+string(b))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("io_uring: starting the queues' kicker: %w", err)
	}
	// It exits once the requests are answered: by this daemon, or by
	// the next one if this one is draining.
	go cmd.Wait()
	ran := map[int]bool{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		q, err := strconv.Atoi(f[0])
		if err == nil {
			ran[q] = f[1] == "1"
		}
	}
	return ran, nil
}
