package supervisor

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/sdnotify"
	"github.com/tierfs/tierfs/internal/testenv"
)

// notified is one datagram systemd would have read.
type notified struct {
	text string
	fds  []int
}

// fakeNotify binds a datagram socket as $NOTIFY_SOCKET and returns a
// unitStore for mountpoint speaking to it, and a reader of what arrived.
func fakeNotify(t *testing.T, mountpoint string, log zerolog.Logger) (*unitStore, func() []notified) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s) })
	if err := unix.Bind(s, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	u := newUnitStore(mountpoint, log)
	if u == nil || !u.storing() {
		t.Fatalf("no unit store with NOTIFY_SOCKET=%s", path)
	}
	if os.Getenv("NOTIFY_SOCKET") != "" {
		t.Errorf("NOTIFY_SOCKET is left for the daemons to inherit")
	}
	read := func() []notified {
		var out []notified
		for {
			buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*8))
			n, oobn, _, _, err := unix.Recvmsg(s, buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
			if err == unix.EAGAIN {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			m := notified{text: string(buf[:n])}
			cms, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, cm := range cms {
				fds, err := unix.ParseUnixRights(&cm)
				if err == nil {
					m.fds = append(m.fds, fds...)
				}
			}
			for _, fd := range m.fds {
				t.Cleanup(func() { unix.Close(fd) })
			}
			out = append(out, m)
		}
	}
	return u, read
}

func sameFile(t *testing.T, a, b int) bool {
	t.Helper()
	var x, y unix.Stat_t
	if unix.Fstat(a, &x) != nil || unix.Fstat(b, &y) != nil {
		return false
	}
	return x.Dev == y.Dev && x.Ino == y.Ino
}

// The supervisor's messages to systemd follow sd_notify's protocol: the
// connection is stored once under its name with the descriptor attached,
// each generation's state as a sealed memfd before the older one is
// removed, and letting the mount go removes both.
func TestUnitStoreMessages(t *testing.T) {
	const mp = "/mnt/kafka"
	u, read := fakeNotify(t, mp, zerolog.Nop())
	sock, _ := SocketPath(mp)
	prefix := "tierfs." + strings.TrimSuffix(filepath.Base(sock), ".supervisor.sock") + "."
	conn, err := unix.MemfdCreate("conn", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(conn)
	u.holdConn(conn, storedState{Mountpoint: mp, Init: []byte{1}, Reply: []byte{2}, MountID: 5, Dev: "0:9", Conn: 9})
	u.holdGen(1)
	u.holdGen(2)
	u.notify("READY=1")
	u.release()
	got := read()
	want := []string{
		"FDSTORE=1\nFDNAME=" + prefix + "fuse",
		"FDSTORE=1\nFDNAME=" + prefix + "state.1",
		"FDSTORE=1\nFDNAME=" + prefix + "state.2",
		"FDSTOREREMOVE=1\nFDNAME=" + prefix + "state.1",
		"READY=1",
		"FDSTOREREMOVE=1\nFDNAME=" + prefix + "fuse",
		"FDSTOREREMOVE=1\nFDNAME=" + prefix + "state.2",
	}
	if len(got) != len(want) {
		t.Fatalf("systemd got %d messages, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].text != w {
			t.Errorf("message %d: %q, want %q", i, got[i].text, w)
		}
		if stores := strings.HasPrefix(w, "FDSTORE=1"); stores != (len(got[i].fds) == 1) {
			t.Errorf("message %d (%q) carries %d descriptors", i, w, len(got[i].fds))
		}
	}
	if !sameFile(t, got[0].fds[0], conn) {
		t.Errorf("the stored connection is not the descriptor held")
	}
	for i, gen := range map[int]int{1: 1, 2: 2} {
		st, err := readState(got[i].fds[0])
		if err != nil {
			t.Fatalf("state %d: %v", gen, err)
		}
		if st.Gen != gen || st.Mountpoint != mp || st.MountID != 5 || st.Dev != "0:9" || st.Conn != 9 || string(st.Init) != "\x01" || string(st.Reply) != "\x02" {
			t.Errorf("state %d: %+v", gen, st)
		}
		// Sealed: not even its maker can change it.
		if _, err := unix.Pwrite(got[i].fds[0], []byte("x"), 0); err == nil {
			t.Errorf("state %d can be written", gen)
		}
	}
}

// mountEntry is this process's mountinfo entry at mp (the test cannot
// import mountutil, which imports this package).
func mountEntry(mp string) (MountRef, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return MountRef{}, err
	}
	defer f.Close()
	var ref MountRef
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[4] != mp {
			continue
		}
		for i := 6; i+1 < len(fs); i++ {
			if fs[i] == "-" {
				id, _ := strconv.Atoi(fs[0])
				ref, found = MountRef{ID: id, Dev: fs[2], FSType: fs[i+1]}, true
				break
			}
		}
	}
	if !found {
		return ref, fmt.Errorf("nothing mounted at %s", mp)
	}
	return ref, nil
}

// fuseMount mounts a FUSE connection of type fuse.tierfs at a new
// directory and never serves it (nothing here looks inside); it returns
// the directory and the /dev/fuse descriptor.
func fuseMount(t *testing.T) (string, int) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0", fd)
	if err := unix.Mount("tierfs", dir, "fuse.tierfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Unmount(dir, unix.MNT_DETACH)
		unix.Close(fd)
	})
	return dir, fd
}

