//go:build linux

package pmem

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The crash child: TestCrashChild re-executed with these set.
const (
	envCrashFile     = "TIERFS_PMEM_CRASH_FILE"
	envCrashScenario = "TIERFS_PMEM_CRASH_SCENARIO"
)

const secretByte = 0xEE

func synced(i int64) byte   { return 'a' + byte(i%23) }
func unsynced(i int64) byte { return 'A' + byte(i%19) }

type crashScenario struct {
	name     string
	synced   int64 // written then Synced
	extra    int64 // written past it, not synced
	truncate int64 // if > 0: Truncate to this after the Sync, not synced
}

var crashScenarios = []crashScenario{
	{"never synced", 0, 300000, 0},
	{"synced then more", 300000, 200000, 0},
	{"synced past the slot then more", mib + mib/2, mib, 0},
	{"unsynced growth past the slot", 700000, mib, 0},
	{"unsynced shrink", 300000, 0, 100000},
}

func pattern(f func(int64) byte, off, n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = f(off + int64(i))
	}
	return b
}

// TestCrashChild is the crashing process: it does a scenario's writes on
// the file, says "ready" and waits to be killed.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(envCrashFile)
	if path == "" {
		t.Skip("only run by TestCrash")
	}
	var s crashScenario
	for _, c := range crashScenarios {
		if c.name == os.Getenv(envCrashScenario) {
			s = c
		}
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := OpenFile(fd)
	if err != nil {
		t.Fatal(err)
	}
	const chunk = 16 << 10
	write := func(pat func(int64) byte, from, to int64) {
		for off := from; off < to; off += chunk {
			n := min(chunk, to-off)
			if _, err := f.WriteAt(pattern(pat, off, n), off); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(synced, 0, s.synced)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	write(unsynced, s.synced, s.synced+s.extra)
	if s.truncate > 0 {
		if err := f.Truncate(s.truncate); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("ready")
	time.Sleep(time.Minute)
	t.Fatal("not killed")
}

// TestCrash: a process writes, Syncs, writes more and is killed with
// SIGKILL; the reopened file has the synced logical size, the synced bytes,
// and past them only zeros or the lost writes, never the data of the
// slot's earlier life. (tmpfs keeps the page cache across a process crash,
// so this tests the ordering of size and data as the process leaves them,
// not power loss.)
func TestCrash(t *testing.T) {
	if os.Getenv(envCrashFile) != "" {
		t.Skip("in the child")
	}
	for _, s := range crashScenarios {
		t.Run(strings.ReplaceAll(s.name, " ", "_"), func(t *testing.T) {
			root := pmemDir(t, 64)
			const seg = mib
			p, data, datafd := testPool(t, root, seg, 2)
			// Dirty both slots with the secret and give them back.
			for _, n := range []string{"x", "y"} {
				if err := p.Take(datafd, n); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(data, n), bytes.Repeat([]byte{secretByte}, seg), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for _, n := range []string{"x", "y"} {
				if err := p.Return(datafd, n); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Take(datafd, "00000000000000000000.log"); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(data, "00000000000000000000.log")

			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), envCrashFile+"="+path, envCrashScenario+"="+s.name)
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			ready := false
			var lines []string
			for sc.Scan() {
				if sc.Text() == "ready" {
					ready = true
					break
				}
				lines = append(lines, sc.Text())
			}
			if !ready {
				cmd.Wait()
				t.Fatalf("child never got ready: %q", lines)
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			err = cmd.Wait()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("child ended with %v, not SIGKILL", err)
			}

			f, fd := openAt(t, datafd, "00000000000000000000.log")
			defer unix.Close(fd)
			defer f.Close()
			if f.Size() != s.synced {
				t.Fatalf("after the crash: size %d, want the synced %d", f.Size(), s.synced)
			}
			got := readAll(t, f)
			if s.truncate > 0 {
				// The shrink was not synced: the old size stands; the
				// shrunk-away bytes are the old ones or zeros.
				if !bytes.Equal(got[:s.truncate], pattern(synced, 0, s.truncate)) {
					t.Fatal("synced bytes below the truncation lost")
				}
				for i := s.truncate; i < s.synced; i++ {
					if got[i] != 0 && got[i] != synced(i) {
						t.Fatalf("byte %d after an unsynced shrink is %#x", i, got[i])
					}
				}
			} else if !bytes.Equal(got, pattern(synced, 0, s.synced)) {
				t.Fatal("synced bytes lost or changed")
			}
			// Past the size, in the backing: zeros or the lost writes.
			raw := rawBytes(t, fd, s.synced, f.Allocated()-s.synced)
			for i, c := range raw {
				off := s.synced + int64(i)
				if c != 0 && c != unsynced(off) {
					t.Fatalf("byte %d past the size is %#x (secret %#x)", off, c, secretByte)
				}
			}
			// The lost writes never come back: a write past a gap, and a
			// truncate up, read zeros in between.
			end := s.synced + s.extra + 4096
			mustWrite(t, f, []byte("after"), end)
			if tail := readAll(t, f)[s.synced:end]; firstNonZero(tail) >= 0 {
				t.Fatalf("written past a gap after the crash: byte %d is %#x", s.synced+int64(firstNonZero(tail)), tail[firstNonZero(tail)])
			}
			if err := f.Truncate(s.synced); err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(end); err != nil {
				t.Fatal(err)
			}
			if tail := readAll(t, f)[s.synced:]; firstNonZero(tail) >= 0 {
				t.Fatalf("truncated up after the crash: byte %d is %#x", s.synced+int64(firstNonZero(tail)), tail[firstNonZero(tail)])
			}
			// And the file goes on working.
			mustWrite(t, f, []byte("after"), end)
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			if v, _, _ := getSizeXattr(fd); v != end+5 {
				t.Fatalf("%s = %d, want %d", SizeXattr, v, end+5)
			}
		})
	}
}
