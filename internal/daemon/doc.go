// Package daemon is the tierfs daemon: it opens the tiers, runs the
// policy engine over them (Adapter: tiering and the engine meet only
// here), serves the control socket, reloads the configuration on SIGHUP
// or request, and shuts everything down in order. `tierfs mount` and the
// tests that need a daemon use the same constructor.
package daemon
