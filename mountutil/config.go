// Package mountutil holds the mechanics of mounting, nothing of what tierfs
// serves: the [mount] table, preparing and inspecting mountpoints (stale
// or busy mounts), mounting a FUSE filesystem and choosing how its
// requests come (/dev/fuse, or io_uring through internal/fuseuring, with
// the by-hand mount(2) that needs), the mount's read-ahead, and
// unmounting cleanly.
package mountutil

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/tierfs/tierfs/internal/units"
)

// Config is the [mount] table. It is also the FUSE mount's settings:
// fs.Options embeds it, and Mount reads IOUring and ReadAheadKB.
type Config struct {
	// AllowOther lets users other than the one who mounted see the files
	// (FUSE allow_other, with default_permissions so that the kernel
	// checks modes; needs user_allow_other in /etc/fuse.conf when not
	// root).
	AllowOther bool `toml:"allow_other"`
	// ControlMode is the octal file mode of the control socket, "0600".
	ControlMode string `toml:"control_mode"`
	// ControlGroup is a group name or numeric gid given the control
	// socket; "" leaves the mounting user's group.
	ControlGroup string `toml:"control_group"`
	// WritebackCache lets the kernel gather writes in its page cache and
	// send them in batches (FUSE_WRITEBACK_CACHE): faster small writes,
	// but a write not yet fsynced lives only in the kernel until written
	// back, and is lost if the daemon dies (kill -9); without it a write
	// that returned is in the backing. `tierfs mount --writeback-cache`
	// overrides it.
	WritebackCache bool `toml:"writeback_cache"`
	// ReadAheadKB is the read-ahead, in KiB, set on the mount once it is
	// up (/sys/class/bdi/0:N/read_ahead_kb); 0 leaves the kernel's
	// default (128 KiB), with which a sequential reader waits for the
	// daemon every 128 KiB. See DefaultReadAheadKB.
	ReadAheadKB int `toml:"read_ahead_kb"`
	// IOUring serves FUSE requests over io_uring (internal/fuseuring: one
	// queue per CPU, answered by threads bound to that CPU, so a request
	// and its reply never cross CPUs) where the kernel allows it (Linux
	// 6.14+ with CONFIG_FUSE_IO_URING and fuse.enable_uring=Y, and root
	// for the direct mount it needs), else over /dev/fuse. Default true;
	// false always uses /dev/fuse. `tierfs mount --io-uring[=false]`
	// overrides it.
	IOUring bool `toml:"io_uring"`
	// EnableURingSwitch has the daemon turn the kernel's switch for FUSE
	// over io_uring on (Y into /sys/module/fuse/parameters/enable_uring,
	// which a stock kernel leaves N) before it mounts, so that IOUring
	// gets io_uring without an operator's echo. Root only; logged. It
	// never turns the switch off: other mounts may have come to rely on
	// it. Only with IOUring. Default false; examples/tierfs.toml sets it.
	EnableURingSwitch bool `toml:"enable_uring_switch"`
	// DirectIO opens every file with FOPEN_DIRECT_IO: reads and writes go
	// to the daemon without passing through the mount's page cache (one
	// copy less per write, and no partly written pages), while sendfile
	// and mmap still use it (Kafka's consumers and index files). That
	// needs FUSE_DIRECT_IO_ALLOW_MMAP from the kernel (Linux 6.6+); without
	// it the mount keeps the page cache and says so in the log. Faster
	// writes; a consumer right behind its producer, and every read(2),
	// then goes to the daemon. Default false (docs/perf.md, 12).
	DirectIO bool `toml:"direct_io"`
	// Supervisor makes `tierfs mount` a supervisor that holds the FUSE
	// connection and runs the daemon as its child: when the daemon dies
	// (kill -9, a crash) or is replaced (`tierfs restart`), a new one
	// takes the live connection over and programs see a pause, not an
	// error (internal/supervisor; Linux 6.9+ for the requests the dead
	// daemon had read). Default true; where it cannot work (not root, an
	// older kernel) the mount is served as without it, and the log says
	// why (SupervisionOff). Requests then come through /dev/fuse, even
	// where io_uring could serve, unless SupervisorIOUring. false opts
	// out; true written in the file insists: root only.
	Supervisor bool `toml:"supervisor"`
	// SupervisorIOUring serves a supervised mount over io_uring (where
	// IOUring would): its successors serve the same rings. A kill -9 of
	// the daemon can then fail calls in flight with ECANCELED (the
	// kernel's, docs/design.md), which /dev/fuse never does; a restart
	// loses nothing either way. Default false.
	SupervisorIOUring bool `toml:"supervisor_io_uring"`
	// SpliceWrites has a supervised mount's /dev/fuse readers splice the
	// requests that follow a WRITE of 64 KiB or more into a pipe, so that
	// a large WRITE's data goes from the mount's page cache to the backing
	// file in one copy (splice) instead of two (read(2) of the device,
	// pwrite(2)). Each reader's pipe holds a whole
	// request, 2 MiB: above the kernel's pipe-max-size (1 MiB) that needs
	// CAP_SYS_RESOURCE, and a root daemon without it (a container) raises
	// /proc/sys/fs/pipe-max-size to 2 MiB, logged, or reads requests if
	// it cannot. Default true; false reads requests and changes nothing.
	SpliceWrites bool `toml:"splice_writes"`
	// Passthrough has the kernel read pinned files itself (FUSE
	// passthrough, Linux 6.9+; root): a read-only open of a file that a
	// [policy] pin glob or a CLI pin keeps on its tier gets a handle whose
	// reads go from the backing file to the reader with no request to the
	// daemon. While such a handle is open the file does not move (a move
	// fails with EBUSY) and an open for writing fails with ETXTBSY. On a
	// supervised mount a daemon that takes over keeps the kernel's
	// passthrough handles (their files' read-only opens share them) but
	// gives no new ones until the next mount. Not with WritebackCache:
	// the kernel refuses the two together. Default false.
	Passthrough bool `toml:"passthrough"`
}

