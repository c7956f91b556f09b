package dist

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tierfs/tierfs/internal/testenv"
)

// root is the repository root (this package is one level down).
func root(t *testing.T) string {
	t.Helper()
	r, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func lookPath(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// The shipped units pass systemd-analyze verify without a word: the mount
// unit's name matches its Where=, every key is known, and the broker's
// drop-in applies to a kafka.service (a stand-in here).
func TestSystemdUnitsVerify(t *testing.T) {
	testenv.Require(t, lookPath("systemd-analyze"), "systemd-analyze (package systemd: make deps) is needed")
	dir := t.TempDir()
	src := filepath.Join(root(t), "examples", "systemd")
	copyFile(t, filepath.Join(src, "var-lib-kafka-data.mount"), filepath.Join(dir, "var-lib-kafka-data.mount"))
	copyFile(t, filepath.Join(src, "kafka.service.d", "tierfs.conf"), filepath.Join(dir, "kafka.service.d", "tierfs.conf"))
	if err := os.WriteFile(filepath.Join(dir, "kafka.service"), []byte("[Unit]\nDescription=a stand-in for the broker's unit\n\n[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("systemd-analyze", "verify", "--man=no",
		filepath.Join(dir, "var-lib-kafka-data.mount"), filepath.Join(dir, "kafka.service"))
	// The units beside each other, then the system's (for the targets).
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// A unit that does not verify is caught: the check can fail.
	bad, err := os.ReadFile(filepath.Join(dir, "var-lib-kafka-data.mount"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "var-lib-kafka-data.mount"), bytes.Replace(bad, []byte("\nType="), []byte("\nTpye="), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command("systemd-analyze", "verify", "--man=no", filepath.Join(dir, "var-lib-kafka-data.mount"))
	cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
	if out, _ := cmd.CombinedOutput(); !bytes.Contains(out, []byte("Tpye")) {
		t.Errorf("systemd-analyze verify said nothing of an unknown key:\n%s", out)
	}
}

// The supervised service and its broker drop-in verify too. verify
// wants ExecStart='s binary to exist: a stand-in takes /usr/bin/tierfs's
// place; a misspelt key is caught here as well.
func TestSystemdServiceVerify(t *testing.T) {
	testenv.Require(t, lookPath("systemd-analyze"), "systemd-analyze (package systemd: make deps) is needed")
	dir := t.TempDir()
	src := filepath.Join(root(t), "examples", "systemd", "supervised")
	unit, err := os.ReadFile(filepath.Join(src, "tierfs.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"\nType=notify\n", "\nNotifyAccess=main\n", "\nFileDescriptorStoreMax=", "\nRestartKillSignal=SIGUSR1\n", "\nKillMode=mixed\n"} {
		if !bytes.Contains(unit, []byte(key)) {
			t.Errorf("tierfs.service lacks %q", strings.TrimSpace(key))
		}
	}
	stand := filepath.Join(dir, "tierfs")
	if err := os.WriteFile(stand, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "tierfs.service"), bytes.ReplaceAll(b, []byte("/usr/bin/tierfs"), []byte(stand)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(unit)
	copyFile(t, filepath.Join(src, "kafka.service.d", "tierfs.conf"), filepath.Join(dir, "kafka.service.d", "tierfs.conf"))
	if err := os.WriteFile(filepath.Join(dir, "kafka.service"), []byte("[Unit]\nDescription=a stand-in for the broker's unit\n\n[Service]\nExecStart=/bin/true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	verify := func(units ...string) ([]byte, error) {
		cmd := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, units...)...)
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
		return cmd.CombinedOutput()
	}
	if out, err := verify(filepath.Join(dir, "tierfs.service"), filepath.Join(dir, "kafka.service")); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	write(bytes.Replace(unit, []byte("\nFileDescriptorStoreMax="), []byte("\nFileDescriptorStorMax="), 1))
	if out, _ := verify(filepath.Join(dir, "tierfs.service")); !bytes.Contains(out, []byte("FileDescriptorStorMax")) {
		t.Errorf("systemd-analyze verify said nothing of an unknown key:\n%s", out)
	}
}

func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// installed reports whether dpkg knows the package tierfs (installed or
// its conffiles left).
func installed() bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "tierfs").Output()
	return err == nil && strings.TrimSpace(string(out)) != "" && !strings.Contains(string(out), "not-installed")
}

// `make deb` builds a package that dpkg installs: the stamped binary in
// /usr/bin, the example configuration as the conffile
// /etc/tierfs/tierfs.toml, the mount unit, the docs; purging it leaves
// none of them (issue 18, item 7).
func TestDebInstallRemove(t *testing.T) {
	testenv.Root(t, "installing a package with dpkg")
	testenv.Require(t, lookPath("dpkg") && lookPath("make") && lookPath("git"), "dpkg, make and git are needed")
	testenv.HoldSystemInstall(t)
	// Never touch an operator's install.
	_, errEtc := os.Lstat("/etc/tierfs")
	testenv.Require(t, !installed() && os.IsNotExist(errEtc), "a tierfs package or /etc/tierfs is already on this machine")

	r := root(t)
	tmp := t.TempDir()
	deb := filepath.Join(tmp, "tierfs.deb")
	mk := exec.Command("make", "--no-print-directory", "-C", r, "deb", "BIN="+filepath.Join(tmp, "tierfs"), "DEB="+deb)
	mk.Env = append(os.Environ(), "GOFLAGS=-buildvcs=false")
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}

	files := []string{"/usr/bin/tierfs", "/etc/tierfs/tierfs.toml", "/lib/systemd/system/var-lib-kafka-data.mount", "/lib/systemd/system/tierfs.service",
		"/usr/share/doc/tierfs/examples/systemd/supervised/kafka.service.d/tierfs.conf",
		"/usr/share/doc/tierfs/README.md", "/usr/share/doc/tierfs/operating.md",
		"/usr/share/doc/tierfs/examples/systemd/kafka.service.d/tierfs.conf"}
	t.Cleanup(func() {
		if installed() {
			if out, err := exec.Command("dpkg", "--purge", "tierfs").CombinedOutput(); err != nil {
				t.Errorf("cleanup: dpkg --purge tierfs: %v\n%s", err, out)
			}
		}
		os.Remove("/etc/tierfs")
	})
	run(t, "/", "dpkg", "-i", deb)

	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("after dpkg -i: %v", err)
		}
	}
	if conf := run(t, "/", "dpkg-query", "-W", "-f=${Conffiles}", "tierfs"); !strings.Contains(conf, "/etc/tierfs/tierfs.toml") {
		t.Errorf("conffiles: %q, want /etc/tierfs/tierfs.toml", conf)
	}
	out := run(t, "/", "/usr/bin/tierfs", "version")
	head := strings.TrimSpace(run(t, r, "git", "rev-parse", "HEAD"))
	if !strings.Contains(out, "revision: "+head+"\n") || !strings.Contains(out, "go-fuse:  v") {
		t.Errorf("/usr/bin/tierfs version (want revision %s and go-fuse's version):\n%s", head, out)
	}
	// mount(8)'s helper finds it on the system's default PATH.
	if p := run(t, "/", "env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "sh", "-c", "command -v tierfs"); strings.TrimSpace(p) != "/usr/bin/tierfs" && !strings.HasPrefix(p, "/usr/local/") {
		t.Errorf("command -v tierfs = %q", p)
	}

	run(t, "/", "dpkg", "--purge", "tierfs")
	if installed() {
		t.Error("dpkg still knows tierfs after --purge")
	}
	for _, f := range files {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			t.Errorf("after dpkg --purge: %s: %v, want gone", f, err)
		}
	}
	if _, err := os.Lstat("/etc/tierfs"); !os.IsNotExist(err) {
		t.Errorf("after dpkg --purge: /etc/tierfs: %v, want gone", err)
	}
}

