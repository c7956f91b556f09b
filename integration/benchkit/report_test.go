package benchkit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	got := Table([]string{"a", "b"}, [][]string{{"1", "x|y"}, {"only"}, {"p", "q", "extra"}})
	want := "| a | b |  |\n" +
		"|---|---|---|\n" +
		"| 1 | x\\|y |  |\n" +
		"| only |  |  |\n" +
		"| p | q | extra |\n"
	if got != want {
		t.Errorf("Table:\n%s\nwant:\n%s", got, want)
	}
	if got := Table([]string{"h"}, [][]string{{"two\nlines"}}); !strings.Contains(got, "| two lines |") {
		t.Errorf("a newline in a cell is not escaped:\n%s", got)
	}
	if got := Table(nil, nil); got != "" {
		t.Errorf("empty table = %q, want \"\"", got)
	}
}

func TestFragmentRejectsPaths(t *testing.T) {
	root := t.TempDir()
	for _, name := range []string{"", "../x", "a/b", ".hidden"} {
		if err := Fragment(root, name, "## x\n"); err == nil {
			t.Errorf("Fragment(%q) succeeded, want an error", name)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "docs")); err == nil {
		t.Errorf("a rejected fragment created docs/")
	}
}

func TestAssembleOrderAndImages(t *testing.T) {
	root := t.TempDir()
	// Written out of order; "zeta" and "alpha" are not in SectionOrder.
	for _, f := range []struct{ name, md string }{
		{"zeta", "## Zeta\nz body"},
		{"kafka", "## Kafka throughput\nk body, plot: ![p](bench/kafka-named.svg)"},
		{"alpha", "## Alpha\na body"},
		{"micro", "## Micro\nm body"},
		{"steady", "## Steady\ns body"},
	} {
		if err := Fragment(root, f.name, f.md); err != nil {
			t.Fatalf("Fragment(%s): %v", f.name, err)
		}
	}
	frag, err := os.ReadFile(filepath.Join(root, BenchDir, "micro.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(frag), "## Micro\nm body\n") || !strings.Contains(string(frag), "Measured ") {
		t.Errorf("micro.md = %q: want the markdown then a 'Measured' line", frag)
	}
	for _, img := range []string{"kafka-named.svg", "kafka-latency.svg", "steady_rate.png", "other.svg"} {
		if err := os.WriteFile(filepath.Join(root, BenchDir, img), []byte("<svg/>"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := Assemble(root); err != nil {
		t.Fatalf("Assemble: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(root, BenchReport))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, want := range []string{"`make bench`", "| kernel |", "| CPU |", "| cores |", "| memory |", "| Go |", "| Java |", "| date |", "## Method", MergerfsOptions, "minfreespace=0"} {
		if !strings.Contains(doc, want) {
			t.Errorf("the header lacks %q:\n%s", want, doc)
		}
	}
	// Sections: micro, kafka, steady (SectionOrder), then alpha, zeta.
	last := -1
	for _, body := range []string{"m body", "k body", "s body", "a body", "z body"} {
		i := strings.Index(doc, body)
		if i < 0 {
			t.Fatalf("%q missing from the report:\n%s", body, doc)
		}
		if i < last {
			t.Errorf("%q is out of order:\n%s", body, doc)
		}
		last = i
	}
	if !strings.Contains(doc, "- [Kafka throughput](bench/kafka.md)") {
		t.Errorf("no contents line for kafka:\n%s", doc)
	}
	// kafka-named.svg is named by its fragment: not linked again.
	if n := strings.Count(doc, "kafka-named.svg"); n != 1 {
		t.Errorf("kafka-named.svg appears %d times, want once", n)
	}
	// kafka-latency.svg after the kafka section, before steady.
	il, ik, is := strings.Index(doc, "![kafka-latency.svg](bench/kafka-latency.svg)"), strings.Index(doc, "k body"), strings.Index(doc, "s body")
	if il < 0 || il < ik || il > is {
		t.Errorf("kafka-latency.svg not linked after the kafka section (at %d; kafka %d, steady %d):\n%s", il, ik, is, doc)
	}
	ip := strings.Index(doc, "![steady_rate.png](bench/steady_rate.png)")
	if ip < is || ip > strings.Index(doc, "a body") {
		t.Errorf("steady_rate.png not linked after the steady section:\n%s", doc)
	}
	io, iplots := strings.Index(doc, "![other.svg](bench/other.svg)"), strings.Index(doc, "## Plots")
	if iplots < 0 || io < iplots || iplots < strings.Index(doc, "z body") {
		t.Errorf("other.svg not in a last Plots section:\n%s", doc)
	}
}

func TestAssembleNoFragments(t *testing.T) {
	root := t.TempDir()
	if err := Assemble(root); err != nil {
		t.Fatalf("Assemble: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(root, BenchReport))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "No section has been measured yet") {
		t.Errorf("an empty report does not say so:\n%s", b)
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "integration", "benchkit", "report.go")); err != nil {
		t.Errorf("RepoRoot() = %s, which does not hold integration/benchkit: %v", root, err)
	}
}
