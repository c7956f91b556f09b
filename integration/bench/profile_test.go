package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// envProfile names a directory for CPU profiles of the judged tierfs
// daemon (TestKafkaThroughput): set, the daemon serves pprof
// (TIERFS_PPROF) and the measured runs are profiled back to back in
// windows, cpu-NNN.pb.gz, to merge with `go tool pprof`. Profiling costs
// the daemon a little CPU: a profiled run is for finding where the time
// goes, not for the report's figures.
const envProfile = "TIERFS_BENCH_PROFILE"

// freeAddr is a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startProfiles fetches CPU profiles of the daemon serving pprof at addr
// into dir, one window after another, until stop is called; stop waits
// for the window in flight to end and returns how many were written.
func startProfiles(t *testing.T, addr, dir string, window time.Duration) (stop func() int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		done    bool
		written int
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			mu.Lock()
			d := done
			mu.Unlock()
			if d {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), window+30*time.Second)
			err := fetchProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(window.Seconds())),
				filepath.Join(dir, fmt.Sprintf("cpu-%03d.pb.gz", i)))
			cancel()
			if err != nil {
				t.Logf("profile %d of the daemon at %s: %v", i, addr, err)
				return
			}
			mu.Lock()
			written++
			mu.Unlock()
		}
	}()
	return func() int {
		mu.Lock()
		done = true
		mu.Unlock()
		wg.Wait()
		return written
	}
}

// fetchProfile saves the body of GET url in path.
func fetchProfile(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
