package mountutil

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/fuseuring"
)

// switchURingOn turns the kernel's switch for FUSE over io_uring on for
// [mount] enable_uring_switch, saying what it did in the log. A switch it
// cannot turn on is a warning, not an error: the mount then serves
// through /dev/fuse, as mountForURing says.
func switchURingOn(log zerolog.Logger) {
	was, err := enableURingSwitch(fuseuring.EnableParam, os.Geteuid())
	switch {
	case err != nil:
		log.Warn().Err(err).Str("switch", fuseuring.EnableParam).Msg("enable_uring_switch: cannot turn FUSE over io_uring on")
	case was == "Y":
		log.Debug().Str("switch", fuseuring.EnableParam).Msg("enable_uring_switch: FUSE over io_uring was on already")
	default:
		log.Info().Str("switch", fuseuring.EnableParam).Str("was", was).
			Msg("enable_uring_switch: turned the kernel's switch for FUSE over io_uring on; it stays on after this mount (tierfs never turns it off)")
	}
}

// enableURingSwitch writes Y to the switch at param unless it reads Y
// already, and returns what it read. It never writes anything else, never
// creates param (a kernel without FUSE over io_uring has none) and
// follows no symlink to it.
func enableURingSwitch(param string, euid int) (was string, err error) {
	fd, err := unix.Open(param, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return "", fmt.Errorf("this kernel has no FUSE over io_uring (no %s: it needs Linux 6.14+ built with CONFIG_FUSE_IO_URING)", param)
	}
	if err != nil && euid != 0 {
		return "", fmt.Errorf("writing %s needs root: %w", param, err)
	}
	if err != nil {
		return "", err
	}
	f := os.NewFile(uintptr(fd), param)
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 16))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", param, err)
	}
	was = strings.TrimSpace(string(b))
	if was == "Y" {
		return was, nil
	}
	// A sysfs attribute takes a write at offset 0 as the whole value.
	if _, err := f.WriteAt([]byte("Y\n"), 0); err != nil {
		return was, fmt.Errorf("writing Y to %s: %w", param, err)
	}
	return was, nil
}
