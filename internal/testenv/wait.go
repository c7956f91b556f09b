package testenv

import (
	"os"
	"testing"
	"time"
)

// WaitTimeout bounds how long a test waits for what a daemon or the
// kernel does a moment later.
const WaitTimeout = 30 * time.Second

// Poll calls cond, often at first and then every 50 ms, until it returns
// true; after WaitTimeout the test fails, naming what and cond's last
// error. It is how a test waits for another process (a RELEASE after a
// close, a daemon that starts serving), never a sleep.
func Poll(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	wait := time.Millisecond
	for {
		ok, err := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (last error: %v)", WaitTimeout, what, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// WaitFor is Poll for a condition that has no error to tell.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Poll(t, what, func() (bool, error) { return cond(), nil })
}

// MkdirMode makes directory path with exactly mode, whatever the umask.
func MkdirMode(t testing.TB, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// WriteFileMode writes file path with exactly mode, whatever the umask.
func WriteFileMode(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
