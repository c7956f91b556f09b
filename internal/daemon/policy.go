package daemon

// The daemon's side of the policy: the engine, the configuration it runs
// under, and the reload that changes that configuration live (SIGHUP or
// `tierfs reload`).

import (
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/tierfs/tierfs/internal/config"
	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/policy/engine"
)

// pinsFile is where the engine keeps CLI pins (Store.StatePath).
const pinsFile = "pins.json"

// engineConfig is the engine's share of cfg.
func engineConfig(cfg *config.Config) engine.Config {
	th := make([]float64, len(cfg.Tiers))
	for i := range cfg.Tiers {
		th[i] = cfg.TierThreshold(i)
	}
	return engine.Config{Policy: cfg.Policy, Thresholds: th}
}

// LivePolicy is the daemon's engine and its running configuration.
type LivePolicy struct {
	eng        *engine.Engine
	cfgPath    string // absolute: the daemon may not stay in its directory
	mountpoint string
	debug      bool // --debug: the log level stays debug
	// overrides are the [mount] keys the command line sets.
	overrides Overrides
	log       zerolog.Logger

	mu  sync.Mutex // serialises reloads; guards cfg
	cfg *config.Config
}

func (p *LivePolicy) Migrate(rel, tier string) (*engine.Job, error) { return p.eng.Migrate(rel, tier) }
func (p *LivePolicy) Pin(rel, tier string) (*engine.Job, error)     { return p.eng.Pin(rel, tier) }
func (p *LivePolicy) Unpin(rel string) error                        { return p.eng.Unpin(rel) }

// Status is the engine's status with the running settings.
func (p *LivePolicy) Status() control.PolicyStatus {
	p.mu.Lock()
	cfg := p.cfg
	p.mu.Unlock()
	st := control.PolicyStatus{
		Status:         p.eng.Status(),
		Thresholds:     map[string]float64{},
		MigrateThreads: cfg.Policy.MigrateThreads,
		Interval:       cfg.Policy.Interval,
		MinAge:         cfg.Policy.MinAge,
		MaxRate:        cfg.Policy.MaxRate,
		PinGlobs:       append([]string{}, cfg.Policy.Pin...),
		LogLevel:       effectiveLevel(cfg.Log.Level, p.debug),
		Config:         p.cfgPath,
	}
	for i, t := range cfg.Tiers {
		st.Thresholds[t.Name] = cfg.TierThreshold(i)
	}
	return st
}

var _ control.Policy = (*LivePolicy)(nil)

// Thresholds is each tier's effective migrate_threshold by name, as
// running (the metrics read it at each scrape).
func (p *LivePolicy) Thresholds() map[string]float64 {
	p.mu.Lock()
	cfg := p.cfg
	p.mu.Unlock()
	out := make(map[string]float64, len(cfg.Tiers))
	for i, t := range cfg.Tiers {
		out[t.Name] = cfg.TierThreshold(i)
	}
	return out
}

// Reload re-reads the configuration file and applies what can change
// live: the policy's thresholds, rate, threads, interval, minimum age and
// pin globs, and the log level. A file that does not validate, or that
// changes the tiers, is refused and the running configuration stays.
func (p *LivePolicy) Reload() (control.ReloadResult, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	res := control.ReloadResult{Config: p.cfgPath, Changes: []string{}}
	nc, err := config.Load(p.cfgPath)
	if err == nil {
		err = nc.CheckMountpoint(p.mountpoint)
	}
	if err == nil {
		err = tierListChange(p.cfg, nc)
	}
	if err != nil {
		p.log.Error().Err(err).Str("config", p.cfgPath).Msg("reload refused; the running configuration stays")
		return res, err
	}
	res.Changes = append(res.Changes, thresholdChanges(p.cfg, nc)...)
	res.Changes = append(res.Changes, structChanges("policy", p.cfg.Policy, nc.Policy)...)
	// The level applies live; the log file is opened at the mount.
	res.Changes = append(res.Changes, structChanges("log", config.Log{Level: p.cfg.Log.Level}, config.Log{Level: nc.Log.Level})...)
	res.Restart = structChanges("pmem", p.cfg.PMem, nc.PMem)
	res.Restart = append(res.Restart, structChanges("metrics", p.cfg.Metrics, nc.Metrics)...)
	res.Restart = append(res.Restart, structChanges("log", config.Log{File: p.cfg.Log.File}, config.Log{File: nc.Log.File})...)
	for _, ch := range structChanges("mount", p.cfg.Mount, nc.Mount) {
		res.Restart = append(res.Restart, p.overrides.note(ch))
	}

	run := *nc
	run.PMem, run.Mount, run.Metrics, run.Log.File = p.cfg.PMem, p.cfg.Mount, p.cfg.Metrics, p.cfg.Log.File // applied at the next mount
	p.eng.Reconfigure(engineConfig(&run))
	p.cfg = &run
	ev := p.log.Info().Str("config", p.cfgPath).Strs("changes", res.Changes)
	if len(res.Restart) > 0 {
		ev = ev.Strs("restart_needed", res.Restart)
	}
	ev.Msg("configuration reloaded")
	// After the line above, which a quieter level would hide.
	SetLogLevel(run.Log.Level, p.debug)
	return res, nil
}

