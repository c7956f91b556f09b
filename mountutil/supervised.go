package mountutil

import (
	"encoding/json"
	"fmt"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/fusedev"
	"github.com/tierfs/tierfs/internal/supervisor"
)

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
// through /dev/fuse served by internal/fusedev, never io_uring (the
// rings die with a daemon; a takeover serves /dev/fuse). The first daemon
// mounts by hand, answers INIT and hands the descriptor and INIT to the
// supervisor; a later one gets them from the supervisor and mounts
// nothing. notify is attached to the connection for the node bridge's
// notifications; before, when set, sees each request first
// (fusedev.Server.Before).
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
	if c.IOUring {
		log.Info().Bool("enable_uring_switch_ignored", c.EnableURingSwitch).
			Msg("supervised mount: requests come through /dev/fuse (a takeover cannot keep a dead daemon's io_uring queues); the kernel's io_uring switch is left as it is")
	}
	s := &Server{mountpoint: mountpoint, rawFS: rawFS, c: c, log: log, devFd: -1, mo: mo, sup: sup}
	if fd, init, reply, ok := sup.Takeover(); ok {
		s.devFd, s.takeover = fd, true
		s.dev = fusedev.New(fd, rawFS, &s.mo, log)
		if err := s.dev.Replay(init, reply); err != nil {
			return nil, err
		}
	} else {
		fd, err := mountDevFuse(mountpoint, &s.mo)
		if err != nil {
			return nil, err
		}
		s.devFd, s.byHand = fd, true
		s.dev = fusedev.New(fd, rawFS, &s.mo, log)
		init, reply, err := s.dev.ReadInit()
		if err == nil {
			var cfg []byte
			if cfg, err = json.Marshal(c); err == nil {
				err = sup.Conn(fd, init, reply, cfg)
			}
		}
		if err != nil {
			unix.Unmount(mountpoint, unix.MNT_DETACH)
			unix.Close(fd)
			return nil, err
		}
	}
	s.dev.Before = before
	notify.Attach(s.dev)
	return s, nil
}

// startSupervised serves: on a takeover, the requests the dead daemon had
// read are asked for again first (before any reader of ours could be
// answering one).
func (s *Server) startSupervised() error {
	if s.takeover {
		if !s.dev.CanResend() {
			s.log.Warn().Msg("takeover: the kernel cannot resend the requests the previous daemon had read (FUSE_NOTIFY_RESEND, Linux 6.9); their callers wait until the mount is gone")
		} else if err := s.dev.Resend(); err != nil {
			s.log.Error().Err(err).Msg("takeover: FUSE_NOTIFY_RESEND failed; the requests the previous daemon had read stay unanswered")
		}
	}
	s.sup.OnDrain(s.dev.Stop)
	s.dev.Serve()
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
