package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	tfs "github.com/tierfs/tierfs/fs"
	"github.com/tierfs/tierfs/internal/daemon"
	"github.com/tierfs/tierfs/internal/fuseuring"
	"github.com/tierfs/tierfs/internal/testenv"
	"github.com/tierfs/tierfs/mountutil"
)

// A [mount] flag given on the command line wins over the file, either
// way; a flag not given leaves the file's value.
func TestMountFlagsOverrideFile(t *testing.T) {
	tests := []struct {
		file           string // writeback_cache, io_uring and direct_io in the file
		args           []string
		wb, uring, dio bool
	}{
		{"off", nil, false, false, false},
		{"on", nil, true, true, true},
		{"off", []string{"--writeback-cache"}, true, false, false},
		{"on", []string{"--writeback-cache=false"}, false, true, true},
		{"off", []string{"--io-uring"}, false, true, false},
		{"on", []string{"--io-uring=false", "--writeback-cache=true"}, true, false, true},
		{"off", []string{"--direct-io"}, false, false, true},
		{"on", []string{"--direct-io=false"}, true, true, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("file %s %s", tt.file, strings.Join(tt.args, " ")), func(t *testing.T) {
			fs := flag.NewFlagSet("tierfs mount", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			setupMount(fs)
			if err := fs.Parse(append(append([]string{"--config", "x.toml"}, tt.args...), "/mnt")); err != nil {
				t.Fatal(err)
			}
			file := mountutil.DefaultConfig()
			file.WritebackCache, file.IOUring, file.DirectIO = tt.file == "on", tt.file == "on", tt.file == "on"
			file.ReadAheadKB, file.AllowOther = 256, true
			o := fsOptions(mountFlagOverrides(fs).Apply(file), true, nil)
			if o.WritebackCache != tt.wb || o.IOUring != tt.uring || o.DirectIO != tt.dio {
				t.Errorf("writeback %v, io_uring %v, direct_io %v; want %v, %v, %v",
					o.WritebackCache, o.IOUring, o.DirectIO, tt.wb, tt.uring, tt.dio)
			}
			if o.ReadAheadKB != 256 || !o.AllowOther || !o.Debug {
				t.Errorf("options %+v: want read-ahead 256, allow_other and debug from the file and --debug", o)
			}
		})
	}
}

// The mount takes its read-ahead and write-back setting from [mount],
// --writeback-cache=false overrides the file, and a reload reports
// [mount] changes as waiting for the next mount without applying them.
func TestMountSettingsFromConfig(t *testing.T) {
	requireFUSE(t)
	t.Parallel()
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy+"\n[mount]\nwriteback_cache = true\nread_ahead_kb = 256\n")
	d := startDaemon(t, e, "--writeback-cache=false")

	if got := mountReadAhead(t, e.mnt); got != "256" {
		t.Errorf("read_ahead_kb of the mount = %s, want 256 from the file", got)
	}
	var mounted struct {
		WritebackCache *bool  `json:"writeback_cache"`
		ReadAheadKB    *int   `json:"read_ahead_kb"`
		IOUring        *bool  `json:"io_uring"`
		Requests       string `json:"requests"`
		IOUringOff     string `json:"io_uring_off"`
	}
	if !mountedLog(d.stderr.String(), &mounted) || mounted.WritebackCache == nil || *mounted.WritebackCache ||
		mounted.ReadAheadKB == nil || *mounted.ReadAheadKB != 256 || mounted.IOUring == nil {
		t.Errorf("the 'mounted' log line: %+v; want writeback_cache false (the flag), read_ahead_kb 256, io_uring", mounted)
	} else if inEffect := mounted.Requests == "io_uring"; *mounted.IOUring != inEffect || (mounted.IOUringOff == "") == !inEffect {
		// io_uring is asked for (the default): the line says what is in
		// effect, and why not when it is not.
		t.Errorf("the 'mounted' log line: io_uring %v, requests %q, io_uring_off %q; want io_uring as in effect, and why not",
			*mounted.IOUring, mounted.Requests, mounted.IOUringOff)
	} else if !inEffect && mounted.IOUringOff != daemon.URingOff(true, false) {
		t.Errorf("io_uring_off %q, want %q", mounted.IOUringOff, daemon.URingOff(true, false))
	}

	e.setConfig(t, "", idlePolicy+"\n[mount]\nwriteback_cache = false\nread_ahead_kb = 512\n")
	out := mustTierfs(t, "", "reload", e.mnt)
	for _, want := range []string{
		"not applied until the next mount: mount.read_ahead_kb: 256 -> 512",
		"not applied until the next mount: mount.writeback_cache: true -> false (--writeback-cache on the command line overrides it)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("reload printed (want %q):\n%s", want, out)
		}
	}
	if got := mountReadAhead(t, e.mnt); got != "256" {
		t.Errorf("read_ahead_kb of the mount after the reload = %s, want 256 still", got)
	}
	// An invalid value is refused with its line, like any key.
	text := e.setConfig(t, "", idlePolicy+"\n[mount]\nread_ahead_kb = 100000\n")
	_, errOut, code := tierfs(t, "", "reload", e.mnt)
	want := fmt.Sprintf("%s:%d: mount.read_ahead_kb: must be between 0 and 65536", e.config, lineOf(t, text, "read_ahead_kb = 100000"))
	if code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("reload of an invalid read_ahead_kb: exit %d, stderr %q; want 1 and %q", code, errOut, want)
	}
}

