package daemon

import "testing"

// A reload's change of a [mount] key that a flag overrides says so.
func TestOverridesNote(t *testing.T) {
	o := Overrides{"writeback_cache": false}
	if got, want := o.note("mount.writeback_cache: false -> true"),
		"mount.writeback_cache: false -> true (--writeback-cache on the command line overrides it)"; got != want {
		t.Errorf("note = %q, want %q", got, want)
	}
	for _, ch := range []string{"mount.io_uring: false -> true", "mount.direct_io: false -> true", "mount.read_ahead_kb: 1024 -> 512"} {
		if got := o.note(ch); got != ch {
			t.Errorf("note(%q) = %q: no flag overrides that key", ch, got)
		}
	}
}
