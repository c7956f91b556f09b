// Package control is the control channel of a tierfs mount: HTTP with
// JSON bodies over a unix socket that the daemon of the mount listens on.
// The daemon serves it (Server, Listen); `tierfs status`, `ls`,
// `migrate`, `pin`, `unpin` and `reload`, and the benchmarks, are its
// clients (Client).
package control

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"time"

	"github.com/tierfs/tierfs/internal/units"
	"github.com/tierfs/tierfs/policy/engine"
	"github.com/tierfs/tierfs/tiering"
)

// SocketDir holds the daemons' control sockets.
const SocketDir = "/run/tierfs"

// SocketPath returns the control socket of the daemon serving the
// mount at mountpoint: /run/tierfs/<16 hex digits of the SHA-256 of the
// absolute, clean mountpoint>.sock. The daemon and its clients both call
// it with the mountpoint as /proc/self/mountinfo names it (symlinks
// resolved), so that they agree.
func SocketPath(mountpoint string) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(filepath.Clean(abs)))
	return filepath.Join(SocketDir, hex.EncodeToString(sum[:])[:16]+".sock"), nil
}

// StatusResponse is the body of GET /v1/status.
type StatusResponse struct {
	Mountpoint string `json:"mountpoint"`
	tiering.Status
	Policy *PolicyStatus `json:"policy,omitempty"`
	// Requests says how the kernel's requests reach the daemon.
	Requests *RequestsStatus `json:"requests,omitempty"`
	// Daemon is the daemon that answers.
	Daemon *DaemonStatus `json:"daemon,omitempty"`
	// Supervisor, on a supervised mount, is its account of the daemons
	// it ran (filled in by the CLI, which asks the supervisor).
	Supervisor *SupervisorStatus `json:"supervisor,omitempty"`
}

// DaemonStatus is the serving daemon: which process and build, since when.
type DaemonStatus struct {
	Pid     int       `json:"pid"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
}

// SupervisorStatus is what a supervised mount's supervisor says: the
// daemon's generation (1: the one that mounted), how many took over from
// a predecessor, and the last takeovers' pauses.
type SupervisorStatus struct {
	Generation int       `json:"generation"`
	Takeovers  int       `json:"takeovers"`
	PausesMs   []float64 `json:"pauses_ms,omitempty"`
	// Binary is the executable daemons start from after `tierfs restart
	// --binary` ("" while it is the one that mounted).
	Binary string `json:"binary,omitempty"`
}

// RequestsStatus is the FUSE transport of the mount and its data path.
type RequestsStatus struct {
	// Transport is "io_uring" or "/dev/fuse".
	Transport string `json:"transport"`
	// Queues and ThreadsPerQueue: io_uring only, one queue per CPU.
	Queues          int `json:"queues,omitempty"`
	ThreadsPerQueue int `json:"threads_per_queue,omitempty"`
	// ServedIOUring counts the requests answered over io_uring.
	ServedIOUring uint64 `json:"served_io_uring,omitempty"`
	// DataPath is how file data moves: "page cache", "write-back cache"
	// or "direct I/O" (fs.Server.DataPath).
	DataPath string `json:"data_path"`
	// SpliceWrites: through /dev/fuse, large WRITEs' data is spliced
	// to the tiers ([mount] splice_writes); SplicedWrites counts them.
	SpliceWrites  bool   `json:"splice_writes,omitempty"`
	SplicedWrites uint64 `json:"spliced_writes,omitempty"`
	// Passthrough: pinned files' read-only opens are served by the
	// kernel from their backing ([mount] passthrough); PassthroughOpen
	// is how many such handles are open now, PassthroughGiven how many
	// were given since the mount.
	Passthrough      bool   `json:"passthrough,omitempty"`
	PassthroughOpen  int64  `json:"passthrough_open,omitempty"`
	PassthroughGiven uint64 `json:"passthrough_given,omitempty"`
}

// JobResponse is a queued move, in the replies of POST /v1/migrate,
// POST /v1/pin and GET /v1/job.
type JobResponse struct {
	ID    uint64 `json:"id"`
	Path  string `json:"path"`
	To    string `json:"to"`
	State string `json:"state"` // queued, moving, done or failed
	// BytesDone is what the copy has done so far; BytesTotal the file's
	// size.
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
	Finished   bool   `json:"finished"`
	Error      string `json:"error,omitempty"`
	// Already: the file was on the tier; nothing moved (state done).
	Already bool `json:"already,omitempty"`
	// MoveMs is how long the copy has run, not counting the time queued.
	MoveMs int64 `json:"move_ms"`
}

// Job states.
const (
	JobQueued = "queued"
	JobMoving = "moving"
	JobDone   = "done"
	JobFailed = "failed"
)

// PinResponse is the body of POST /v1/pin.
type PinResponse struct {
	Path string      `json:"path"`
	Tier string      `json:"tier"`
	Job  JobResponse `json:"job"`
}

// ErrorResponse is the body of every error reply.
type ErrorResponse struct {
	Error string `json:"error"`
}

// PolicyStatus is the "policy" part of GET /v1/status: the engine's
// queue and counters, and the settings it runs under.
type PolicyStatus struct {
	engine.Status
	// Thresholds is each tier's effective migrate_threshold, by name.
	Thresholds     map[string]float64 `json:"thresholds"`
	MigrateThreads int                `json:"migrate_threads"`
	Interval       units.Duration     `json:"interval"`
	MinAge         units.Duration     `json:"min_age"`
	MaxRate        units.Rate         `json:"max_rate"`
	PinGlobs       []string           `json:"pin_globs"`
	LogLevel       string             `json:"log_level"`
	// Config is the file the daemon reloads.
	Config string `json:"config,omitempty"`
}

// ReloadResult is the body of a successful POST /v1/reload.
type ReloadResult struct {
	Config string `json:"config"`
	// Changes lists what changed and now applies, "KEY: OLD -> NEW".
	Changes []string `json:"changes"`
	// Restart lists changes that take effect only at the next mount.
	Restart []string `json:"restart_needed,omitempty"`
}