// `make demo` installs what the demo needs, not the benchmarks' mergerfs
// and xfsprogs; `make test` still installs them, as the benchmark kit's
// own tests in `unit` need them (issue 18, item 8).
func TestDemoDepsLeaveBenchmarkPackages(t *testing.T) {
	testenv.Require(t, lookPath("make"), "make is needed")
	dry := func(target string) string {
		out, err := exec.Command("make", "--no-print-directory", "-n", "-C", root(t), target).CombinedOutput()
		if err != nil {
			t.Fatalf("make -n %s: %v\n%s", target, err, out)
		}
		return string(out)
	}
	// deps is what `make test` runs first.
	mk, err := os.ReadFile(filepath.Join(root(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(mk, []byte("\ntest: deps\n")) {
		t.Fatal("the Makefile's test target no longer starts with deps")
	}
	demo, test := dry("demo"), dry("deps")
	for _, pkg := range []string{"mergerfs:mergerfs", "mkfs.xfs:xfsprogs"} {
		if strings.Contains(demo, pkg) {
			t.Errorf("make demo would install %s", pkg)
		}
		if !strings.Contains(test, pkg) {
			t.Errorf("make test would not install %s", pkg)
		}
	}
	if !strings.Contains(demo, "fusermount3:fuse3") {
		t.Errorf("make demo would not install fuse3:\n%s", demo)
	}
}
