// Package metrics serves a tierfs daemon's Prometheus endpoint. Gauges
// are computed when scraped, from the store's status, the move ledger and
// the policy's queue (a custom Collector); counters on the request path
// are atomics kept by fs and tiering (internal/iostats, tiering's tier
// and topic counters), read here at scrape time. Nothing on the request
// path takes a lock or allocates for the metrics.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/iostats"
	"github.com/tierfs/tierfs/internal/supervisor"
	"github.com/tierfs/tierfs/policy/engine"
	"github.com/tierfs/tierfs/tiering"
)

// Sources are what the metrics read. Store is required; the others may
// be nil.
type Sources struct {
	Store  *tiering.Store
	Engine *engine.Engine
	// Thresholds is each tier's effective migrate_threshold by name (-1:
	// off), as the running configuration says.
	Thresholds func() map[string]float64
	// Requests are the FUSE requests' counters; Transport says how
	// requests reach the daemon ("io_uring" or "/dev/fuse").
	Requests  *iostats.Requests
	Transport func() string
	// Passthrough, with [mount] passthrough, says the kernel passthrough
	// handles open now and given since the mount (ok false: off).
	Passthrough func() (ok bool, open int64, given uint64)
	Topics      *Topics
	// Supervisor, on a supervised mount, asks the supervisor for its
	// account of the daemons it ran.
	Supervisor func() (supervisor.Status, error)
}

// Listen opens the endpoint's socket: before the mount, so that a port
// another daemon holds fails the mount, naming the port.
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("metrics: cannot listen on %s: the port is taken (another tierfs daemon? set [metrics] listen to another port, or \"\" to turn the endpoint off): %w", addr, err)
		}
		return nil, fmt.Errorf("metrics: cannot listen on %s ([metrics] listen): %w", addr, err)
	}
	return ln, nil
}

// Server is a running endpoint.
type Server struct {
	http *http.Server
	ln   net.Listener
	done chan struct{}
}

// Addr is where the endpoint listens.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves src's metrics at /metrics on ln until Close.
func Serve(ln net.Listener, src Sources) *Server {
	reg := NewRegistry(src)
	s := &Server{ln: ln, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "tierfs: metrics at /metrics")
	})
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.http.Serve(ln)
	}()
	return s
}

// Close stops the endpoint, letting a scrape under way finish for a
// little while.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.http.Shutdown(ctx)
	<-s.done
	return err
}

// NewRegistry is a registry with tierfs's collector and the standard
// process and Go collectors.
func NewRegistry(src Sources) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		newCollector(src),
	)
	return reg
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("tierfs_"+name, help, labels, nil)
}

var (
	dBuildInfo = desc("build_info", "The tierfs binary: its module version, VCS revision and Go version (always 1).", "version", "revision", "goversion")

	dCapacity  = desc("tier_capacity_bytes", "The tier's capacity: configured, else its filesystem's size.", "tier")
	dUsed      = desc("tier_used_bytes", "Bytes the files tierfs holds on the tier take (allocated blocks).", "tier")
	dFree      = desc("tier_free_bytes", "Room for files on the tier: the smaller of the room under its capacity and its filesystem's free space.", "tier")
	dFiles     = desc("tier_files", "Files (inodes) on the tier.", "tier")
	dThreshold = desc("tier_threshold_ratio", "The tier's effective migrate_threshold: the fill above which the policy demotes (absent when off).", "tier")
	dLag       = desc("tier_demotion_lag_bytes", "Bytes on the tier above its threshold: what demotions have yet to move (0 when under it).", "tier")
	dReadB     = desc("tier_read_bytes_total", "Bytes read through the mount from files on the tier.", "tier")
	dWrittenB  = desc("tier_written_bytes_total", "Bytes written through the mount to files on the tier.", "tier")
	dReads     = desc("tier_reads_total", "Read requests served from files on the tier.", "tier")
	dPromos    = desc("tier_promotions_total", "Files promoted onto the tier (moves with reason promote that moved).", "tier")
	dOpen      = desc("open_files", "Files open through the mount (or held by a move).")

	dStarted   = desc("moves_started_total", "Moves asked for, by reason (a file already on its tier counts nowhere).", "reason")
	dFinished  = desc("moves_finished_total", "Moves ended, by reason and outcome: moved, failed, or skipped as gone, changed, busy or canceled.", "reason", "outcome")
	dMovedB    = desc("moved_bytes_total", "Bytes of the files that moved, by reason.", "reason")
	dMoveDur   = desc("move_duration_seconds", "How long the moves that moved took, by reason.", "reason")
	dInFlight  = desc("moves_in_flight", "Moves under way (the policy's, the operator's and spills).")
	dQueued    = desc("moves_queued", "Moves queued in the policy engine, not yet started.")
	dInFlightB = desc("moves_in_flight_bytes", "Bytes the policy engine's moves under way still have to copy.")
	dThrottled = desc("move_throttled_seconds_total", "Time the policy's copies waited for [policy] max_rate.")

	dReserve   = desc("burst_reserve_bytes", "Room left on the fast tier: what a burst can write before new data goes to a slower tier.")
	dReserveS  = desc("burst_reserve_seconds", "Seconds until the fast tier is full at the current net ingest rate (+Inf when it is not filling).")
	dIngest    = desc("fast_tier_net_ingest_bytes_per_second", "How fast the fast tier's used bytes grow (writes less demotions), over the last minute.")
	dRequests  = desc("fuse_request_duration_seconds", "FUSE requests by operation: how long the daemon took to answer.", "op")
	dErrors    = desc("fuse_errors_total", "FUSE requests answered with an error, by errno.", "errno")
	dTransport = desc("fuse_transport_info", "How requests reach the daemon (always 1): io_uring or /dev/fuse.", "transport")
	dPTOpen    = desc("passthrough_handles", "With [mount] passthrough: kernel passthrough handles open now (pinned files the kernel reads from their tier).")
	dPTGiven   = desc("passthrough_handles_given_total", "With [mount] passthrough: kernel passthrough handles given since the mount.")

	dGeneration = desc("daemon_generation", "On a supervised mount, the serving daemon's generation: 1 for the daemon that mounted, one more for each daemon started on the same connection since.")
	dTakeovers  = desc("takeovers_total", "On a supervised mount, the daemons that took the live connection over from one that died or was replaced (tierfs restart).")
	dLastPause  = desc("takeover_last_pause_seconds", "On a supervised mount, the last takeover's pause: from the old daemon's death (or its drain) to the new one serving (absent before the first).")

	dTopicBytes = desc("topic_bytes", "Bytes a topic's files take on each tier, as of the policy's last listing (topic: the top directory without -PARTITION; \"other\" past [metrics] max_topics).", "topic", "tier")
	dTopicRead  = desc("topic_read_bytes_total", "Bytes read through the mount from a topic's files, by the tier they were on.", "topic", "tier")
)

