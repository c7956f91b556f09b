// Package units holds the human-friendly quantities used in tierfs's TOML
// configuration: byte sizes ("64GiB"), rates ("200MiB/s") and durations ("5s"),
// each written with its unit.
package units

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ByteSize is a number of bytes written as "1GiB", "512MiB", "10MB",
// "4096B". A number without a unit is refused (0 excepted): "100" is far
// more often a slip for "100GiB" than a wish for 100 bytes.
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

// errNoUnit is a number given where a quantity needs its unit.
var errNoUnit = errors.New("no unit")

// ParseByteSize parses "64GiB", "1.5GiB", "100MB", "4096B" or "0". The
// size is rounded to a whole number of bytes.
func ParseByteSize(s string) (ByteSize, error) {
	v, err := parseSize(s)
	if errors.Is(err, errNoUnit) {
		return 0, sizeNeedsUnit(strings.TrimSpace(s), strconv.Quote(s))
	}
	return v, err
}

// parseSize is ParseByteSize with errNoUnit for a number without a unit.
func parseSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	mult := int64(0)
	for _, suf := range byteSuffixes {
		if strings.HasSuffix(t, suf.s) {
			mult = suf.m
			t = strings.TrimSpace(strings.TrimSuffix(t, suf.s))
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("invalid size %q (want e.g. \"64GiB\", \"512MiB\", \"4096B\")", s)
	}
	switch {
	case f < 0:
		return 0, fmt.Errorf("negative size %q", s)
	case f == 0:
		return 0, nil
	case mult == 0:
		return 0, errNoUnit
	}
	v := math.Round(f * float64(mult))
	switch {
	case v > math.MaxInt64/2:
		return 0, fmt.Errorf("size %q too large", s)
	case v < 1:
		return 0, fmt.Errorf("size %q is less than one byte", s)
	}
	return ByteSize(v), nil
}

func sizeNeedsUnit(num, got string) error {
	return fmt.Errorf("a size needs a unit, e.g. %q or %q (\"B\" for bytes); got %s", num+"GiB", num+"MiB", got)
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

// UnmarshalTOML takes a size from a TOML string, or from a TOML number
// only when that is 0: a bare number says nothing of its unit.
func (b *ByteSize) UnmarshalTOML(v any) error {
	if s, ok := v.(string); ok {
		return b.UnmarshalText([]byte(s))
	}
	num, ok := bareNumber(v)
	switch {
	case !ok:
		return fmt.Errorf("want a size such as \"64GiB\", got %s", TOMLType(v))
	case num == "0":
		*b = 0
		return nil
	case strings.HasPrefix(num, "-"):
		return fmt.Errorf("negative size %s", num)
	}
	return sizeNeedsUnit(num, "the bare number "+num)
}

// MarshalText prints the size in the largest exact binary unit.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

func (b ByteSize) String() string {
	v := int64(b)
	if v == 0 {
		return "0"
	}
	for _, u := range []struct {
		s string
		m int64
	}{{"PiB", 1 << 50}, {"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v%u.m == 0 {
			return fmt.Sprintf("%d%s", v/u.m, u.s)
		}
	}
	return strconv.FormatInt(v, 10) + "B"
}

// bareNumber is a TOML integer or float as it would be written ("0" for
// any zero); ok is false for any other value.
func bareNumber(v any) (num string, ok bool) {
	switch n := v.(type) {
	case int64:
		return strconv.FormatInt(n, 10), true
	case float64:
		if n == 0 {
			return "0", true
		}
		return strconv.FormatFloat(n, 'g', -1, 64), true
	}
	return "", false
}

// TOMLType names the type of a value the TOML decoder gives, for errors.
func TOMLType(v any) string {
	switch a := v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date-time"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		if len(a) > 0 && isArrayOfTables(a) {
			return "an array of tables"
		}
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

// isArrayOfTables: an inline array of inline tables is one too.
func isArrayOfTables(a []any) bool {
	for _, e := range a {
		if _, ok := e.(map[string]any); !ok {
			return false
		}
	}
	return true
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

// Rate is bytes per second written as "200MiB/s"; 0 means unlimited. Like a
// size, it needs its unit.
type Rate int64

// ParseRate parses "200MiB/s", "100MB/s", "0".
func ParseRate(s string) (Rate, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(t, "/s")
	b, err := parseSize(t)
	if errors.Is(err, errNoUnit) {
		return 0, rateNeedsUnit(strings.TrimSpace(t), strconv.Quote(s))
	}
	if err != nil {
		return 0, fmt.Errorf("invalid rate %q (want e.g. \"200MiB/s\", 0 for unlimited)", s)
	}
	return Rate(b), nil
}

func rateNeedsUnit(num, got string) error {
	return fmt.Errorf("a rate needs a unit, e.g. %q (\"B/s\" for bytes per second; 0 alone is unlimited); got %s",
		num+"MiB/s", got)
}

func (r *Rate) UnmarshalText(p []byte) error {
	v, err := ParseRate(string(p))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// UnmarshalTOML takes a rate from a TOML string, or the number 0.
func (r *Rate) UnmarshalTOML(v any) error {
	if s, ok := v.(string); ok {
		return r.UnmarshalText([]byte(s))
	}
	num, ok := bareNumber(v)
	switch {
	case !ok:
		return fmt.Errorf("want a rate such as \"200MiB/s\", got %s", TOMLType(v))
	case num == "0":
		*r = 0
		return nil
	case strings.HasPrefix(num, "-"):
		return fmt.Errorf("negative rate %s", num)
	}
	return rateNeedsUnit(num, "the bare number "+num)
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
	s := strings.TrimSpace(string(p))
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return durationNeedsUnit(s, strconv.Quote(string(p)))
		}
		return fmt.Errorf("invalid duration %q (want e.g. \"5s\", \"1m\")", string(p))
	}
	*d = Duration(v)
	return nil
}

func durationNeedsUnit(num, got string) error {
	return fmt.Errorf("a duration needs a unit, e.g. %q or %q; got %s", num+"s", num+"m", got)
}

// UnmarshalTOML takes a duration from a TOML string, or the number 0.
func (d *Duration) UnmarshalTOML(v any) error {
	if s, ok := v.(string); ok {
		return d.UnmarshalText([]byte(s))
	}
	num, ok := bareNumber(v)
	switch {
	case !ok:
		return fmt.Errorf("want a duration such as \"5s\", got %s", TOMLType(v))
	case num == "0":
		*d = 0
		return nil
	}
	return durationNeedsUnit(num, "the bare number "+num)
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
