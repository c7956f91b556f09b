package mountutil

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/fusedev"
	"github.com/tierfs/tierfs/internal/fuseuring"
	"github.com/tierfs/tierfs/internal/supervisor"
)

// SupervisionOff says why a mount with the [mount] table c is served
// without a supervisor ("" when it is supervised): opted out, not root
// (the supervised daemon mounts by hand), a kernel that cannot resend
// the requests a dead daemon had read (FUSE_NOTIFY_RESEND, Linux 6.9: a
// takeover would leave their callers waiting until the unmount). Where
// io_uring could serve, supervision wins: the mount is served through
// /dev/fuse, on which a kill -9 fails no call, unless
// supervisor_io_uring.
func SupervisionOff(c Config) string {
	if !c.Supervisor {
		return "[mount] supervisor = false"
	}
	if os.Geteuid() != 0 {
		return "not root: the supervised daemon mounts by hand"
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		if rel := unix.ByteSliceToString(u.Release[:]); !kernelAtLeast(rel, 6, 9) {
			return fmt.Sprintf("Linux %s cannot resend the requests a dead daemon had read (FUSE_NOTIFY_RESEND, Linux 6.9+)", rel)
		}
	}
	return ""
}

// kernelAtLeast reports whether a kernel release ("6.18.4-foo") is
// major.minor or later; one that does not parse is taken as older.
func kernelAtLeast(release string, major, minor int) bool {
	fields := strings.FieldsFunc(release, func(r rune) bool { return r < '0' || r > '9' })
	if len(fields) < 2 {
		return false
	}
	maj, err1 := strconv.Atoi(fields[0])
	min, err2 := strconv.Atoi(fields[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return maj > major || (maj == major && min >= minor)
}

// Supervised says whether this process is a daemon under a supervisor
// (internal/supervisor: [mount] supervisor), and its generation: 1 for
// the daemon that mounts, more for one that takes a live connection over.
func Supervised() (gen int, ok bool, err error) {
	c, err := supervisor.Current()
	if err != nil || c == nil {
		return 0, false, err
	}
	return c.Gen(), true, nil
}

// TakingOver says whether this daemon serves a connection a predecessor
// mounted: the mountpoint is then live, and is not to be prepared.
func TakingOver() bool {
	c, _ := supervisor.Current()
	if c == nil {
		return false
	}
	_, _, _, ok := c.Takeover()
	return ok
}

// TakeoverConfig is the [mount] table the connection was mounted with,
// for a daemon that takes it over: it serves with that one, whatever the
// file says now, since INIT was negotiated by it (a changed [mount] waits
// for the next mount, as `tierfs reload` says).
func TakeoverConfig() (Config, bool) {
	c, _ := supervisor.Current()
	if c == nil || !TakingOver() || len(c.MountConfig()) == 0 {
		return Config{}, false
	}
	var m Config
	if err := json.Unmarshal(c.MountConfig(), &m); err != nil {
		return Config{}, false
	}
	return m, true
}

// MountSupervised is Mount for a daemon under a supervisor: requests come
// through /dev/fuse served by internal/fusedev, and over io_uring when c
// asks for it (IOUring and SupervisorIOUring) and the kernel agrees (the rings' entries live in memory
// the supervisor holds, so that a successor can answer what they held:
// internal/fuseuring's region.go). The first daemon mounts by hand,
// answers INIT and hands the descriptors and INIT to the supervisor; a
// later one gets them from the supervisor and mounts nothing. notify is
// attached to the connection for the node bridge's notifications;
// before, when set, sees each request first (fusedev.Server.Before).
func MountSupervised(mountpoint string, rawFS fuse.RawFileSystem, mo fuse.MountOptions, c Config, log zerolog.Logger,
	notify *fusedev.Notifier, before func(uint32, []uint64) fuse.Status) (*Server, error) {
	sup, err := supervisor.Current()
	if err != nil {
		return nil, err
	}
	if sup == nil {
		return nil, fmt.Errorf("mountutil: MountSupervised without a supervisor")
	}
	if mo.MaxWrite <= 0 {
		mo.MaxWrite = 128 << 10
	}
	switch {
	case c.IOUring && c.SupervisorIOUring:
		if c.EnableURingSwitch {
			switchURingOn(log)
		}
	case c.IOUring && c.EnableURingSwitch:
		log.Info().Msg("supervised mount: requests come through /dev/fuse, and the kernel's io_uring switch is left as it is (enable_uring_switch serves only with supervisor_io_uring or supervisor = false)")
	}
	s := &Server{mountpoint: mountpoint, rawFS: rawFS, c: c, log: log, devFd: -1, mo: mo, sup: sup}
	if fd, init, reply, ok := sup.Takeover(); ok {
		s.devFd, s.takeover = fd, true
		if c.IOUring {
			// As the first daemon asked: the INIT replayed must match.
			s.mo.ExtraCapabilities |= fuse.CAP_OVER_IO_URING
		}
		s.dev = fusedev.New(fd, rawFS, &s.mo, log)
		if err := s.dev.Replay(init, reply); err != nil {
			return nil, err
		}
		if s.uringAgreed() {
			// Every request of this connection comes over the rings
			// now: without them nothing is served.
			ringFd, layout := sup.Ring()
			if ringFd < 0 {
				return nil, errors.New("takeover: the connection serves over io_uring and the supervisor holds no ring memory")
			}
			u, err := fuseuring.Adopt(ringFd, layout, log)
			if err != nil {
				return nil, fmt.Errorf("takeover: %w", err)
			}
			s.uring = u
		}
	} else {
		var u *fuseuring.Server
		if c.IOUring && !c.SupervisorIOUring {
			log.Info().Msg("supervised mount: requests come through /dev/fuse ([mount] supervisor_io_uring is off: a kill -9 over io_uring can fail calls in flight)")
		}
		if c.IOUring && c.SupervisorIOUring {
			if u = sharedRings(&s.mo, log); u != nil {
				s.mo.ExtraCapabilities |= fuse.CAP_OVER_IO_URING
			}
		}
		fd, err := mountDevFuse(mountpoint, &s.mo)
		if err != nil {
			if u != nil {
				u.Close()
			}
			return nil, err
		}
		s.devFd, s.byHand = fd, true
		s.dev = fusedev.New(fd, rawFS, &s.mo, log)
		init, reply, err := s.dev.ReadInit()
		if err == nil && u != nil {
			if s.uringAgreed() {
				s.uring = u
			} else {
				log.Warn().Msg("the kernel did not offer FUSE over io_uring at INIT; serving through /dev/fuse")
				u.Close()
				u = nil
			}
		}
		if err == nil {
			// What the successors serve with: io_uring only if this
			// connection has it.
			saved := c
			saved.IOUring = u != nil
			ringFd, layout := -1, []byte(nil)
			if u != nil {
				ringFd, layout = u.Region()
			}
			var cfg []byte
			if cfg, err = json.Marshal(saved); err == nil {
				err = sup.Conn(fd, init, reply, cfg, ringFd, layout)
			}
		}
		if err != nil {
			if u != nil {
				u.Close()
			}
			unix.Unmount(mountpoint, unix.MNT_DETACH)
			unix.Close(fd)
			return nil, err
		}
	}
	s.dev.Before = before
	if s.uring != nil {
		s.uring.Before = before
	}
	notify.Attach(s.dev)
	return s, nil
}

// sharedRings sets up rings whose memory a successor can take over, or
// says in the log why requests will come through /dev/fuse.
func sharedRings(mo *fuse.MountOptions, log zerolog.Logger) *fuseuring.Server {
	if err := fuseuring.Available(); err != nil {
		log.Info().Str("reason", err.Error()).Msg("FUSE over io_uring unavailable; serving through /dev/fuse")
		return nil
	}
	u, err := fuseuring.NewShared(mo.MaxWrite, log)
	if err != nil {
		log.Warn().Err(err).Msg("cannot serve over io_uring; serving through /dev/fuse")
		return nil
	}
	return u
}

// uringAgreed says whether INIT settled on FUSE over io_uring: asked for
// and offered.
func (s *Server) uringAgreed() bool {
	return s.mo.ExtraCapabilities&fuse.CAP_OVER_IO_URING != 0 && s.dev.KernelSettings().Flags64()&fuse.CAP_OVER_IO_URING != 0
}

// startSupervised serves: on a takeover, the requests the dead daemon had
// read from /dev/fuse are asked for again first (before any reader of
// ours could be answering one), and the rings answer what the dead
// daemon's entries held.
func (s *Server) startSupervised() error {
	if s.takeover {
		if !s.dev.CanResend() {
			s.log.Warn().Msg("takeover: the kernel cannot resend the requests the previous daemon had read (FUSE_NOTIFY_RESEND, Linux 6.9); their callers wait until the mount is gone")
		} else if err := s.dev.Resend(); err != nil {
			s.log.Error().Err(err).Msg("takeover: FUSE_NOTIFY_RESEND failed; the requests the previous daemon had read stay unanswered")
		}
	}
	s.sup.OnDrain(func() {
		if s.uring != nil {
			s.uring.Stop(func(queues []int, n int) map[int]bool {
				ran, err := s.kickQueues(queues, n)
				if err != nil {
					s.log.Warn().Err(err).Msg("drain: cannot empty the rings' waiting entries; a request the kernel hands them as this daemon exits fails with ECANCELED")
				}
				return ran
			})
		}
		s.dev.Stop()
	})
	preparePipes(s.dev, s.c, s.uring != nil, s.log)
	s.dev.Serve()
	if s.uring != nil {
		if err := s.uring.Start(s.devFd, s.rawFS, &s.mo, s.dev.KernelSettings()); err != nil {
			// The rings cannot be served, and every request waits for
			// them: let the connection go.
			s.log.Error().Err(err).Msg("io_uring: cannot serve the rings")
			return fmt.Errorf("io_uring: %w", err)
		}
		if s.takeover {
			// A request that came while no entry of its CPU's queue was
			// registered waits in that queue, and the kernel hands it
			// out only when an entry of the queue commits an answer
			// (registering does not): one request of our own per queue.
			queues, _ := s.uring.Queues()
			go func() {
				if _, err := s.kickQueues(allQueues(queues), 1); err != nil {
					s.log.Error().Err(err).Msg("takeover: requests that came while no daemon served may wait until the next request from their CPU")
				}
			}()
		}
	}
	go func() {
		<-s.dev.Done()
		// The connection is gone: nothing is left to take over.
		s.sup.Exiting()
	}()
	if !s.takeover && s.c.ReadAheadKB > 0 {
		if err := setReadAhead(s.mountpoint, s.c.ReadAheadKB); err != nil {
			s.log.Warn().Err(err).Msg("cannot set the mount's read-ahead; the kernel's default stays")
		}
	}
	if err := s.sup.Serving(); err != nil {
		s.log.Warn().Err(err).Msg("cannot tell the supervisor that the mount is served")
	}
	return nil
}

func allQueues(n int) []int {
	q := make([]int, n)
	for i := range q {
		q[i] = i
	}
	return q
}