const defaultControlMode os.FileMode = 0o600

// DefaultReadAheadKB is read_ahead_kb's default. A sequential reader (a
// consumer catching up) waits for the daemon only when it reaches the
// end of the read-ahead window; one FUSE READ carries at most 1 MiB, and
// with 4 MiB several are in flight while the reader works (the window
// sizes tried, on both transports: docs/perf.md, 10).
const DefaultReadAheadKB = 4096

// MaxReadAheadKB is the largest read_ahead_kb accepted (64 MiB).
const MaxReadAheadKB = 65536

// DefaultConfig returns the [mount] defaults.
func DefaultConfig() Config {
	return Config{ControlMode: "0600", ReadAheadKB: DefaultReadAheadKB, IOUring: true, Supervisor: true, SpliceWrites: true}
}

// parseControlMode parses an octal mode such as "0660", "660" or "0o660".
func parseControlMode(s string) (os.FileMode, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimPrefix(strings.TrimPrefix(t, "0o"), "0O")
	if t == "" {
		return 0, fmt.Errorf("empty mode (want an octal mode such as \"0600\")")
	}
	v, err := strconv.ParseUint(t, 8, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid mode %q (want an octal mode such as \"0600\")", s)
	}
	if v > 0o777 {
		return 0, fmt.Errorf("mode %q is above 0777 (only permission bits may be set)", s)
	}
	return os.FileMode(v), nil
}

// Validate checks the values and reports every problem (joined with
// errors.Join); errors are *units.KeyError with keys "mount.control_mode",
// "mount.control_group", "mount.enable_uring_switch",
// "mount.supervisor_io_uring", "mount.passthrough" and
// "mount.read_ahead_kb".
func (c Config) Validate() error {
	var errs []error
	if _, err := parseControlMode(c.ControlMode); err != nil {
		errs = append(errs, units.Errorf("mount.control_mode", "%v", err))
	}
	if _, err := c.ControlGID(); err != nil {
		errs = append(errs, units.Errorf("mount.control_group", "%v", err))
	}
	if c.EnableURingSwitch && !c.IOUring {
		errs = append(errs, units.Errorf("mount.enable_uring_switch",
			"turns the kernel's switch for FUSE over io_uring on, which io_uring = false never uses: set io_uring = true or enable_uring_switch = false"))
	}
	if c.SupervisorIOUring && !c.Supervisor {
		errs = append(errs, units.Errorf("mount.supervisor_io_uring",
			"serves a supervised mount over io_uring, and supervisor = false asks for none (an unsupervised mount uses io_uring = true alone): set supervisor = true or remove supervisor_io_uring"))
	}
	if c.SupervisorIOUring && !c.IOUring {
		errs = append(errs, units.Errorf("mount.supervisor_io_uring",
			"serves a supervised mount over io_uring, which io_uring = false never uses: set io_uring = true or remove supervisor_io_uring"))
	}
	if c.Passthrough && c.WritebackCache {
		errs = append(errs, units.Errorf("mount.passthrough",
			"the kernel gives no passthrough on a mount with the write-back cache (writeback_cache = true): set one of them false"))
	}
	if c.ReadAheadKB < 0 || c.ReadAheadKB > MaxReadAheadKB {
		errs = append(errs, units.Errorf("mount.read_ahead_kb", "must be between 0 and %d (KiB; 0 leaves the kernel's default), got %d",
			MaxReadAheadKB, c.ReadAheadKB))
	}
	return errors.Join(errs...)
}

// SocketMode is the control socket's file mode; 0600 if ControlMode does
// not parse (Validate reports that).
func (c Config) SocketMode() os.FileMode {
	m, err := parseControlMode(c.ControlMode)
	if err != nil {
		return defaultControlMode
	}
	return m
}

// ControlGID resolves ControlGroup to a gid: -1 when it is empty. A name
// must exist in the group database; a number is taken as a gid as it is.
func (c Config) ControlGID() (int, error) {
	g := strings.TrimSpace(c.ControlGroup)
	if g == "" {
		return -1, nil
	}
	if n, err := strconv.ParseUint(g, 10, 32); err == nil {
		return int(n), nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return -1, fmt.Errorf("unknown group %q", g)
	}
	gid, err := strconv.Atoi(grp.Gid)
	if err != nil {
		return -1, fmt.Errorf("group %q has a non-numeric gid %q", g, grp.Gid)
	}
	return gid, nil
}