// tierListChange refuses a configuration whose tiers differ from the
// running ones in anything but their migrate_threshold: the store opened
// those directories, and its capacities and placement follow them.
func tierListChange(old, nc *config.Config) error {
	names := func(c *config.Config) []string {
		var n []string
		for _, t := range c.Tiers {
			n = append(n, t.Name)
		}
		return n
	}
	var diffs []string
	if on, nn := names(old), names(nc); !reflect.DeepEqual(on, nn) {
		diffs = append(diffs, fmt.Sprintf("tiers %s, now %s", strings.Join(on, ", "), strings.Join(nn, ", ")))
	} else {
		for i, o := range old.Tiers {
			n := nc.Tiers[i]
			if o.Path != n.Path {
				diffs = append(diffs, fmt.Sprintf("tier[%d] %q path %s -> %s", i, o.Name, o.Path, n.Path))
			}
			if o.Type != n.Type {
				diffs = append(diffs, fmt.Sprintf("tier[%d] %q type %s -> %s", i, o.Name, o.Type, n.Type))
			}
			if o.Capacity != n.Capacity {
				diffs = append(diffs, fmt.Sprintf("tier[%d] %q capacity %v -> %v", i, o.Name, o.Capacity, n.Capacity))
			}
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	return fmt.Errorf("%s: tier list changed: restart to apply (%s)", nc.Source, strings.Join(diffs, "; "))
}

// thresholdChanges lists the tiers whose effective migrate_threshold
// changed.
func thresholdChanges(old, nc *config.Config) []string {
	var out []string
	for i, t := range old.Tiers {
		if a, b := old.TierThreshold(i), nc.TierThreshold(i); a != b {
			out = append(out, fmt.Sprintf("tier %s threshold: %v -> %v", t.Name, a, b))
		}
	}
	return out
}

// structChanges lists the fields of two values of one config table that
// differ, as "TABLE.KEY: OLD -> NEW".
func structChanges(table string, a, b any) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i := 0; i < va.NumField(); i++ {
		f := va.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		x, y := va.Field(i).Interface(), vb.Field(i).Interface()
		if reflect.DeepEqual(x, y) {
			continue
		}
		key := strings.Split(f.Tag.Get("toml"), ",")[0]
		if key == "" {
			key = f.Name
		}
		out = append(out, fmt.Sprintf("%s.%s: %s -> %s", table, key, showValue(x), showValue(y)))
	}
	return out
}

func showValue(v any) string {
	switch x := v.(type) {
	case []string:
		return fmt.Sprintf("%q", x)
	case string:
		return fmt.Sprintf("%q", x)
	case fmt.Stringer:
		return x.String()
	}
	return fmt.Sprint(v)
}

// effectiveLevel is the log level in force for the configured one.
func effectiveLevel(level string, debug bool) string {
	if debug {
		return "debug"
	}
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" || lvl == zerolog.NoLevel {
		return zerolog.InfoLevel.String()
	}
	return lvl.String()
}

// SetLogLevel sets the process's log level; the daemon's loggers let
// everything through and the global level filters, so that a reload can
// change it.
func SetLogLevel(level string, debug bool) {
	lvl, _ := zerolog.ParseLevel(effectiveLevel(level, debug))
	zerolog.SetGlobalLevel(lvl)
}
