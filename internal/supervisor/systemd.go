package supervisor

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/sdnotify"
)

// Under systemd (Type=notify, $NOTIFY_SOCKET set) the supervisor also
// keeps the connection in the unit's file-descriptor store
// (FileDescriptorStoreMax=), so that it outlives the supervisor too:
// `systemctl restart` (RestartKillSignal=SIGUSR1: the supervisor lets
// its daemon drain and exits, leaving the mount) and a supervisor's
// crash (Restart=on-failure) hand the same connection to the next
// supervisor, which takes it over as after a daemon's death. Stored:
//
//	tierfs.<hash>.fuse       the /dev/fuse descriptor
//	tierfs.<hash>.state.<g>  a sealed memfd: INIT, its answer, the
//	                         [mount] table, the mount's device and ID,
//	                         and the generation g of the next daemon
//
// <hash> names the mountpoint as the sockets do (SocketPath).

// MountRef is what mountinfo says of the mount at a mountpoint.
type MountRef struct {
	ID     int    // the mount's ID in this namespace
	Dev    string // "major:minor"; a FUSE mount's minor is its connection
	FSType string
}

// storedState is the memfd's content.
type storedState struct {
	Mountpoint string `json:"mountpoint"`
	Gen        int    `json:"generation"`
	Init       []byte `json:"init"`
	Reply      []byte `json:"reply"`
	Mount      []byte `json:"mount,omitempty"`
	MountID    int    `json:"mount_id"`
	Dev        string `json:"dev"`
	// Conn is the FUSE connection's number, /dev/fuse's fdinfo
	// "fuse_connection" where the kernel shows it, else Dev's minor.
	Conn int `json:"conn"`
}

const allSeals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

// unitStore is the supervisor's side of systemd: nil when the supervisor
// does not run under it.
type unitStore struct {
	n      *sdnotify.Notifier
	log    zerolog.Logger
	prefix string // "tierfs.<hash>."
	// stateGen is the generation whose state is stored (0: none);
	// fuseStored: the connection is.
	stateGen   int
	fuseStored bool
	ref        storedState // the connection's facts, Gen aside
}

func newUnitStore(mountpoint string, log zerolog.Logger) *unitStore {
	n := sdnotify.FromEnv()
	if n == nil {
		return nil
	}
	sock, err := SocketPath(mountpoint)
	if err != nil {
		return nil
	}
	hash := strings.TrimSuffix(filepath.Base(sock), ".supervisor.sock")
	u := &unitStore{n: n, log: log, prefix: "tierfs." + hash + "."}
	// systemd 254 and later say how many descriptors the unit may store.
	if v := os.Getenv("FDSTORE"); v != "" {
		os.Unsetenv("FDSTORE")
		if max, err := strconv.Atoi(v); err == nil && max < 3 {
			log.Warn().Int("FileDescriptorStoreMax", max).Msg("systemd: the unit stores fewer than 3 descriptors; a restart of the unit will lose the mount (set FileDescriptorStoreMax=4)")
			u.prefix = ""
		}
	}
	return u
}

// storing says whether the connection can be kept in the unit's store.
func (u *unitStore) storing() bool { return u != nil && u.prefix != "" }

func (u *unitStore) notify(state string) {
	if u == nil {
		return
	}
	if err := u.n.Notify(state); err != nil {
		u.log.Warn().Err(err).Msg("systemd: notification not sent")
	}
}

func (u *unitStore) fuseName() string       { return u.prefix + "fuse" }
func (u *unitStore) stateName(g int) string { return u.prefix + "state." + strconv.Itoa(g) }

// holdConn puts the connection in the store, once the first daemon has
// mounted it.
func (u *unitStore) holdConn(fd int, st storedState) {
	if !u.storing() {
		return
	}
	u.ref = st
	if err := u.n.Store(u.fuseName(), fd); err != nil {
		u.log.Warn().Err(err).Msg("systemd: cannot store the connection; a restart of the unit will lose the mount")
		return
	}
	u.fuseStored = true
}

// holdGen stores the state for generation g before that daemon starts
// (its handles carry g: a later supervisor must go on from it), then
// drops the one before: a crash between leaves both, and the higher wins.
func (u *unitStore) holdGen(g int) {
	if !u.storing() || !u.fuseStored {
		return
	}
	st := u.ref
	st.Gen = g
	fd, err := sealedState(st)
	if err != nil {
		u.log.Warn().Err(err).Msg("systemd: cannot store the mount's state; a restart of the unit will lose the mount")
		return
	}
	defer unix.Close(fd)
	if err := u.n.Store(u.stateName(g), fd); err != nil {
		u.log.Warn().Err(err).Msg("systemd: cannot store the mount's state; a restart of the unit will lose the mount")
		return
	}
	if u.stateGen > 0 && u.stateGen != g {
		u.n.Remove(u.stateName(u.stateGen))
	}
	u.stateGen = g
}

