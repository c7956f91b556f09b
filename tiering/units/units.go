// Package units holds the human-friendly quantities used in tierfs's TOML
// configuration: byte sizes ("64GiB"), rates ("200MiB/s") and durations ("5s").
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ByteSize is a number of bytes written as "1GiB", "512MiB", "10MB", "4096".
type ByteSize int64

var byteSuffixes = []struct {
	s string
	m int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"PiB", 1 << 50},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"PB", 1e15},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// ParseByteSize parses "64GiB", "1.5GiB", "100MB", "4096".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	mult := int64(1)
	for _, suf := range byteSuffixes {
		if strings.HasSuffix(t, suf.s) {
			mult = suf.m
			t = strings.TrimSpace(strings.TrimSuffix(t, suf.s))
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("invalid size %q (want e.g. \"64GiB\", \"512MiB\", \"4096\")", s)
	}
	if f < 0 {
		return 0, fmt.Errorf("negative size %q", s)
	}
	v := f * float64(mult)
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q too large", s)
	}
	return ByteSize(v), nil
}

// UnmarshalText implements encoding.TextUnmarshaler for TOML strings.
func (b *ByteSize) UnmarshalText(p []byte) error {
	v, err := ParseByteSize(string(p))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalText prints the size in the largest exact binary unit.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

func (b ByteSize) String() string {
	v := int64(b)
	for _, u := range []struct {
		s string
		m int64
	}{{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v != 0 && v%u.m == 0 {
			return fmt.Sprintf("%d%s", v/u.m, u.s)
		}
	}
	return strconv.FormatInt(v, 10)
}

// Human prints an approximate size for people: "1.5 GiB", "312 B".
func Human(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	i := -1
	for math.Abs(f) >= unit && i < 4 {
		f /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTP"[i])
}

// Rate is bytes per second written as "200MiB/s"; 0 means unlimited.
type Rate int64

// ParseRate parses "200MiB/s", "100MB/s", "0".
func ParseRate(s string) (Rate, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(t, "/s")
	b, err := ParseByteSize(t)
	if err != nil {
		return 0, fmt.Errorf("invalid rate %q (want e.g. \"200MiB/s\", 0 for unlimited)", s)
	}
	return Rate(b), nil
}

func (r *Rate) UnmarshalText(p []byte) error {
	v, err := ParseRate(string(p))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

func (r Rate) String() string {
	if r == 0 {
		return "0"
	}
	return ByteSize(r).String() + "/s"
}

// Duration is a time.Duration written as "5s", "1m30s".
type Duration time.Duration

func (d *Duration) UnmarshalText(p []byte) error {
	v, err := time.ParseDuration(strings.TrimSpace(string(p)))
	if err != nil {
		return fmt.Errorf("invalid duration %q (want e.g. \"5s\", \"1m\")", string(p))
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d Duration) String() string { return time.Duration(d).String() }

// KeyError is a configuration error about one key. Key is the TOML path
// ("tier[1].path", "policy.migrate_threshold") so that the loader can name
// the line it came from.
type KeyError struct {
	Key string
	Msg string
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Msg }

// Errorf makes a KeyError.
func Errorf(key, format string, args ...any) error {
	return &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)}
}
