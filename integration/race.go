//go:build race

package integration

// raceDetector: this package was built with -race, so TierfsBinary builds
// the daemon with -race too (TIERFS_KAFKA_RACE overrides).
const raceDetector = true
