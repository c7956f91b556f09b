package main

import (
	"strings"
	"testing"
	"time"

	"github.com/tierfs/tierfs/internal/control"
)

func TestProgressLine(t *testing.T) {
	now := time.Now()
	q := &queued{rel: "t-0/00000000000000001000.log", queued: now.Add(-2 * time.Second), moving: now.Add(-time.Second),
		last: control.JobResponse{State: control.JobMoving, BytesDone: 5 << 20, BytesTotal: 10 << 20, MoveMs: 1000}}
	got := progressLine([]*queued{q}, now, 0)
	if want := "t-0/00000000000000001000.log [=========>          ]  50% 5.0 MiB/10.0 MiB 5.0 MiB/s"; got != want {
		t.Errorf("progress line\n got %q\nwant %q", got, want)
	}
	if got := progressLine([]*queued{q, q}, now, 70); len(got) > 69 || !strings.HasPrefix(got, "...") || !strings.HasSuffix(got, "(+1)") {
		t.Errorf("narrow progress line %q (%d columns)", got, len(got))
	}
	q.last.State = control.JobQueued
	if got := progressLine([]*queued{q}, now, 80); got != "waiting: 1 move(s) queued" {
		t.Errorf("queued line %q", got)
	}
}
