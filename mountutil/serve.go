package mountutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/fusedev"
	"github.com/tierfs/tierfs/internal/fuseuring"
	"github.com/tierfs/tierfs/internal/supervisor"
)

// Server is a FUSE mount and what serves it: go-fuse's server, which reads
// /dev/fuse, and the io_uring queues when requests come that way.
type Server struct {
	srv        *fuse.Server
	mountpoint string
	rawFS      fuse.RawFileSystem
	mo         fuse.MountOptions
	c          Config
	log        zerolog.Logger
	uring      *fuseuring.Server // nil unless requests come over io_uring
	devFd      int               // the /dev/fuse descriptor of a mount made here
	byHand     bool              // mounted here (for io_uring), not by go-fuse
	started    bool
	// dev serves /dev/fuse instead of go-fuse's server on a supervised
	// mount (supervised.go); srv is nil then.
	dev      *fusedev.Server
	sup      *supervisor.Child
	takeover bool // dev took the connection over from a predecessor
}

// Mount mounts rawFS at mountpoint with mo and answers the kernel's INIT;
// nothing else is served until Start, so that the caller can settle what
// depends on the kernel's answer (KernelSettings) first. Of c it reads
// IOUring (and asks the kernel for FUSE over io_uring where that can be
// had: otherwise it says why in the log and serves through /dev/fuse),
// EnableURingSwitch (with IOUring, it turns the kernel's switch on first)
// and ReadAheadKB (set by Start).
func Mount(mountpoint string, rawFS fuse.RawFileSystem, mo fuse.MountOptions, c Config, log zerolog.Logger) (*Server, error) {
	s := &Server{mountpoint: mountpoint, rawFS: rawFS, c: c, log: log, devFd: -1}
	if mo.MaxWrite <= 0 {
		// go-fuse's default, made explicit: the rings' payload buffers
		// and max_read are sized by it before go-fuse sees it.
		mo.MaxWrite = 128 << 10
	}
	target := mountpoint
	if c.IOUring {
		if c.EnableURingSwitch {
			switchURingOn(log)
		}
		u, fd, err := mountForURing(mountpoint, &mo, log)
		if err != nil {
			return nil, err
		}
		if u != nil {
			s.byHand, s.devFd, s.uring = true, fd, u
			target = fmt.Sprintf("/dev/fd/%d", fd)
			// go-fuse would mount on /dev/fd/N itself (on /dev/fuse):
			// it only takes the descriptor when not mounting directly.
			mo.DirectMount = false
			mo.ExtraCapabilities |= fuse.CAP_OVER_IO_URING
		}
	}
	s.mo = mo
	srv, err := fuse.NewServer(rawFS, target, &s.mo)
	if err != nil {
		if s.byHand {
			unix.Unmount(mountpoint, unix.MNT_DETACH)
			s.uring.Close()
		}
		return nil, err
	}
	s.srv = srv
	return s, nil
}

// KernelSettings is the kernel's INIT: its version and the capabilities it
// offered.
func (s *Server) KernelSettings() *fuse.InitIn {
	if s.dev != nil {
		return s.dev.KernelSettings()
	}
	return s.srv.KernelSettings()
}

// Start serves the mount: over io_uring if it was asked for and the
// kernel agreed at INIT, with /dev/fuse beside it; then it turns FUSE_POLL
// off (stopPolls) and sets the mount's read-ahead. On error nothing is
// mounted any more.
func (s *Server) Start() error {
	if s.started {
		return errors.New("mountutil: Start called twice")
	}
	s.started = true
	if s.dev != nil {
		return s.startSupervised()
	}
	if s.uring != nil {
		if k := s.srv.KernelSettings(); k.Flags64()&fuse.CAP_OVER_IO_URING == 0 {
			s.log.Warn().Msg("the kernel did not offer FUSE over io_uring at INIT; serving through /dev/fuse")
			s.uring.Close()
			s.uring = nil
		} else if err := s.uring.Start(s.devFd, s.rawFS, &s.mo, k); err != nil {
			// The kernel waits for registrations that will not come:
			// nothing can be served.
			s.uring.Close()
			s.uring = nil
			unix.Unmount(s.mountpoint, unix.MNT_DETACH)
			go s.srv.Serve() // sees the unmount and ends
			return fmt.Errorf("io_uring: %w", err)
		}
	}
	go s.srv.Serve()
	if err := s.srv.WaitMount(); err != nil {
		return err
	}
	if s.byHand {
		// go-fuse's WaitMount does this only on a mount it made itself,
		// not on our /dev/fd/N one.
		if err := stopPolls(s.mountpoint); err != nil {
			s.log.Warn().Err(err).Msg("cannot turn FUSE_POLL off; a file this process opens on its own mount may hang it")
		}
	}
	if s.c.ReadAheadKB > 0 {
		if err := setReadAhead(s.mountpoint, s.c.ReadAheadKB); err != nil {
			s.log.Warn().Err(err).Msg("cannot set the mount's read-ahead; the kernel's default stays")
		}
	}
	return nil
}

// WaitMount waits until the mount is up (Start did).
func (s *Server) WaitMount() error {
	if s.dev != nil {
		return nil // Start serves before it returns
	}
	return s.srv.WaitMount()
}

