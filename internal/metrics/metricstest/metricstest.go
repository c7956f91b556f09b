// Package metricstest scrapes a tierfs metrics endpoint over HTTP for
// tests, and checks what it serves with promtool.
package metricstest

import (
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tierfs/tierfs/internal/testenv"
)

// Scrape is one scrape: the text served and its samples by series, as
// the text names them (`name{label="value",...}`, labels in the order
// the endpoint writes them: sorted by name).
type Scrape struct {
	Text   string
	Series map[string]float64
}

// Get scrapes http://addr/metrics.
func Get(t testing.TB, addr string) Scrape {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s %v\n%s", addr, resp.Status, err, b)
	}
	return Parse(t, string(b))
}

// Parse reads the text exposition format.
func Parse(t testing.TB, text string) Scrape {
	t.Helper()
	s := Scrape{Text: text, Series: map[string]float64{}}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("metrics line without a value: %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		s.Series[line[:i]] = v
	}
	return s
}

// Value is the sample of metric name with labels (pairs of name and
// value, in the order the endpoint writes them: by name, a histogram's
// "le" last), and whether there is one.
func (s Scrape) Value(name string, labels ...string) (float64, bool) {
	key := name
	if len(labels) > 0 {
		var b strings.Builder
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(labels[i] + "=" + strconv.Quote(labels[i+1]))
		}
		key += "{" + b.String() + "}"
	}
	v, ok := s.Series[key]
	return v, ok
}

// Families lists the metric families the scrape has (from its TYPE
// lines).
func (s Scrape) Families() map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(s.Text, "\n") {
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	return out
}

// Promtool runs `promtool check metrics` on text, failing the test on
// any problem it reports. Without promtool the test skips (fails under
// CI=true): `make deps` installs it (Debian package prometheus).
func Promtool(t testing.TB, text string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	testenv.Require(t, err == nil, "promtool not found (Debian package prometheus; make deps installs it)")
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || strings.TrimSpace(out.String()) != "" {
		t.Errorf("promtool check metrics: %v\n%s", err, out.String())
	}
}
