// Package sdnotify speaks systemd's side channels for a service: the
// notification socket (sd_notify(3): READY=1, STOPPING=1, STATUS=...,
// and FDSTORE=1 with descriptors for the unit's file-descriptor store)
// and the descriptors a (re)started service is handed (sd_listen_fds(3):
// LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES). Written against systemd's
// documented protocol with x/sys/unix alone.
package sdnotify

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// listenFDsStart is the first descriptor systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// Notifier sends to the service manager's notification socket.
type Notifier struct {
	addr string
}

// FromEnv is the notifier of $NOTIFY_SOCKET, nil when the process does not
// run under a service manager that listens. It unsets the variable: the
// processes this one starts are not the service's main process, and
// systemd (NotifyAccess=main) would not hear them.
func FromEnv() *Notifier {
	addr := os.Getenv("NOTIFY_SOCKET")
	os.Unsetenv("NOTIFY_SOCKET")
	if addr == "" || (addr[0] != '/' && addr[0] != '@') {
		// Only paths and abstract names: an AF_VSOCK address
		// (vsock:...) is a VM's manager, which stores no descriptors.
		return nil
	}
	return &Notifier{addr: addr}
}

// Notify sends state (newline-separated VAR=value assignments) with
// fds, if any, attached (SCM_RIGHTS).
func (n *Notifier) Notify(state string, fds ...int) error {
	if n == nil {
		return errors.New("sdnotify: no notification socket")
	}
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// A name starting with '@' is an abstract socket (x/sys/unix maps it).
	if err := unix.Sendmsg(s, []byte(state), oob, &unix.SockaddrUnix{Name: n.addr}, 0); err != nil {
		return fmt.Errorf("sd_notify %q: %w", firstLine(state), err)
	}
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// ValidName reports whether name may be an FDNAME=: up to 255 printable
// ASCII characters, no ':' (the separator of $LISTEN_FDNAMES).
func ValidName(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x21 || c > 0x7e || c == ':' {
			return false
		}
	}
	return true
}

// Store puts fd in the unit's file-descriptor store under name
// (FDSTORE=1, FDNAME=): systemd keeps a copy and hands it to the
// service's next process on a restart. systemd does not answer: a unit
// without FileDescriptorStoreMax= (or with the store full) drops it,
// saying so in its own log.
func (n *Notifier) Store(name string, fd int) error {
	if !ValidName(name) {
		return fmt.Errorf("sdnotify: %q is not a valid descriptor name", name)
	}
	return n.Notify("FDSTORE=1\nFDNAME="+name, fd)
}

// Remove takes every descriptor named name out of the store.
func (n *Notifier) Remove(name string) error {
	if !ValidName(name) {
		return fmt.Errorf("sdnotify: %q is not a valid descriptor name", name)
	}
	return n.Notify("FDSTOREREMOVE=1\nFDNAME=" + name)
}

// File is a descriptor handed to the process at its start.
type File struct {
	FD   int
	Name string
}

// ListenFDs returns the descriptors systemd passed to this process
// (from 3 on, named by $LISTEN_FDNAMES), marked close-on-exec, and unsets
// the variables so that no child takes them for its own. Variables meant
// for another process ($LISTEN_PID not ours) are ignored (and unset).
func ListenFDs() ([]File, error) {
	pidS, nS, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if nS == "" {
		return nil, nil
	}
	if pid, err := strconv.Atoi(pidS); err != nil || pid != os.Getpid() {
		return nil, nil
	}
	n, err := strconv.Atoi(nS)
	if err != nil || n < 0 || n > 1<<16 {
		return nil, fmt.Errorf("LISTEN_FDS=%q: not a count", nS)
	}
	var nameList []string
	if names != "" {
		nameList = strings.Split(names, ":")
	}
	out := make([]File, 0, n)
	for i := 0; i < n; i++ {
		fd := listenFDsStart + i
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return out, fmt.Errorf("LISTEN_FDS=%d: descriptor %d: %w", n, fd, err)
		}
		unix.CloseOnExec(fd)
		f := File{FD: fd, Name: "unknown"}
		if i < len(nameList) {
			f.Name = nameList[i]
		}
		out = append(out, f)
	}
	return out, nil
}
