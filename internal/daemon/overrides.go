package daemon

import (
	"strings"

	"github.com/tierfs/tierfs/mountutil"
)

// MountFlags are the flags of `tierfs mount` that stand for a [mount]
// key: given, either way (--writeback-cache=false too), the flag wins
// over the file.
var MountFlags = []struct{ Flag, Key string }{
	{"writeback-cache", "writeback_cache"},
	{"io-uring", "io_uring"},
	{"direct-io", "direct_io"},
}

// Overrides maps the [mount] keys whose flag was given to the flag's
// value.
type Overrides map[string]bool

// Apply returns m with the overridden keys set from the flags.
func (o Overrides) Apply(m mountutil.Config) mountutil.Config {
	if v, ok := o["writeback_cache"]; ok {
		m.WritebackCache = v
	}
	if v, ok := o["io_uring"]; ok {
		m.IOUring = v
	}
	if v, ok := o["direct_io"]; ok {
		m.DirectIO = v
	}
	return m
}

// note marks a reload's "mount.KEY: OLD -> NEW" change of a key that a
// flag overrides: the file's new value does not apply to this daemon,
// nor to a next mount given the same flag.
func (o Overrides) note(change string) string {
	for _, m := range MountFlags {
		if _, ok := o[m.Key]; ok && strings.HasPrefix(change, "mount."+m.Key+":") {
			return change + " (--" + m.Flag + " on the command line overrides it)"
		}
	}
	return change
}
