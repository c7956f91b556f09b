package policy

import "testing"

func TestParseSegment(t *testing.T) {
	for _, tc := range []struct {
		name string
		off  int64
		ok   bool
	}{
		{"00000000000000000000.log", 0, true},
		{"00000000000000012345.log", 12345, true},
		{"orders-3/00000000000000000042.log", 42, true},
		{"09223372036854775807.log", 9223372036854775807, true},
		{"09223372036854775808.log", 0, false}, // beyond int64
		{"99999999999999999999.log", 0, false},
		{"0000000000000000000.log", 0, false},   // 19 digits
		{"000000000000000000000.log", 0, false}, // 21 digits
		{"0000000000000000000a.log", 0, false},
		{"00000000000000000000.log.deleted", 0, false},
		{"00000000000000000000.log.cleaned", 0, false},
		{"00000000000000000000.log.swap", 0, false},
		{"00000000000000000000.index", 0, false},
		{"00000000000000000000.logx", 0, false},
		{"segment.log", 0, false},
		{".log", 0, false},
		{"", 0, false},
	} {
		off, ok := ParseSegment(tc.name)
		if off != tc.off || ok != tc.ok {
			t.Errorf("ParseSegment(%q) = %d, %v; want %d, %v", tc.name, off, ok, tc.off, tc.ok)
		}
	}
}

func TestIsTransient(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"00000000000000000000.log.deleted", true},
		{"00000000000000000000.log.cleaned", true},
		{"00000000000000000000.log.swap", true},
		{"00000000000000000000.index.deleted", true},
		{"00000000000000000000.timeindex.swap", true},
		{"t-0/00000000000000000000.txnindex.cleaned", true},
		{"00000000000000000000.log", false},
		{"00000000000000000000.deleted.log", false}, // only the final suffix counts
		{"00000000000000000000.index", false},
		{"leader-epoch-checkpoint", false},
		{"x.deletedx", false},
		{"deleted", false},
		{"", false},
	} {
		if got := IsTransient(tc.name); got != tc.want {
			t.Errorf("IsTransient(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestIsCompanion(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"00000000000000000000.index", true},
		{"00000000000000000000.timeindex", true},
		{"00000000000000000000.txnindex", true},
		{"00000000000000000123.snapshot", true},
		{"t-0/00000000000000000000.index", true},
		{"00000000000000000000.index.deleted", true},
		{"00000000000000000000.timeindex.cleaned", true},
		{"00000000000000000000.index.swap", true},
		{"00000000000000000000.log", false},
		{"00000000000000000000.log.deleted", false},
		{"00000000000000000000-0000000001.checkpoint", false},
		{"backup.snapshot", false}, // not Kafka's
		{"search.index", false},
		{"0000000000000000000.index", false}, // 19 digits
		{"00000000000000000000.index.deleted.deleted", false},
		{"leader-epoch-checkpoint", false},
		{"", false},
	} {
		if got := IsCompanion(tc.name); got != tc.want {
			t.Errorf("IsCompanion(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPartitionOf(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"orders-3/00000000000000000000.log", "orders-3"},
		{"kafka/orders-3/00000000000000000000.log", "kafka/orders-3"},
		{"00000000000000000000.log", ""},
		{"meta.properties", ""},
		{"", ""},
	} {
		if got := PartitionOf(tc.path); got != tc.want {
			t.Errorf("PartitionOf(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

func TestInDeletedPartition(t *testing.T) {
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"orders-3.5b1c0a6e7d2f4e1a9c3b8d7e6f5a4b3c-delete/00000000000000000000.log", true},
		{"orders-delete-0/00000000000000000000.log", false}, // a topic named "orders-delete"
		{"orders-3/00000000000000000000.log", false},
		{"x-delete", false}, // a file, not a directory
	} {
		if got := inDeletedPartition(tc.path); got != tc.want {
			t.Errorf("inDeletedPartition(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
}
