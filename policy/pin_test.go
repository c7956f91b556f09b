package policy

import "testing"

func TestMatchGlob(t *testing.T) {
	for _, c := range []struct {
		glob, path string
		want       bool
	}{
		{"__cluster_metadata-*/**", "__cluster_metadata-0/00000000000000000000.log", true},
		{"__cluster_metadata-*/**", "__cluster_metadata-0", true},
		{"__cluster_metadata-*/**", "orders-0/00000000000000000000.log", false},
		{"__consumer_offsets-*/**", "__consumer_offsets-12/x/y", true},
		{"orders-*/*.log", "orders-3/00000000000000000000.log", true},
		{"orders-*/*.log", "orders-3/00000000000000000000.index", false},
		{"**/*.index", "a/b/c.index", true},
		{"**/*.index", "c.index", true},
		{"a/**/b", "a/b", true},
		{"a/**/b", "a/x/y/b", true},
		{"a/**/b", "a/x/y/c", false},
		{"a", "a/b", false},
	} {
		if got := MatchGlob(c.glob, c.path); got != c.want {
			t.Errorf("MatchGlob(%q, %q) = %v, want %v", c.glob, c.path, got, c.want)
		}
	}
}