// release empties the store of this mount: the connection is gone or let
// go, and systemd must not hand it to another supervisor.
func (u *unitStore) release() {
	if !u.storing() {
		return
	}
	if u.fuseStored {
		u.n.Remove(u.fuseName())
		u.fuseStored = false
	}
	if u.stateGen > 0 {
		u.n.Remove(u.stateName(u.stateGen))
		u.stateGen = 0
	}
}

func sealedState(st storedState) (int, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return -1, err
	}
	fd, err := unix.MemfdCreate("tierfs-state", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, err
	}
	if _, err := unix.Pwrite(fd, b, 0); err != nil {
		unix.Close(fd)
		return -1, err
	}
	// Nobody, this process included, can change it from now on.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, allSeals); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// readState reads a stored state, which must be a memfd sealed against
// every change (as sealedState leaves it).
func readState(fd int) (storedState, error) {
	var st storedState
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return st, fmt.Errorf("not a sealed memfd: %w", err)
	}
	if seals&allSeals != allSeals {
		return st, fmt.Errorf("not sealed against writes (seals %#x)", seals)
	}
	var s unix.Stat_t
	if err := unix.Fstat(fd, &s); err != nil {
		return st, err
	}
	if s.Mode&unix.S_IFMT != unix.S_IFREG || s.Size <= 0 || s.Size > maxMessage {
		return st, fmt.Errorf("not a state (mode %o, %d bytes)", s.Mode, s.Size)
	}
	b := make([]byte, s.Size)
	if n, err := unix.Pread(fd, b, 0); err != nil || n != len(b) {
		return st, fmt.Errorf("reading it: %d bytes, %v", n, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, err
	}
	return st, nil
}

// fuseConnection is the connection a /dev/fuse descriptor of this
// process serves, as its fdinfo says (Linux 6.x: "fuse_connection");
// ok is false where the kernel does not say.
func fuseConnection(fd int) (conn int, ok bool) {
	f, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, found := strings.CutPrefix(sc.Text(), "fuse_connection:"); found {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			return n, err == nil
		}
	}
	return 0, false
}

// devMinor is the minor of "major:minor".
func devMinor(dev string) (int, bool) {
	_, m, ok := strings.Cut(dev, ":")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(m)
	return n, err == nil
}

// connFacts is what the state records of a freshly mounted connection.
func connFacts(mountpoint string, fd int, mounted func(string) (MountRef, error)) (storedState, error) {
	st := storedState{Mountpoint: mountpoint}
	if mounted == nil {
		return st, errors.New("no way to read the mount table")
	}
	ref, err := mounted(mountpoint)
	if err != nil {
		return st, err
	}
	st.MountID, st.Dev = ref.ID, ref.Dev
	conn, ok := fuseConnection(fd)
	if !ok {
		if conn, ok = devMinor(ref.Dev); !ok {
			return st, fmt.Errorf("mount device %q", ref.Dev)
		}
	}
	st.Conn = conn
	return st, nil
}

// adopt takes the connection systemd handed this supervisor for its
// mountpoint, if it is one and still the mount's: the descriptor is
// /dev/fuse, its connection is alive and is the one mounted at the
// mountpoint now (same mount ID and device, and on kernels that show it
// the descriptor's own connection number), and the state is a sealed
// memfd naming this mountpoint. Anything else of ours in the store is
// stale: it is dropped, and the supervisor mounts afresh (where a stale
// mount is still there, the mount fails, saying so, as without systemd).
func (u *unitStore) adopt(mountpoint string, mounted func(string) (MountRef, error)) (fd int, st storedState, ok bool) {
	if u == nil {
		return -1, st, false
	}
	files, err := sdnotify.ListenFDs()
	if err != nil {
		u.log.Warn().Err(err).Msg("systemd: the descriptors passed are unusable")
	}
	return u.adoptFiles(files, mountpoint, mounted)
}

