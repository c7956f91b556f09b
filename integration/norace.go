//go:build !race

package integration

// raceDetector: this package was built without -race (see race.go).
const raceDetector = false
