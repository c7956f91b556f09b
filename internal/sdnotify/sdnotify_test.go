package sdnotify

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func listen(t *testing.T, name string) int {
	t.Helper()
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s) })
	if err := unix.Bind(s, &unix.SockaddrUnix{Name: name}); err != nil {
		t.Fatal(err)
	}
	return s
}

func receive(t *testing.T, s int) (string, []int) {
	t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := unix.Recvmsg(s, buf, oob, unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatalf("nothing received: %v", err)
	}
	var fds []int
	cms, _ := unix.ParseSocketControlMessage(oob[:oobn])
	for _, cm := range cms {
		if f, err := unix.ParseUnixRights(&cm); err == nil {
			fds = append(fds, f...)
		}
	}
	return string(buf[:n]), fds
}

// Notifications reach a socket named by a path or an abstract name; a
// stored descriptor arrives attached, the same open file.
func TestNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	abstract := fmt.Sprintf("@tierfs-sdnotify-test-%d", os.Getpid())
	for _, addr := range []string{path, abstract} {
		s := listen(t, addr)
		t.Setenv("NOTIFY_SOCKET", addr)
		n := FromEnv()
		if n == nil {
			t.Fatalf("NOTIFY_SOCKET=%s: no notifier", addr)
		}
		if v, set := os.LookupEnv("NOTIFY_SOCKET"); set {
			t.Errorf("NOTIFY_SOCKET=%q left for children", v)
		}
		if err := n.Notify("READY=1\nSTATUS=serving"); err != nil {
			t.Fatal(err)
		}
		if got, fds := receive(t, s); got != "READY=1\nSTATUS=serving" || len(fds) != 0 {
			t.Errorf("%s: got %q with %d descriptors", addr, got, len(fds))
		}
		f, err := os.CreateTemp(t.TempDir(), "stored")
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Store("tierfs.x.fuse", int(f.Fd())); err != nil {
			t.Fatal(err)
		}
		got, fds := receive(t, s)
		if got != "FDSTORE=1\nFDNAME=tierfs.x.fuse" || len(fds) != 1 {
			t.Fatalf("%s: got %q with %d descriptors", addr, got, len(fds))
		}
		var a, b unix.Stat_t
		if unix.Fstat(fds[0], &a) != nil || unix.Fstat(int(f.Fd()), &b) != nil || a.Ino != b.Ino {
			t.Errorf("the descriptor received is not the one stored")
		}
		unix.Close(fds[0])
		f.Close()
		if err := n.Remove("tierfs.x.fuse"); err != nil {
			t.Fatal(err)
		}
		if got, _ := receive(t, s); got != "FDSTOREREMOVE=1\nFDNAME=tierfs.x.fuse" {
			t.Errorf("got %q", got)
		}
		// A bad name is refused before anything is sent.
		if err := n.Store("a:b", int(os.Stdin.Fd())); err == nil {
			t.Errorf("FDNAME a:b accepted")
		}
	}
	for _, v := range []string{"", "vsock:2:1234", "relative"} {
		t.Setenv("NOTIFY_SOCKET", v)
		if FromEnv() != nil {
			t.Errorf("NOTIFY_SOCKET=%q: a notifier", v)
		}
	}
}

func TestValidName(t *testing.T) {
	for name, ok := range map[string]bool{"tierfs.0123.fuse": true, "": false, "a:b": false, "a b": false, "é": false, strings.Repeat("x", 255): true, strings.Repeat("x", 256): false} {
		if ValidName(name) != ok {
			t.Errorf("ValidName(%q) = %v", name, !ok)
		}
	}
}

// TestMain is also TestListenFDs's helper process: it prints what
// ListenFDs found.
func TestMain(m *testing.M) {
	if os.Getenv("SDNOTIFY_HELPER") == "" {
		os.Exit(m.Run())
	}
	files, err := ListenFDs()
	for _, f := range files {
		var st unix.Stat_t
		unix.Fstat(f.FD, &st)
		cloexec, _ := unix.FcntlInt(uintptr(f.FD), unix.F_GETFD, 0)
		fmt.Printf("%d %s %d cloexec=%v\n", f.FD, f.Name, st.Size, cloexec&unix.FD_CLOEXEC != 0)
	}
	fmt.Printf("err=%v env=%q,%q,%q\n", err, os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"))
	os.Exit(0)
}

// The descriptors systemd passes are found from 3 on with their names,
// only by the process LISTEN_PID names, and the variables do not reach
// its children.
func TestListenFDs(t *testing.T) {
	dir := t.TempDir()
	var files []*os.File
	for i, size := range []int{1, 22} {
		p := filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	run := func(pid string) string {
		// sh execs the test binary: $$ is its pid, as systemd sets it.
		cmd := exec.Command("/bin/sh", "-c", "LISTEN_PID="+pid+" exec \"$0\"", os.Args[0])
		cmd.Env = append(os.Environ(), "SDNOTIFY_HELPER=1", "LISTEN_FDS=2", "LISTEN_FDNAMES=tierfs.x.fuse:tierfs.x.state.3")
		cmd.ExtraFiles = files
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		return string(out)
	}
	out := run("$$")
	for _, want := range []string{"3 tierfs.x.fuse 1 cloexec=true\n", "4 tierfs.x.state.3 22 cloexec=true\n", `err=<nil> env="","",""`} {
		if !strings.Contains(out, want) {
			t.Errorf("helper printed %q, want %q in it", out, want)
		}
	}
	// Meant for another process: not taken, and not passed on.
	out = run("1")
	if strings.Contains(out, "tierfs.x") || !strings.Contains(out, `err=<nil> env="","",""`) {
		t.Errorf("with another LISTEN_PID the helper printed %q", out)
	}
}
