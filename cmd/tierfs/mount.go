package main

import (
	"flag"

	"github.com/rs/zerolog"

	tfs "github.com/tierfs/tierfs/fs"
	"github.com/tierfs/tierfs/internal/control"
	"github.com/tierfs/tierfs/internal/daemon"
	"github.com/tierfs/tierfs/mountutil"
	"github.com/tierfs/tierfs/tiering"
)

func setupMount(fs *flag.FlagSet) func([]string) int {
	cfgPath := fs.String("config", "", "the configuration `FILE` (TOML; required)")
	debug := fs.Bool("debug", false, "log every FUSE request and set the log level to debug")
	fs.Bool("writeback-cache", false, "let the kernel cache writes and send them in batches: faster small writes, "+
		"but written data not yet fsynced is lost if the daemon dies (overrides [mount] writeback_cache)")
	fs.Bool("io-uring", true, "serve FUSE requests over io_uring where the kernel allows it (overrides [mount] io_uring)")
	fs.Bool("direct-io", false, "open files for direct I/O: read and write bypass the page cache, sendfile and mmap use it; "+
		"faster writes, slower consumers (overrides [mount] direct_io)")
	return func(args []string) int {
		if *cfgPath == "" {
			return usageError(fs, "--config is required")
		}
		if len(args) != 1 {
			return usageError(fs, "want exactly one MOUNTPOINT")
		}
		status, err := daemon.Run(*cfgPath, args[0], *debug, mountFlagOverrides(fs), mountFS, nil)
		if err != nil {
			return fail("mount", err)
		}
		return status
	}
}

// mountFlagOverrides collects the [mount] flags given on fs's command
// line (flag.Visit: only those that were set).
func mountFlagOverrides(fs *flag.FlagSet) daemon.Overrides {
	o := daemon.Overrides{}
	fs.Visit(func(f *flag.Flag) {
		for _, m := range daemon.MountFlags {
			if f.Name != m.Flag {
				continue
			}
			if g, ok := f.Value.(flag.Getter); ok {
				if v, ok := g.Get().(bool); ok {
					o[m.Key] = v
				}
			}
		}
	})
	return o
}

// fsOptions are the FUSE mount's settings for the effective [mount]
// table (flags applied).
func fsOptions(m mountutil.Config, debug bool, staysOn func(string, uint64, string) bool) tfs.Options {
	return tfs.Options{Config: m, Debug: debug, StaysOn: staysOn}
}

// mountFS is the daemon's daemon.MountFunc: package fs serves the store.
func mountFS(store *tiering.Store, mp string, m mountutil.Config, debug bool, staysOn func(string, uint64, string) bool, log zerolog.Logger) (daemon.Server, error) {
	srv, err := tfs.Mount(tfs.NewRoot(store, log), mp, fsOptions(m, debug, staysOn))
	if err != nil {
		return nil, err
	}
	return fuseServer{srv}, nil
}

// fuseServer is an fs.Server as the daemon drives it.
type fuseServer struct{ *tfs.Server }

func (s fuseServer) Requests() *control.RequestsStatus {
	r := &control.RequestsStatus{Transport: "/dev/fuse", DataPath: s.DataPath()}
	if s.IOUring() {
		r.Transport, r.ServedIOUring = "io_uring", s.URingServed()
		r.Queues, r.ThreadsPerQueue = s.URingQueues()
	} else if s.Splices() {
		r.SpliceWrites, r.SplicedWrites = true, s.SplicedWrites()
	}
	r.Passthrough, r.PassthroughOpen, r.PassthroughGiven = s.Passthrough()
	return r
}
