package units

import (
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// A quantity written without its unit is refused with the unit to write,
// instead of being taken as bytes (or bytes per second): issue 16 item 12.
// A bare 0 needs no unit: zero is zero in any unit.
func TestTOMLNeedsUnits(t *testing.T) {
	type table struct {
		Size     ByteSize `toml:"size"`
		Rate     Rate     `toml:"rate"`
		Duration Duration `toml:"duration"`
	}
	for _, tc := range []struct {
		src  string
		want string // "" when the value is good
		got  table
	}{
		{src: `size = 1.5`, want: `a size needs a unit, e.g. "1.5GiB"`},
		{src: `size = 0.5`, want: `a size needs a unit, e.g. "0.5GiB"`},
		{src: `size = 4096`, want: `a size needs a unit, e.g. "4096GiB"`},
		{src: `size = "4096"`, want: `a size needs a unit, e.g. "4096GiB"`},
		{src: `size = "1.5"`, want: `a size needs a unit`},
		{src: `size = -1`, want: "negative"},
		{src: `size = "-1"`, want: "negative"},
		{src: `size = "0.4B"`, want: "less than one byte"},
		{src: `size = true`, want: `want a size such as "64GiB", got a boolean`},
		{src: `size = 0`, got: table{}},
		{src: `size = "0"`, got: table{}},
		{src: `size = "1.5KiB"`, got: table{Size: 1536}},
		{src: `size = "4097B"`, got: table{Size: 4097}},
		{src: `rate = 100`, want: `a rate needs a unit, e.g. "100MiB/s"`},
		{src: `rate = "100"`, want: `a rate needs a unit, e.g. "100MiB/s"`},
		{src: `rate = "100/s"`, want: `a rate needs a unit, e.g. "100MiB/s"`},
		{src: `rate = 0`, got: table{}},
		{src: `rate = "0"`, got: table{}},
		{src: `rate = "10MiB/s"`, got: table{Rate: 10 << 20}},
		{src: `duration = 5`, want: `a duration needs a unit, e.g. "5s"`},
		{src: `duration = "5"`, want: `a duration needs a unit, e.g. "5s"`},
		{src: `duration = 1.5`, want: `a duration needs a unit, e.g. "1.5s"`},
		{src: `duration = 0`, got: table{}},
		{src: `duration = "250ms"`, got: table{Duration: Duration(250 * time.Millisecond)}},
	} {
		var got table
		_, err := toml.Decode(tc.src, &got)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.src, err)
		case tc.want == "" && got != tc.got:
			t.Errorf("%s: decoded %+v, want %+v", tc.src, got, tc.got)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: decoded %+v, error %v; want an error with %q", tc.src, got, err, tc.want)
		}
	}
}
