package benchkit

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const buddySample = `Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      2
Node 0, zone    DMA32    404    356    215    132     60     31     12      9      6      4    617
Node 0, zone   Normal   1361   1052    757    385    161     56     24     11      8      7   3970
`

func readParam(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestHoldMemory: the reporting order goes one above the largest block
// order while held, the memory is touched, the fragments say so, and the
// old order comes back, once, even when touching fails.
func TestHoldMemory(t *testing.T) {
	dir := t.TempDir()
	param, buddy := filepath.Join(dir, "order"), filepath.Join(dir, "buddyinfo")
	if err := os.WriteFile(param, []byte("9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(buddy, []byte(buddySample), 0o644); err != nil {
		t.Fatal(err)
	}
	touched := false
	restore, note, err := holdMemory(param, buddy, func() error {
		touched = true
		if v := readParam(t, param); v != "11" {
			t.Errorf("while touching, the order reads %q, want 11 (reporting paused first)", v)
		}
		return nil
	}, 3<<30)
	if err != nil {
		t.Fatal(err)
	}
	if !touched {
		t.Errorf("the memory was not touched")
	}
	if v := readParam(t, param); v != "11" {
		t.Errorf("held: the order reads %q, want 11 (the buddy allocator has orders 0-10)", v)
	}
	for _, want := range []string{"9 → 11", "3.0 GiB"} {
		if !strings.Contains(note, want) {
			t.Errorf("note %q does not say %q", note, want)
		}
	}
	if memoryNote != note {
		t.Errorf("fragments would say %q, want the note", memoryNote)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if v := readParam(t, param); v != "9" {
		t.Errorf("restored: the order reads %q, want 9", v)
	}
	if memoryNote != "" {
		t.Errorf("after restore, fragments would still say %q", memoryNote)
	}
	if err := os.WriteFile(param, []byte("5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := restore(); err != nil || readParam(t, param) != "5" {
		t.Errorf("a second restore wrote again (err %v, order %q)", err, readParam(t, param))
	}

	// Touching fails: the order goes back and the error says what failed.
	if err := os.WriteFile(param, []byte("9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = holdMemory(param, buddy, func() error { return errors.New("no room") }, 1<<20)
	if err == nil || !strings.Contains(err.Error(), "touching the memory: no room") {
		t.Errorf("touch failing: %v, want it named", err)
	}
	if v := readParam(t, param); v != "9" {
		t.Errorf("after a failed touch the order reads %q, want 9 back", v)
	}

	// No such switch (bare metal, other hypervisors): nothing to do.
	restore, note, err = holdMemory(filepath.Join(dir, "missing"), buddy, func() error {
		t.Errorf("touched without a switch")
		return nil
	}, 1<<20)
	if err != nil || note != "" || restore() != nil {
		t.Errorf("without the switch: note %q, err %v; want nothing done", note, err)
	}

	// An unreadable buddyinfo is an error, and changes nothing.
	if err := os.WriteFile(buddy, []byte("nonsense\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := holdMemory(param, buddy, func() error { return nil }, 1<<20); err == nil || !strings.Contains(err.Error(), "block orders") {
		t.Errorf("bad buddyinfo: %v, want an error about the block orders", err)
	}
	if v := readParam(t, param); v != "9" {
		t.Errorf("after a bad buddyinfo the order reads %q, want 9 untouched", v)
	}
}

// TestHoldGuestMemory: the machine's own switch, where it has one.
func TestHoldGuestMemory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it writes a kernel parameter and mounts a tmpfs")
	}
	if _, err := os.Stat(ReportingParam); err != nil {
		t.Skipf("this machine has no free page reporting to pause (%v)", err)
	}
	old := readParam(t, ReportingParam)
	orders, err := blockOrders(buddyinfo)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	restore, note, err := HoldGuestMemory(work, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = restore() })
	if v := readParam(t, ReportingParam); v != strconv.Itoa(orders) {
		t.Errorf("held: the order reads %q, want %d", v, orders)
	}
	if !strings.Contains(note, "8 MiB") {
		t.Errorf("note %q does not say how much was touched", note)
	}
	if isMountpoint(filepath.Join(work, "touch-memory")) {
		t.Errorf("the touch tmpfs is still mounted")
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if v := readParam(t, ReportingParam); v != old {
		t.Errorf("restored: the order reads %q, want %q", v, old)
	}
}

// TestTouchMemoryAfterKill: a tmpfs a killed run left mounted is
// unmounted first, so its memory is not held twice.
func TestTouchMemoryAfterKill(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it mounts tmpfs")
	}
	work := t.TempDir()
	dir := filepath.Join(work, "touch-memory")
	if _, err := MountTmpfs(dir, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fill"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := touchMemory(work, 2<<20); err != nil {
		t.Fatal(err)
	}
	if isMountpoint(dir) {
		t.Errorf("%s is still mounted after touchMemory", dir)
	}
}
