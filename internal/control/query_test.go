package control

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// A query that does not parse is a 400 saying so, never the request with
// the bad part dropped: /v1/ls?path=%zz listed the mount's root (issue 16
// item 13c).
func TestControlBadQuery(t *testing.T) {
	c, _ := serveFake(t)
	for _, tc := range []struct{ method, url string }{
		{http.MethodGet, "http://tierfs/v1/ls?path=%zz"},
		{http.MethodGet, "http://tierfs/v1/ls?path=a;recursive=true"},
		{http.MethodPost, "http://tierfs/v1/migrate?path=%zz&tier=slow"},
		{http.MethodPost, "http://tierfs/v1/migrate?path=a&tier=slow&x=%"},
	} {
		req, err := http.NewRequest(tc.method, tc.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e ErrorResponse
		err = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || err != nil || !strings.HasPrefix(e.Error, "bad query: ") {
			t.Errorf("%s %s: %d %q (%v); want 400 and \"bad query: ...\"", tc.method, tc.url, resp.StatusCode, e.Error, err)
		}
	}
}
