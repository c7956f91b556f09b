// Package dist holds what ships tierfs to hosts: nfpm.yaml, from which
// `make deb` builds the Debian package, and the tests that build and
// install that package and verify the systemd units in examples/systemd.
package dist
