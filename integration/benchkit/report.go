package benchkit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// BenchDir is where the fragments and plots live, relative to the
// repository root; Assemble writes BenchReport.
const (
	BenchDir    = "docs/bench"
	BenchReport = "docs/BENCHMARKS.md"
)

// SectionOrder is the order of the known fragments in docs/BENCHMARKS.md;
// any other fragment follows them, alphabetically.
var SectionOrder = []string{"micro", "where", "kafka", "latency", "latency-kafka", "burst", "steady", "migration", "pmem", "takeover", "takeover-io_uring"}

// RepoRoot is the directory holding the module's go.mod, found from the
// working directory upwards (go test runs in the package directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			bytes.Contains(b, []byte("module github.com/tierfs/tierfs\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/tierfs/tierfs above the working directory")
		}
		dir = parent
	}
}

// Fragment writes docs/bench/<name>.md under repoRoot: the markdown of one
// section of the report (it should start with a "## " heading), followed
// by a line saying when and on what it was measured (a section can be
// rerun alone, so sections may come from different runs). Plots in
// docs/bench are linked from the section as bench/<file> (the report is
// docs/BENCHMARKS.md); Assemble links those the section does not name.
// The file is replaced atomically.
func Fragment(repoRoot, name, markdown string) error {
	if name == "" || strings.ContainsAny(name, "/\\") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("fragment name %q: want a plain file name", name)
	}
	dir := filepath.Join(repoRoot, BenchDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	m := Machine()
	held := ""
	if memoryNote != "" {
		held = "; " + memoryNote
	}
	text := strings.TrimRight(markdown, "\n") + "\n\n" +
		fmt.Sprintf("<sub>Measured %s on %s, kernel %s, %d cores%s.</sub>\n",
			time.Now().UTC().Format("2006-01-02 15:04 UTC"), m.CPU, m.Kernel, m.Cores, held)
	return writeAtomic(filepath.Join(dir, name+".md"), []byte(text))
}

func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// MachineInfo describes the machine a report was made on.
type MachineInfo struct {
	Kernel string // uname -r
	CPU    string // model name in /proc/cpuinfo
	Cores  int    // online CPUs
	Memory string // MemTotal, as "23.5 GiB"
	Go     string // the Go that built the test binary
	Java   string // first line of `java -version`, or "not installed"
}

// Machine collects MachineInfo; what cannot be read is "unknown".
func Machine() MachineInfo {
	m := MachineInfo{Kernel: "unknown", CPU: "unknown", Cores: runtime.NumCPU(), Memory: "unknown",
		Go: runtime.Version(), Java: "not installed"}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.Join(strings.Fields(v), " ")
				break
			}
		}
	}
	if n := meminfo("MemTotal:"); n > 0 {
		m.Memory = humanBytes(n)
	}
	java := os.Getenv("JAVA")
	if java == "" {
		java = "java"
	}
	if out, err := exec.Command(java, "-version").CombinedOutput(); err == nil {
		m.Java = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	return m
}