func dup(t *testing.T, fd int) int {
	t.Helper()
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 10)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A supervisor takes over only a connection that is still the one
// mounted at its mountpoint, with the state its predecessor sealed:
// a descriptor of another live connection, of a dead one, of another
// device, a state not sealed or naming another mount, are all refused
// and dropped from the store; descriptors named for another mountpoint
// are closed and left alone.
func TestAdoptChecksWhatSystemdPassed(t *testing.T) {
	testenv.FUSE(t)
	mntA, fdA := fuseMount(t)
	_, fdB := fuseMount(t)
	factsA, err := connFacts(mntA, fdA, mountEntry)
	if err != nil {
		t.Fatal(err)
	}
	factsA.Init, factsA.Reply = []byte("init"), []byte("reply")
	if conn, ok := fuseConnection(fdA); ok && conn != factsA.Conn {
		t.Fatalf("fdinfo says connection %d, the mount's device %s", conn, factsA.Dev)
	}
	sealed := func(st storedState, gen int) int {
		st.Gen = gen
		fd, err := sealedState(st)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	unsealed := func(st storedState) int {
		fd, err := unix.MemfdCreate("state", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			t.Fatal(err)
		}
		st.Gen = 3
		b := fmt.Sprintf(`{"mountpoint":%q,"generation":3,"init":"aW5pdA==","reply":"cmVwbHk=","mount_id":%d,"dev":%q,"conn":%d}`, st.Mountpoint, st.MountID, st.Dev, st.Conn)
		unix.Pwrite(fd, []byte(b), 0)
		return fd
	}
	devNull := func() int {
		fd, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	unmounted := func() int {
		fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	otherMount := factsA
	otherMount.MountID += 1000

	type file struct {
		fd   int
		name string // after the prefix
	}
	for _, c := range []struct {
		name    string
		files   func() []file
		ok      bool
		removed []string // names dropped from the store, after the prefix
		why     string   // in the log
	}{
		{"the connection and its state", func() []file { return []file{{dup(t, fdA), "fuse"}, {sealed(factsA, 3), "state.3"}} }, true, nil, ""},
		{"an older state left by a crash", func() []file {
			return []file{{sealed(factsA, 2), "state.2"}, {dup(t, fdA), "fuse"}, {sealed(factsA, 3), "state.3"}}
		}, true, []string{"state.2"}, ""},
		{"another live connection's descriptor", func() []file { return []file{{dup(t, fdB), "fuse"}, {sealed(factsA, 3), "state.3"}} }, false, []string{"fuse", "state.3"}, "serves another connection"},
		{"a connection no longer mounted there", func() []file { return []file{{dup(t, fdA), "fuse"}, {sealed(otherMount, 3), "state.3"}} }, false, []string{"fuse", "state.3"}, "holds another mount"},
		{"a dead connection", func() []file { return []file{{unmounted(), "fuse"}, {sealed(factsA, 3), "state.3"}} }, false, []string{"fuse", "state.3"}, "the connection is gone"},
		{"not /dev/fuse", func() []file { return []file{{devNull(), "fuse"}, {sealed(factsA, 3), "state.3"}} }, false, []string{"fuse", "state.3"}, "not /dev/fuse"},
		{"a state anyone could have changed", func() []file { return []file{{dup(t, fdA), "fuse"}, {unsealed(factsA), "state.3"}} }, false, []string{"fuse", "state.3"}, "not sealed"},
		{"no state", func() []file { return []file{{dup(t, fdA), "fuse"}} }, false, []string{"fuse"}, "missing from the store"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logged strings.Builder
			u, read := fakeNotify(t, mntA, zerolog.New(&logged))
			var files []sdnotify.File
			for _, f := range c.files() {
				files = append(files, sdnotify.File{FD: f.fd, Name: u.prefix + f.name})
			}
			// Another mountpoint's, passed along: closed, not touched.
			files = append(files, sdnotify.File{FD: devNull(), Name: "tierfs.0123456789abcdef.fuse"})
			fd, st, ok := u.adoptFiles(files, mntA, mountEntry)
			for _, f := range files {
				if f.FD == fd {
					continue
				}
				if _, err := unix.FcntlInt(uintptr(f.FD), unix.F_GETFD, 0); err != unix.EBADF {
					t.Errorf("descriptor %d (%s) left open", f.FD, f.Name)
				}
			}
			if ok != c.ok {
				t.Fatalf("adopted: %v, want %v", ok, c.ok)
			}
			if ok {
				defer unix.Close(fd)
				if !sameFile(t, fd, fdA) || st.Gen != 3 || st.Mountpoint != mntA || string(st.Init) != "init" {
					t.Errorf("adopted fd %d, state %+v", fd, st)
				}
			} else if fd != -1 {
				t.Errorf("refused, but returned descriptor %d", fd)
			}
			var removed []string
			for _, m := range read() {
				name, found := strings.CutPrefix(m.text, "FDSTOREREMOVE=1\nFDNAME="+u.prefix)
				if !found {
					t.Errorf("systemd was told %q", m.text)
					continue
				}
				removed = append(removed, name)
			}
			if strings.Join(removed, " ") != strings.Join(c.removed, " ") {
				t.Errorf("removed from the store: %q, want %q", removed, c.removed)
			}
			if !strings.Contains(logged.String(), c.why) || !strings.Contains(logged.String(), "is not this mount's") {
				t.Errorf("the log does not say %q (nor of the other mount's descriptor):\n%s", c.why, logged.String())
			}
		})
	}
}
