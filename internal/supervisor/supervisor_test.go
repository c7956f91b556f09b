package supervisor

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// A message carries a descriptor across (SCM_RIGHTS): the one received
// is the same open file.
func TestMessageCarriesDescriptor(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	f, err := os.CreateTemp(t.TempDir(), "conn")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := send(fds[0], message{Op: "start", Gen: 7, Init: []byte{1, 2, 3}}, int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	m, fd, err := recv(fds[1])
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if m.Op != "start" || m.Gen != 7 || string(m.Init) != "\x01\x02\x03" {
		t.Fatalf("received %+v", m)
	}
	var a, b unix.Stat_t
	if fd < 0 || unix.Fstat(fd, &a) != nil || unix.Fstat(int(f.Fd()), &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
		t.Fatalf("received descriptor %d is not the file sent", fd)
	}
	// Without a descriptor, none arrives.
	if err := send(fds[0], message{Op: "drain"}, -1); err != nil {
		t.Fatal(err)
	}
	if m, fd, err := recv(fds[1]); err != nil || m.Op != "drain" || fd != -1 {
		t.Fatalf("received %+v, fd %d, %v", m, fd, err)
	}
}