// MethodText is the method section of docs/BENCHMARKS.md: what every
// section holds to, whichever measured it.
const MethodText = `## Method

- **The configuration judged.** Every target is judged on one configuration: the defaults an operator
  gets from ` + "`tierfs mount`" + ` with examples/tierfs.toml's ` + "`[mount]`" + ` table as it ships (the package installs
  it as /etc/tierfs/tierfs.toml) and no flags: supervised (` + "`supervisor`" + ` defaults to true: a supervisor
  process holds ` + "`/dev/fuse`" + `, so that a daemon's kill -9 is a pause), and so served through ` + "`/dev/fuse`" + `
  (` + "`supervisor_io_uring`" + ` is off: a kill -9 over io_uring can fail calls in flight). The other modes are
  measured too, each the defaults with one change, on rows of their own: unsupervised through ` + "`/dev/fuse`" + `
  (` + "`supervisor = false`" + `, ` + "`io_uring = false`" + `); unsupervised over FUSE over io_uring, the daemon turning
  the kernel's switch on itself (` + "`supervisor = false`" + `, ` + "`enable_uring_switch = true`" + `; the suite turns
  ` + "`/sys/module/fuse/parameters/enable_uring`" + ` off before mounting, as a stock kernel has it, and puts it back
  after); ` + "`--direct-io`" + `; and, in the micro-benchmarks only, ` + "`writeback_cache`" + `. No verdict
  is taken from them, and no target is judged on the best of several configurations. Each verdict is also
  one ` + "`VERDICT`" + ` line in make bench's output (met or missed, the ratio, its spread, and whether the median
  or the lowest round is judged), all of them repeated at its end.
- **Peers write where tierfs writes.** mergerfs, the FUSE peer, runs over a branch on the same fast
  medium as tierfs's fast tier, first, and a slow branch, with ` + "`" + MergerfsOptions + "`" + `, chosen from
  mergerfs's documentation (mergerfs(1)): ` + "`minfreespace=0`" + `, since mergerfs's default of 4G makes its
  create policies skip a branch with less free space, as a benchmark's tmpfs is, and every file went to
  the slow branch on disk; ` + "`category.create=ff`" + `, new files on the first branch, as tierfs puts them on its
  first tier; ` + "`cache.files=full`" + `, the page cache kept across opens, as tierfs's FOPEN_KEEP_CACHE
  (` + "`partial`" + ` would drop it at each open, ` + "`off`" + ` is direct I/O, an opt-in mode of tierfs); no write-back
  cache, as tierfs by default; tierfs's timeouts (an hour for attributes and entries, 1 s for negative entries); no
  ` + "`dropcacheonclose`" + `.
- **Checked, not assumed.** After every file a micro-benchmark writes, and after every Kafka run, the
  suite checks on the branches and tiers themselves that the target's data is on its fast medium and on
  no other (` + "`benchkit.Placement`" + `): a peer, or tierfs, writing elsewhere fails the run instead of being
  reported. ` + "`go test ./integration/benchkit`" + ` (in ` + "`make unit`" + `) mounts mergerfs with the old options
  over a small tmpfs and a disk directory and requires the check to fail there.
`

