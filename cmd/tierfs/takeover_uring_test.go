package main

import (
	"encoding/json"
	"fmt"
	"syscall"
	"testing"

	"github.com/tierfs/tierfs/internal/supervisor"
	"github.com/tierfs/tierfs/internal/testenv"
)

// A supervised mount serves over io_uring with [mount] supervisor_io_uring
// (where the kernel's switch is on), and keeps doing so across `tierfs restart` while a
// program reads and writes files it holds open: the program sees no
// error, status says io_uring after every takeover and that requests are
// answered that way, and every byte is there. (A kill -9 over io_uring
// can cost a call ECANCELED: fs's TestTakeoverURingKill.)
func TestRestartOverURing(t *testing.T) {
	requireFUSE(t)
	testenv.SetURingSwitch(t, "Y")
	e := newEnv(t)
	e.setConfig(t, "", idlePolicy+"\n[mount]\nsupervisor = true\nsupervisor_io_uring = true\n")
	d := startDaemon(t, e)
	l := startRWLoop(t, segmentPaths(t, e.mnt, 3))
	l.progress(t, 50)
	transport := func(when string) {
		t.Helper()
		st, _ := statusJSON(t, e.mnt)
		if r := st.Requests; r == nil || r.Transport != "io_uring" {
			t.Fatalf("%s: requests %+v, want io_uring", when, st.Requests)
		}
		if st.Requests.ServedIOUring == 0 {
			t.Fatalf("%s: no request answered over io_uring", when)
		}
	}
	transport("mounted")
	for k := 0; k < 6; k++ {
		out := mustTierfs(t, "", "restart", "--json", e.mnt)
		var r supervisor.Result
		if err := json.Unmarshal([]byte(out), &r); err != nil || r.NewPid == 0 || r.Gen != k+2 {
			t.Fatalf("tierfs restart --json printed %q: %v", out, err)
		}
		l.progress(t, 30)
		transport(fmt.Sprintf("takeover %d", k+1))
		if !mounted(e.mnt) {
			t.Fatalf("takeover %d: the mount is gone", k+1)
		}
	}
	l.finish(t)
	d.cmd.Process.Signal(syscall.SIGTERM)
	if code := d.waitExit(t); code != 0 {
		t.Fatalf("tierfs mount exited %d after SIGTERM", code)
	}
	if mounted(e.mnt) {
		t.Fatalf("still mounted after SIGTERM")
	}
}
