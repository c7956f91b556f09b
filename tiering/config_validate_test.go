package tiering

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tierfs/tierfs/internal/units"
)

// A capacity the tier's filesystem cannot hold, or one too small for any
// file to be placed, is refused naming the sizes (issue 16 item 12).
func TestValidateCapacity(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	fsSize := units.ByteSize(int64(st.Blocks) * st.Bsize)
	for _, tc := range []struct {
		capacity units.ByteSize
		want     string // "" when valid
	}{
		{0, ""},
		{MinCapacity, ""},
		{fsSize / 2, ""},
		{fsSize + 1<<30, "is more than the filesystem under " + dir + " holds (" + units.Human(int64(fsSize)) + ")"},
		{MinCapacity - 1, "must be 0 (the whole filesystem) or at least 1MiB"},
		{1, "at least 1MiB"},
	} {
		err := TierConfig{Name: "fast", Type: TypeNVMe, Path: dir, Capacity: tc.capacity}.Validate(0)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("capacity %s: %v", tc.capacity, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), "tier[0].capacity: ") || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("capacity %s on a %s filesystem: %v, want tier[0].capacity: ...%s", tc.capacity, fsSize, err, tc.want)
		}
	}
}

// Every problem of the tiers is reported, not the first (issue 16 item
// 11).
func TestValidateTiersReportsAll(t *testing.T) {
	dir := t.TempDir()
	err := ValidateTiers([]TierConfig{
		{Name: "a b", Type: "tape", Path: dir, Capacity: -1},
		{Name: "slow", Type: TypeHDD, Path: "relative"},
		{Name: "slow", Type: TypeHDD, Path: dir},
	})
	var keys []string
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			keys = append(keys, line[:strings.Index(line, ": ")])
		}
	}
	want := "tier[0].name tier[0].type tier[0].capacity tier[1].path tier[2].name tier[2].path"
	if got := strings.Join(keys, " "); got != want {
		t.Errorf("ValidateTiers reported %q, want %q:\n%v", got, want, err)
	}
}
