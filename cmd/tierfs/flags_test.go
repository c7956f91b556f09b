package main

import (
	"flag"
	"reflect"
	"testing"
)

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args []string
		pos  []string
		json bool
		r    bool
	}{
		{[]string{"a", "b"}, []string{"a", "b"}, false, false},
		{[]string{"--json", "-r", "a"}, []string{"a"}, true, true},
		{[]string{"a", "-r", "b", "--json"}, []string{"a", "b"}, true, true},
		{[]string{"-r", "--", "-json", "a"}, []string{"-json", "a"}, false, true},
		{[]string{"a", "--", "-r"}, []string{"a", "-r"}, false, false},
		{nil, nil, false, false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		j := fs.Bool("json", false, "")
		r := fs.Bool("r", false, "")
		pos, err := parseInterspersed(fs, tc.args)
		if err != nil || !reflect.DeepEqual(pos, tc.pos) || *j != tc.json || *r != tc.r {
			t.Errorf("%q: pos %q json %v r %v err %v; want %q %v %v", tc.args, pos, *j, *r, err, tc.pos, tc.json, tc.r)
		}
	}
}