type collector struct {
	src     Sources
	build   [3]string
	ingest  *ingestRate
	descs   []*prometheus.Desc
	mu      sync.Mutex // serialises scrapes: one reading of the sources at a time
	lastErr error
}

func newCollector(src Sources) *collector {
	c := &collector{src: src, build: buildInfo(), ingest: newIngestRate(src.Store)}
	c.descs = []*prometheus.Desc{dBuildInfo, dCapacity, dUsed, dFree, dFiles, dThreshold, dLag, dReadB, dWrittenB, dReads,
		dPromos, dOpen, dStarted, dFinished, dMovedB, dMoveDur, dInFlight, dQueued, dInFlightB, dThrottled,
		dReserve, dReserveS, dIngest, dRequests, dErrors, dTransport, dPTOpen, dPTGiven, dGeneration, dTakeovers, dLastPause, dTopicBytes, dTopicRead}
	return c
}

// buildInfo is the binary's module version, VCS revision (with
// "-dirty" for a modified tree) and Go version.
func buildInfo() [3]string {
	out := [3]string{"unknown", "unknown", "unknown"}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return out
	}
	out[0], out[2] = bi.Main.Version, bi.GoVersion
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			out[1] = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && out[1] != "unknown" {
		out[1] += "-dirty"
	}
	if out[0] == "" {
		out[0] = "unknown"
	}
	return out
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func histogram(ch chan<- prometheus.Metric, d *prometheus.Desc, h iostats.HistogramSnapshot, labels ...string) {
	ch <- prometheus.MustNewConstHistogram(d, h.Count, h.Sum, h.Buckets, labels...)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gauge(ch, dBuildInfo, 1, c.build[:]...)
	st := c.src.Store.Status()
	var th map[string]float64
	if c.src.Thresholds != nil {
		th = c.src.Thresholds()
	}
	moves := c.src.Store.MoveStats()
	promos := map[string]int64{}
	for _, r := range moves.ByReason {
		if r.Reason == tiering.ReasonPromote {
			promos = r.MovedTo
		}
	}
	for _, t := range st.Tiers {
		gauge(ch, dCapacity, float64(t.CapacityBytes), t.Name)
		gauge(ch, dUsed, float64(t.UsedBytes), t.Name)
		gauge(ch, dFree, float64(t.FreeBytes), t.Name)
		gauge(ch, dFiles, float64(t.Files), t.Name)
		if v, ok := th[t.Name]; ok && v >= 0 {
			gauge(ch, dThreshold, v, t.Name)
			gauge(ch, dLag, math.Max(0, float64(t.UsedBytes)-v*float64(t.CapacityBytes)), t.Name)
		}
		counter(ch, dReadB, float64(t.ReadBytes), t.Name)
		counter(ch, dWrittenB, float64(t.WrittenBytes), t.Name)
		counter(ch, dReads, float64(t.Reads), t.Name)
		counter(ch, dPromos, float64(promos[t.Name]), t.Name)
	}
	gauge(ch, dOpen, float64(st.OpenFiles))

	for _, r := range moves.ByReason {
		reason := string(r.Reason)
		counter(ch, dStarted, float64(r.Started), reason)
		for _, o := range tiering.MoveOutcomes {
			counter(ch, dFinished, float64(r.Outcomes[o]), reason, string(o))
		}
		counter(ch, dMovedB, float64(r.BytesMoved), reason)
		histogram(ch, dMoveDur, c.src.Store.MoveDuration(r.Reason), reason)
	}
	gauge(ch, dInFlight, float64(moves.InFlight))
	var queued int
	var left int64
	var throttled time.Duration
	if e := c.src.Engine; e != nil {
		queued, _, left = e.Queue()
		throttled = e.Throttled()
	}
	gauge(ch, dQueued, float64(queued))
	gauge(ch, dInFlightB, float64(left))
	counter(ch, dThrottled, throttled.Seconds())

	if len(st.Tiers) > 0 {
		free := float64(st.Tiers[0].FreeBytes)
		rate := c.ingest.rate()
		secs := math.Inf(1)
		if rate > 0 {
			secs = free / rate
		}
		gauge(ch, dReserve, free)
		gauge(ch, dReserveS, secs)
		gauge(ch, dIngest, rate)
	}

	if r := c.src.Requests; r != nil {
		for i, name := range r.Names() {
			histogram(ch, dRequests, r.Latency(i).Snapshot(), name)
		}
		for errno, n := range r.Errors() {
			if n > 0 {
				counter(ch, dErrors, float64(n), errnoName(errno))
			}
		}
	}
	if c.src.Transport != nil {
		gauge(ch, dTransport, 1, c.src.Transport())
	}
	if c.src.Passthrough != nil {
		if ok, open, given := c.src.Passthrough(); ok {
			gauge(ch, dPTOpen, float64(open))
			counter(ch, dPTGiven, float64(given))
		}
	}

	if c.src.Supervisor != nil {
		if sv, err := c.src.Supervisor(); err == nil {
			gauge(ch, dGeneration, float64(sv.Gen))
			counter(ch, dTakeovers, float64(sv.Takeovers))
			if n := len(sv.Pauses); n > 0 {
				gauge(ch, dLastPause, sv.Pauses[n-1]/1000)
			}
		}
	}

	if tp := c.src.Topics; tp != nil {
		tc := tp.snapshot()
		for topic, read := range tc.read {
			for i, n := range read {
				if i < len(st.Tiers) {
					counter(ch, dTopicRead, float64(n), topic, st.Tiers[i].Name)
				}
			}
		}
		for topic, sizes := range tc.sizes {
			for i, n := range sizes {
				if i < len(st.Tiers) {
					gauge(ch, dTopicBytes, float64(n), topic, st.Tiers[i].Name)
				}
			}
		}
	}
}

