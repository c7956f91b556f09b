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
	ring, err := os.CreateTemp(t.TempDir(), "ring")
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	if err := send(fds[0], message{Op: "start", Gen: 7, Init: []byte{1, 2, 3}, Ring: []byte(`{}`)}, int(f.Fd()), int(ring.Fd())); err != nil {
		t.Fatal(err)
	}
	m, fd, err := recv(fds[1])
	if err != nil {
		t.Fatal(err)
	}
	defer closeFds(fd)
	if m.Op != "start" || m.Gen != 7 || string(m.Init) != "\x01\x02\x03" || string(m.Ring) != "{}" {
		t.Fatalf("received %+v", m)
	}
	for i, want := range []*os.File{f, ring} {
		var a, b unix.Stat_t
		if fd[i] < 0 || unix.Fstat(fd[i], &a) != nil || unix.Fstat(int(want.Fd()), &b) != nil || a.Ino != b.Ino || a.Dev != b.Dev {
			t.Fatalf("received descriptor %d (%d) is not the file sent", i, fd[i])
		}
	}
	// The connection alone: the second slot stays empty.
	if err := send(fds[0], message{Op: "start"}, int(f.Fd()), -1); err != nil {
		t.Fatal(err)
	}
	m, fd2, err := recv(fds[1])
	if err != nil || fd2[0] < 0 || fd2[1] != -1 {
		t.Fatalf("received %+v, fds %v, %v", m, fd2, err)
	}
	closeFds(fd2)
	// Without a descriptor, none arrives.
	if err := send(fds[0], message{Op: "drain"}); err != nil {
		t.Fatal(err)
	}
	if m, fd, err := recv(fds[1]); err != nil || m.Op != "drain" || fd != [maxFds]int{-1, -1} {
		t.Fatalf("received %+v, fd %v, %v", m, fd, err)
	}
}
