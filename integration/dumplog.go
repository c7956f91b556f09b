package integration

// Parsing DumpLogSegments --deep-iteration.

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SegmentDump is what DumpLogSegments --deep-iteration says of one .log.
type SegmentDump struct {
	Path           string
	StartOffset    int64 // "Log starting offset"
	Batches        int
	InvalidBatches []string // batch lines without "isvalid: true"
	Records        int64    // sum of the batches' count
	RecordOffsets  []int64  // from the "| offset: N" lines
	Unexpected     []string // lines the parser does not know
}

var (
	dumpingRE     = regexp.MustCompile(`^Dumping (.+)$`)
	startOffRE    = regexp.MustCompile(`^Log starting offset: (\d+)$`)
	batchRE       = regexp.MustCompile(`^baseOffset: (\d+) lastOffset: (\d+) count: (\d+) .* isvalid: (\w+)`)
	recordOffsRE  = regexp.MustCompile(`^\| offset: (\d+) `)
	dumpBatchSize = 40 // files per DumpLogSegments run (one JVM each)
)

// DumpSegments runs DumpLogSegments --deep-iteration on the given .log
// files (run it with the broker stopped, or on sealed segments) and parses
// what it prints about each.
func (k *Kafka) DumpSegments(t *testing.T, dir string, files []string) []SegmentDump {
	t.Helper()
	var dumps []SegmentDump
	for i := 0; i < len(files); i += dumpBatchSize {
		j := min(i+dumpBatchSize, len(files))
		out := k.MustTool(t, dir, 5*time.Minute, nil, "kafka.tools.DumpLogSegments",
			"--deep-iteration", "--files", strings.Join(files[i:j], ","))
		got := parseDump(out)
		if len(got) != j-i {
			fatalf(t, "DumpLogSegments dumped %d files of %d:\n%s", len(got), j-i, lastLines(out, 20))
		}
		dumps = append(dumps, got...)
	}
	return dumps
}

func parseDump(out []byte) []SegmentDump {
	var dumps []SegmentDump
	var cur *SegmentDump
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		l := sc.Text()
		if m := dumpingRE.FindStringSubmatch(l); m != nil {
			dumps = append(dumps, SegmentDump{Path: m[1], StartOffset: -1})
			cur = &dumps[len(dumps)-1]
			continue
		}
		if cur == nil {
			continue
		}
		if m := startOffRE.FindStringSubmatch(l); m != nil {
			cur.StartOffset, _ = strconv.ParseInt(m[1], 10, 64)
			continue
		}
		if m := batchRE.FindStringSubmatch(l); m != nil {
			cur.Batches++
			n, _ := strconv.ParseInt(m[3], 10, 64)
			cur.Records += n
			if m[4] != "true" {
				cur.InvalidBatches = append(cur.InvalidBatches, l)
			}
			continue
		}
		if strings.HasPrefix(l, "baseOffset:") {
			cur.InvalidBatches = append(cur.InvalidBatches, l) // no isvalid field?
			continue
		}
		if m := recordOffsRE.FindStringSubmatch(l); m != nil {
			o, _ := strconv.ParseInt(m[1], 10, 64)
			cur.RecordOffsets = append(cur.RecordOffsets, o)
			continue
		}
		if strings.HasPrefix(l, "| ") || strings.TrimSpace(l) == "" {
			continue // a control record or a record's data
		}
		cur.Unexpected = append(cur.Unexpected, l)
	}
	return dumps
}

// LogFiles lists the .log segment files under root, sorted, grouped by
// partition directory (the directory's name, e.g. "orders-0"). A file or
// directory that disappears during the walk (a running broker deletes
// them) is left out.
func LogFiles(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path != root {
			return nil
		}
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.HasSuffix(d.Name(), ".log") {
			part := filepath.Base(filepath.Dir(path))
			out[part] = append(out[part], path)
		}
		return nil
	})
	if err != nil {
		fatalf(t, "walking %s: %v", root, err)
	}
	return out
}