// errnoName is the symbolic name of an errno ("ENOENT"), or its number.
func errnoName(e int) string {
	if n := unix.ErrnoName(unix.Errno(e)); n != "" {
		return n
	}
	return strconv.Itoa(e)
}

// ingestWindow is the span the net ingest rate is measured over.
const ingestWindow = time.Minute

// ingestRate measures how fast the fast tier fills, from the used bytes
// seen at each scrape: no goroutine of its own. The rate is over the
// last minute, or since the last scrape when scrapes are further apart.
type ingestRate struct {
	store   *tiering.Store
	now     func() time.Time
	samples []ingestSample // oldest first
}

type ingestSample struct {
	t    time.Time
	used int64
}

func newIngestRate(s *tiering.Store) *ingestRate { return &ingestRate{store: s, now: time.Now} }

// rate samples the fast tier and returns bytes per second (negative when
// it empties). Caller serialises.
func (r *ingestRate) rate() float64 {
	tiers := r.store.Tiers()
	if len(tiers) == 0 {
		return 0
	}
	now := r.now()
	r.samples = append(r.samples, ingestSample{now, tiers[0].Used()})
	// Keep the newest sample at least a window old, and those after it.
	i := 0
	for i+1 < len(r.samples)-1 && now.Sub(r.samples[i+1].t) >= ingestWindow {
		i++
	}
	r.samples = r.samples[i:]
	first, last := r.samples[0], r.samples[len(r.samples)-1]
	dt := last.t.Sub(first.t).Seconds()
	if dt <= 0 {
		return 0
	}
	return float64(last.used-first.used) / dt
}
