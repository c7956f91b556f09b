package fs

import (
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixSkips are go-fuse posixtest cases that do not apply to tierfs, each
// with the reason.
var posixSkips = map[string]string{
	// Two descriptors of one process: POSIX record locks belong to the
	// process, so the second lock succeeds on any local filesystem too
	// (tmpfs, ext4). The test assumes a FUSE server's own lock table;
	// tierfs leaves locks to the kernel (EnableLocks off), which is what
	// Kafka's .lock needs across processes.
	"FcntlFlockLocksFile": "POSIX locks are per process: the same test fails on tmpfs and ext4; tierfs leaves locks to the kernel",
}

func TestPosix(t *testing.T) { testPosix(t, mountOpt{}) }

// TestPosixWriteback: the same with the kernel's write-back cache
// (fs.Options.WritebackCache, off by default). TIERFS_TEST_WRITEBACK=1
// runs every test of the package with it.
func TestPosixWriteback(t *testing.T) { testPosix(t, mountOpt{writeback: true}) }

func testPosix(t *testing.T, o mountOpt) {
	names := make([]string, 0, len(posixtest.All))
	for n := range posixtest.All {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		fn := posixtest.All[name]
		t.Run(name, func(t *testing.T) {
			if why, ok := posixSkips[name]; ok {
				t.Skip(why)
			}
			m := mount(t, o)
			fn(t, m.mnt)
		})
	}
}