// mountReadAhead is the read_ahead_kb of the mount on mnt (its bdi).
func mountReadAhead(t *testing.T, mnt string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev)))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// `tierfs status` says how requests reach the daemon: over io_uring
// (queues, threads, a count that grows) by default where the kernel
// allows it, through /dev/fuse with [mount] io_uring = false or where the
// kernel's switch is off (an info line then, not a warning). Unsupervised:
// a supervised mount serves /dev/fuse unless supervisor_io_uring
// (TestSupervisionAndURing).
func TestStatusShowsTransport(t *testing.T) {
	requireFUSE(t)
	testenv.HoldURingSwitch(t)
	b, err := os.ReadFile(fuseuring.EnableParam)
	testenv.Require(t, err == nil, fmt.Sprintf("this kernel has no FUSE over io_uring: %v", err))
	set := func(v string) {
		t.Helper()
		if err := os.WriteFile(fuseuring.EnableParam, []byte(v), 0o644); err != nil {
			t.Fatalf("setting %s to %s: %v", fuseuring.EnableParam, v, err)
		}
	}
	// The switch only lets daemons ask for io_uring; mounts that have it
	// keep it when it goes off.
	t.Cleanup(func() { os.WriteFile(fuseuring.EnableParam, b, 0o644) })

	t.Run("switch off", func(t *testing.T) {
		set("N")
		e := newEnv(t)
		e.setConfig(t, "", idlePolicy+"\n[mount]\nsupervisor = false\n")
		d := startDaemon(t, e)
		st, _ := statusJSON(t, e.mnt)
		if st.Requests == nil || st.Requests.Transport != "/dev/fuse" {
			t.Fatalf("requests %+v, want /dev/fuse", st.Requests)
		}
		out := d.stderr.String()
		if !strings.Contains(out, "FUSE over io_uring unavailable; serving through /dev/fuse") || strings.Contains(out, `"level":"warn"`) {
			t.Errorf("want an info line on the fallback and no warning:\n%s", out)
		}
	})
	set("Y")
	for _, uring := range []bool{false, true} {
		t.Run(fmt.Sprintf("io_uring=%v", uring), func(t *testing.T) {
			e := newEnv(t)
			e.setConfig(t, "", idlePolicy+fmt.Sprintf("\n[mount]\nsupervisor = false\nio_uring = %v\n", uring))
			startDaemon(t, e)
			st, _ := statusJSON(t, e.mnt)
			r := st.Requests
			if r == nil {
				t.Fatal("status has no requests section")
			}
			if !uring {
				if r.Transport != "/dev/fuse" || r.Queues != 0 {
					t.Fatalf("requests %+v, want /dev/fuse", r)
				}
				if out := mustTierfs(t, "", "status", e.mnt); !strings.Contains(out, "Requests: through /dev/fuse.") {
					t.Errorf("status output:\n%s", out)
				}
				return
			}
			if r.Transport != "io_uring" || r.Queues < 1 || r.ThreadsPerQueue < 1 {
				t.Fatalf("requests %+v, want io_uring with queues and threads", r)
			}
			if err := os.WriteFile(filepath.Join(e.mnt, "f"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			st2, _ := statusJSON(t, e.mnt)
			if st2.Requests.ServedIOUring <= r.ServedIOUring {
				t.Errorf("answered over io_uring: %d, then %d after a create and a write", r.ServedIOUring, st2.Requests.ServedIOUring)
			}
			out := mustTierfs(t, "", "status", e.mnt)
			if !strings.Contains(out, fmt.Sprintf("Requests: over io_uring, %d queues (one per CPU) of %d threads, ", r.Queues, r.ThreadsPerQueue)) {
				t.Errorf("status output:\n%s", out)
			}
		})
	}
}

// `tierfs status` says how file data moves (the data path in effect): the
// page cache by default, direct I/O with --direct-io (or [mount]
// direct_io), the write-back cache with --writeback-cache; the 'mounted'
// log line agrees.
func TestStatusShowsDataPath(t *testing.T) {
	requireFUSE(t)
	for _, tt := range []struct {
		flags      []string
		path, text string
		dio, wb    bool
	}{
		{nil, tfs.DataPageCache, "Data: through the page cache (writes sent to the tiers at once, reads cached).", false, false},
		{[]string{"--direct-io"}, tfs.DataDirectIO, "Data: direct I/O (read and write bypass the page cache; sendfile and mmap use it).", true, false},
		{[]string{"--writeback-cache"}, tfs.DataWriteback, "Data: write-back cache (writes gathered by the kernel; what is not fsynced is lost if the daemon dies).", false, true},
	} {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.setConfig(t, "", idlePolicy)
			d := startDaemon(t, e, tt.flags...)
			st, _ := statusJSON(t, e.mnt)
			if st.Requests == nil || st.Requests.DataPath != tt.path {
				t.Fatalf("requests %+v, want data_path %q", st.Requests, tt.path)
			}
			if out := mustTierfs(t, "", "status", e.mnt); !strings.Contains(out, tt.text) {
				t.Errorf("status output, want %q:\n%s", tt.text, out)
			}
			var mounted struct {
				DirectIO       *bool `json:"direct_io"`
				WritebackCache *bool `json:"writeback_cache"`
			}
			if !mountedLog(d.stderr.String(), &mounted) || mounted.DirectIO == nil || *mounted.DirectIO != tt.dio || mounted.WritebackCache == nil || *mounted.WritebackCache != tt.wb {
				t.Errorf("the 'mounted' log line: %+v; want direct_io %v, writeback_cache %v", mounted, tt.dio, tt.wb)
			}
		})
	}
}

// mountedLog decodes the daemon's "mounted" log line, found in its
// stderr, into v; false if there is none.
func mountedLog(stderr string, v any) bool {
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		var m struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.Message == "mounted" {
			return json.Unmarshal(sc.Bytes(), v) == nil
		}
	}
	return false
}
