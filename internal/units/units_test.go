package units

import (
	"errors"
	"testing"
	"time"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
	}{
		{"0", 0},
		{"0.0", 0},
		{"4096B", 4096},
		{" 4096 B ", 4096},
		{"1B", 1},
		{"1.6B", 2}, // rounded to whole bytes
		{"1KiB", 1 << 10},
		{"512MiB", 512 << 20},
		{"64GiB", 64 << 30},
		{"1.5GiB", 3 << 29},
		{"2TiB", 2 << 40},
		{"1PiB", 1 << 50},
		{"100MB", 100e6},
		{"1KB", 1000},
		{"10GB", 10e9},
		{"1TB", 1e12},
		{"1PB", 1e15},
		{"4K", 4096},
		{"2M", 2 << 20},
		{"3G", 3 << 30},
		{"1T", 1 << 40},
		{"10 GiB", 10 << 30},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if err != nil {
			t.Errorf("ParseByteSize(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestParseByteSizeErrors(t *testing.T) {
	for _, in := range []string{"", "  ", "abc", "12XB", "GiB", "-1", "-1GiB", "NaN", "Inf", "1e30PiB", "1..2MiB",
		"4096", "1.5", "0.4B"} {
		if got, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want error", in, got)
		}
	}
}

func TestByteSizeStringRoundTrip(t *testing.T) {
	tests := []struct {
		in   ByteSize
		want string
	}{
		{0, "0"},
		{1, "1B"},
		{1000, "1000B"},
		{1 << 10, "1KiB"},
		{1536, "1536B"}, // 1.5KiB is not a whole number of KiB
		{1 << 20, "1MiB"},
		{3 << 29, "1536MiB"},
		{64 << 30, "64GiB"},
		{1 << 40, "1TiB"},
		{1 << 50, "1PiB"},
		{4096 + 1, "4097B"},
	}
	for _, tt := range tests {
		s := tt.in.String()
		if s != tt.want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(tt.in), s, tt.want)
		}
		back, err := ParseByteSize(s)
		if err != nil || back != tt.in {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", s, back, err, int64(tt.in))
		}
		txt, err := tt.in.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var u ByteSize
		if err := u.UnmarshalText(txt); err != nil || u != tt.in {
			t.Errorf("UnmarshalText(%q) = %d, %v; want %d", txt, u, err, int64(tt.in))
		}
	}
}

func TestByteSizeUnmarshalTextError(t *testing.T) {
	b := ByteSize(7)
	if err := b.UnmarshalText([]byte("12XB")); err == nil {
		t.Fatal("UnmarshalText(12XB): want error")
	}
	if b != 7 {
		t.Errorf("failed UnmarshalText changed the value to %d", b)
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want Rate
	}{
		{"0", 0},
		{"200MiB/s", 200 << 20},
		{"100MB/s", 100e6},
		{"1GiB/s", 1 << 30},
		{"4096B/s", 4096},
		{"4KiB", 4096},
		{" 1 KiB/s ", 1 << 10},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if err != nil {
			t.Errorf("ParseRate(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseRate(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
	for _, in := range []string{"", "fast", "-1MiB/s", "10MiB/h", "/s", "4096", "4096/s"} {
		if got, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) = %d, want error", in, got)
		}
	}
}

func TestRateStringRoundTrip(t *testing.T) {
	tests := []struct {
		in   Rate
		want string
	}{
		{0, "0"},
		{1 << 20, "1MiB/s"},
		{200 << 20, "200MiB/s"},
		{1 << 30, "1GiB/s"},
		{1000, "1000B/s"},
	}
	for _, tt := range tests {
		s := tt.in.String()
		if s != tt.want {
			t.Errorf("Rate(%d).String() = %q, want %q", int64(tt.in), s, tt.want)
		}
		var r Rate
		txt, _ := tt.in.MarshalText()
		if err := r.UnmarshalText(txt); err != nil || r != tt.in {
			t.Errorf("round trip of %q = %d, %v; want %d", txt, r, err, int64(tt.in))
		}
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"5s", 5 * time.Second},
		{"1m30s", 90 * time.Second},
		{" 250ms ", 250 * time.Millisecond},
		{"0s", 0},
		{"-1s", -time.Second},
	}
	for _, tt := range tests {
		var d Duration
		if err := d.UnmarshalText([]byte(tt.in)); err != nil {
			t.Errorf("UnmarshalText(%q): %v", tt.in, err)
			continue
		}
		if time.Duration(d) != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, want %v", tt.in, time.Duration(d), tt.want)
		}
		txt, _ := d.MarshalText()
		var back Duration
		if err := back.UnmarshalText(txt); err != nil || back != d {
			t.Errorf("round trip of %q = %v, %v", txt, back, err)
		}
		if d.String() != string(txt) {
			t.Errorf("String() = %q, MarshalText() = %q", d.String(), txt)
		}
	}
	for _, in := range []string{"", "5", "five seconds", "5 s"} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("UnmarshalText(%q) = %v, want error", in, d)
		}
	}
}

func TestHuman(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0 B"},
		{312, "312 B"},
		{1023, "1023 B"},
		{-5, "-5 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{3 << 29, "1.5 GiB"},
		{10 << 20, "10.0 MiB"},
		{1 << 40, "1.0 TiB"},
		{1 << 50, "1.0 PiB"},
		{1 << 60, "1024.0 PiB"},
		{-2048, "-2.0 KiB"},
	}
	for _, tt := range tests {
		if got := Human(tt.in); got != tt.want {
			t.Errorf("Human(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestKeyError(t *testing.T) {
	err := Errorf("tier[1].path", "%s does not exist", "/x")
	if got, want := err.Error(), "tier[1].path: /x does not exist"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != "tier[1].path" || ke.Msg != "/x does not exist" {
		t.Errorf("Errorf gave %#v", err)
	}
}