// adoptFiles is adopt's check of the descriptors passed (all closed but
// the connection it returns).
func (u *unitStore) adoptFiles(files []sdnotify.File, mountpoint string, mounted func(string) (MountRef, error)) (fd int, st storedState, ok bool) {
	fuseFd, stateFd, stateGen := -1, -1, 0
	var stale []string
	for _, f := range files {
		switch {
		case !u.storing() || !strings.HasPrefix(f.Name, u.prefix):
			// Not ours (another mountpoint's, or nobody's): not
			// touched, not kept.
			u.log.Warn().Str("name", f.Name).Msg("systemd: a passed descriptor is not this mount's; closing it")
			unix.Close(f.FD)
		case f.Name == u.fuseName() && fuseFd < 0:
			fuseFd = f.FD
		case strings.HasPrefix(f.Name, u.prefix+"state."):
			g, err := strconv.Atoi(strings.TrimPrefix(f.Name, u.prefix+"state."))
			if err != nil || g <= stateGen {
				stale = append(stale, f.Name)
				unix.Close(f.FD)
				continue
			}
			if stateFd >= 0 {
				stale = append(stale, u.stateName(stateGen))
				unix.Close(stateFd)
			}
			stateFd, stateGen = f.FD, g
		default:
			stale = append(stale, f.Name)
			unix.Close(f.FD)
		}
	}
	for _, name := range stale {
		u.n.Remove(name)
	}
	if fuseFd < 0 && stateFd < 0 {
		return -1, st, false
	}
	fail := func(why string, err error) (int, storedState, bool) {
		u.log.Error().Err(err).Str("mountpoint", mountpoint).Msg("systemd: the stored connection is not taken over: " + why + "; dropping it and mounting afresh")
		if fuseFd >= 0 {
			unix.Close(fuseFd)
			u.n.Remove(u.fuseName())
		}
		if stateFd >= 0 {
			unix.Close(stateFd)
			u.n.Remove(u.stateName(stateGen))
		}
		return -1, storedState{}, false
	}
	if fuseFd < 0 || stateFd < 0 {
		return fail("the connection or its state is missing from the store", nil)
	}
	st, err := readState(stateFd)
	if err != nil {
		return fail("its state", err)
	}
	if st.Mountpoint != mountpoint || st.Gen != stateGen || len(st.Init) == 0 || len(st.Reply) == 0 {
		return fail("its state is another mount's", fmt.Errorf("state for %q generation %d", st.Mountpoint, st.Gen))
	}
	if err := isDevFuse(fuseFd); err != nil {
		return fail("the descriptor", err)
	}
	pfd := []unix.PollFd{{Fd: int32(fuseFd), Events: unix.POLLIN}}
	if _, err := unix.Poll(pfd, 0); err != nil || pfd[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
		return fail("the connection is gone (unmounted or aborted)", err)
	}
	ref, err := mounted(mountpoint)
	if err != nil {
		return fail("no mount at the mountpoint", err)
	}
	if ref.FSType != "fuse.tierfs" || ref.ID != st.MountID || ref.Dev != st.Dev {
		return fail("the mountpoint holds another mount", fmt.Errorf("%s (ID %d, device %s), stored: ID %d, device %s", ref.FSType, ref.ID, ref.Dev, st.MountID, st.Dev))
	}
	if conn, shown := fuseConnection(fuseFd); shown && conn != st.Conn {
		return fail("the descriptor serves another connection", fmt.Errorf("connection %d, the mount's is %d", conn, st.Conn))
	} else if !shown {
		u.log.Info().Msg("systemd: this kernel does not show a /dev/fuse descriptor's connection; trusting the store (only the unit's main process can fill it)")
	}
	unix.CloseOnExec(fuseFd)
	unix.Close(stateFd)
	u.fuseStored, u.stateGen = true, stateGen
	u.ref = st
	return fuseFd, st, true
}

// isDevFuse checks that fd is the FUSE device, whatever node it was
// opened by.
func isDevFuse(fd int) error {
	var a unix.Stat_t
	if err := unix.Fstat(fd, &a); err != nil {
		return err
	}
	// The misc device 10:229 (the kernel's FUSE_MINOR), not a path that
	// could be swapped.
	if a.Mode&unix.S_IFMT != unix.S_IFCHR || a.Rdev != unix.Mkdev(10, 229) {
		return fmt.Errorf("not /dev/fuse (mode %o, device %d:%d)", a.Mode, unix.Major(a.Rdev), unix.Minor(a.Rdev))
	}
	return nil
}

// statusLine is systemd's STATUS= for the daemon serving.
func statusLine(d *daemon, takeovers int) string {
	return fmt.Sprintf("STATUS=serving: daemon pid %d, generation %d, %d takeovers", d.pid, d.gen, takeovers)
}

// Handed says whether systemd passed this process descriptors named for
// mountpoint's connection: the mountpoint may then be a live mount that
// nobody serves until the supervisor takes it over, and must not be
// looked at before (Run validates what was passed).
func Handed(mountpoint string) bool {
	pid, _ := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if pid != os.Getpid() || os.Getenv("LISTEN_FDS") == "" {
		return false
	}
	sock, err := SocketPath(mountpoint)
	if err != nil {
		return false
	}
	fuse := "tierfs." + strings.TrimSuffix(filepath.Base(sock), ".supervisor.sock") + ".fuse"
	for _, n := range strings.Split(os.Getenv("LISTEN_FDNAMES"), ":") {
		if n == fuse {
			return true
		}
	}
	return false
}