// Assemble writes docs/BENCHMARKS.md under repoRoot: a header (the
// machine: kernel, CPU model, cores, memory, Go and Java versions; the
// date; the command, `make bench`), then every fragment in docs/bench in
// the order of SectionOrder and then the others alphabetically. An SVG or
// PNG file in docs/bench that a fragment does not name is linked after
// the fragment whose name starts it (kafka-throughput.svg after kafka),
// or else in a last "Plots" section.
func Assemble(repoRoot string) error {
	dir := filepath.Join(repoRoot, BenchDir)
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	frags := map[string]string{}
	var names, images []string
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		switch ext := strings.ToLower(filepath.Ext(e.Name())); ext {
		case ".md":
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				return err
			}
			name := strings.TrimSuffix(e.Name(), filepath.Ext(e.Name()))
			frags[name] = string(b)
			names = append(names, name)
		case ".svg", ".png":
			images = append(images, e.Name())
		}
	}
	names = orderSections(names)
	sort.Strings(images)

	// Images the fragments do not name, by the fragment they belong to.
	owner := map[string][]string{}
	var loose []string
	for _, img := range images {
		named := false
		for _, n := range names {
			if strings.Contains(frags[n], img) {
				named = true
				break
			}
		}
		if named {
			continue
		}
		best := ""
		for _, n := range names {
			if len(n) > len(best) && strings.HasPrefix(img, n) &&
				len(img) > len(n) && strings.ContainsRune("-_.", rune(img[len(n)])) {
				best = n
			}
		}
		if best == "" {
			loose = append(loose, img)
		} else {
			owner[best] = append(owner[best], img)
		}
	}

	m := Machine()
	var b strings.Builder
	b.WriteString("# tierfs benchmarks\n\n")
	b.WriteString("Generated by `make bench` (as root, on the machine below; it sets up and tears down its own\n")
	b.WriteString("tiers); do not edit by hand. Each section is written by one test in `integration/bench/` and\n")
	b.WriteString("can be rerun alone, e.g. `make bench BENCH_RUN=TestMicro`, after which this file is rebuilt\n")
	b.WriteString("from all the sections in `docs/bench/`: each says when it was measured.\n\n")
	b.WriteString("Figures are medians of several runs (5 in the judged sections, micro-benchmarks and Kafka\n")
	b.WriteString("throughput; 3 elsewhere unless a section says otherwise) with their spread (min–max); ratios\n")
	b.WriteString("are taken in the same run, round by round where the section says so. The changes made to the\n")
	b.WriteString("data path, each with its before/after figures, are in [perf.md](perf.md).\n\n")
	b.WriteString(MethodText)
	b.WriteString("\n")
	command := "`make bench`"
	if f, sl := os.Getenv(EnvFastDir), os.Getenv(EnvSlowDir); f != "" || sl != "" {
		command = fmt.Sprintf("`make bench BENCH_FAST_DIR=%s BENCH_SLOW_DIR=%s`: on these two directories, not the suite's own tiers", f, sl)
	}
	b.WriteString(Table([]string{"", ""}, [][]string{
		{"command", command},
		{"date", time.Now().UTC().Format("2006-01-02 15:04 UTC")},
		{"kernel", m.Kernel},
		{"CPU", m.CPU},
		{"cores", strconv.Itoa(m.Cores)},
		{"memory", m.Memory},
		{"Go", m.Go},
		{"Java", m.Java},
	}))
	if len(names) == 0 {
		b.WriteString("\nNo section has been measured yet: run `make bench`.\n")
	} else {
		b.WriteString("\nSections:\n\n")
		for _, n := range names {
			fmt.Fprintf(&b, "- [%s](bench/%s.md)\n", sectionTitle(n, frags[n]), n)
		}
	}
	for _, n := range names {
		b.WriteString("\n")
		b.WriteString(strings.TrimRight(frags[n], "\n"))
		b.WriteString("\n")
		for _, img := range owner[n] {
			fmt.Fprintf(&b, "\n![%s](bench/%s)\n", img, img)
		}
	}
	if len(loose) > 0 {
		b.WriteString("\n## Plots\n")
		for _, img := range loose {
			fmt.Fprintf(&b, "\n![%s](bench/%s)\n", img, img)
		}
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Join(repoRoot, BenchReport)), 0o755); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(repoRoot, BenchReport), []byte(b.String()))
}

// orderSections sorts fragment names: SectionOrder first, the rest
// alphabetically.
func orderSections(names []string) []string {
	rank := map[string]int{}
	for i, n := range SectionOrder {
		rank[n] = i
	}
	out := append([]string(nil), names...)
	sort.SliceStable(out, func(i, j int) bool {
		ri, iok := rank[out[i]]
		rj, jok := rank[out[j]]
		switch {
		case iok && jok:
			return ri < rj
		case iok != jok:
			return iok
		default:
			return out[i] < out[j]
		}
	})
	return out
}

// sectionTitle is the text of the fragment's first "#" heading, or name.
func sectionTitle(name, text string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "#") {
			if t := strings.TrimSpace(strings.TrimLeft(l, "#")); t != "" {
				return t
			}
		}
	}
	return name
}

// Table renders a markdown table: a header row, the separator, one row
// per element of rows. Short rows are padded with empty cells; "|" and
// newlines in cells are escaped so that they cannot break the table.
func Table(header []string, rows [][]string) string {
	width := len(header)
	for _, r := range rows {
		width = max(width, len(r))
	}
	if width == 0 {
		return ""
	}
	var b strings.Builder
	line := func(cells []string) {
		b.WriteString("|")
		for i := 0; i < width; i++ {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			c = strings.ReplaceAll(c, "|", `\|`)
			c = strings.ReplaceAll(strings.ReplaceAll(c, "\r\n", " "), "\n", " ")
			b.WriteString(" " + c + " |")
		}
		b.WriteString("\n")
	}
	line(header)
	b.WriteString("|")
	for i := 0; i < width; i++ {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range rows {
		line(r)
	}
	return b.String()
}