// IOUring reports whether requests are served over io_uring.
func (s *Server) IOUring() bool { return s.uring != nil }

// URingServed counts the requests answered over io_uring.
func (s *Server) URingServed() uint64 {
	if s.uring == nil {
		return 0
	}
	return s.uring.Served()
}

// URingQueues says how the io_uring transport is laid out: queues (one
// per possible CPU) and serving threads per queue; zeros without it.
func (s *Server) URingQueues() (queues, threadsPerQueue int) {
	if s.uring == nil {
		return 0, 0
	}
	return s.uring.Queues()
}

// Unmount unmounts the filesystem and waits for the serving to end.
func (s *Server) Unmount() error {
	if !s.byHand && s.dev == nil {
		return s.srv.Unmount()
	}
	var err error
	for try, delay := 0, time.Duration(0); try < 5; try++ {
		if err = unix.Unmount(s.mountpoint, 0); err == nil || errors.Is(err, unix.EINVAL) {
			err = nil
			break
		}
		// The kernel lets go of the last file a moment after close.
		delay = 2*delay + 5*time.Millisecond
		time.Sleep(delay)
	}
	if err != nil {
		return err
	}
	s.Wait()
	return nil
}

// Splices says whether large WRITEs' data is spliced from /dev/fuse to
// the backing (a supervised mount, [mount] splice_writes, pipes made).
func (s *Server) Splices() bool { return s.dev != nil && s.uring == nil && s.dev.Splices() }

// SplicedWrites counts the WRITEs whose data went from a pipe to the
// backing (a supervised mount, [mount] splice_writes).
func (s *Server) SplicedWrites() uint64 {
	if s.dev == nil {
		return 0
	}
	return s.dev.SplicedWrites()
}

// Wait waits until the filesystem is unmounted and every request served.
func (s *Server) Wait() {
	if s.dev != nil {
		s.dev.Wait()
		if s.uring != nil {
			s.uring.Wait()
		}
		return
	}
	s.srv.Wait()
	if s.uring != nil {
		s.uring.Wait()
	}
}

// mountForURing sets up the rings, then mounts mountpoint by hand, as
// go-fuse's direct mount does, so that the daemon holds the /dev/fuse
// descriptor the io_uring commands name: the rings exist before INIT can
// ask for them. When io_uring cannot be had it says why in the log and
// returns u nil and fd -1, and go-fuse mounts as usual.
func mountForURing(mountpoint string, mo *fuse.MountOptions, log zerolog.Logger) (u *fuseuring.Server, fd int, err error) {
	if err := fuseuring.Available(); err != nil {
		// The kernel's switch is off by default: the usual case, not
		// a problem.
		log.Info().Str("reason", err.Error()).Msg("FUSE over io_uring unavailable; serving through /dev/fuse")
		return nil, -1, nil
	}
	if os.Geteuid() != 0 {
		log.Info().Msg("FUSE over io_uring needs a direct mount (root); serving through /dev/fuse")
		return nil, -1, nil
	}
	u, err = fuseuring.New(mo.MaxWrite, log)
	if err != nil {
		log.Warn().Err(err).Msg("cannot serve over io_uring; serving through /dev/fuse")
		return nil, -1, nil
	}
	fd, err = mountDevFuse(mountpoint, mo)
	if err != nil {
		u.Close()
		return nil, -1, err
	}
	return u, fd, nil
}

// pollHackName is the file go-fuse answers for itself on every mount
// (its poll hack): a POLL of it is answered ENOSYS.
const pollHackName = ".go-fuse-epoll-hack"

// stopPolls makes the kernel answer every poll on the mount itself
// (fc->no_poll, set by one FUSE_POLL answered ENOSYS). Otherwise a file
// this process opens on its own mount is added to the Go runtime's epoll,
// and the kernel holds that epoll's lock while the FUSE_POLL waits: sysmon
// and the netpoller block on it, the threads that hold the Ps do too, and
// the serving goroutines that would answer get no P (TestURingOwnOpens).
func stopPolls(mountpoint string) error {
	fd, err := unix.Open(filepath.Join(mountpoint, pollHackName), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// poll(2), not the runtime's epoll: it holds no lock while it waits.
	for {
		_, err = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		if err != unix.EINTR {
			return err
		}
	}
}

// mountDevFuse opens /dev/fuse and mounts it at mountpoint with the
// options go-fuse's direct mount would pass.
func mountDevFuse(mountpoint string, mo *fuse.MountOptions) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return -1, err
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	data := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", st.Mode&unix.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", mo.MaxWrite),
	}
	data = append(data, mo.Options...)
	if mo.AllowOther {
		data = append(data, "allow_other")
	}
	if err := unix.Mount(mo.FsName, mountpoint, "fuse."+mo.Name, unix.MS_NOSUID|unix.MS_NODEV, strings.Join(data, ",")); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("mount %s: %w", mountpoint, err)
	}
	return fd, nil
}

// setReadAhead writes the read-ahead of the mount's backing device info
// (a FUSE mount has its own, named after its anonymous device number).
func setReadAhead(mountpoint string, kb int) error {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return err
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(p, []byte(strconv.Itoa(kb)), 0o644)
}
