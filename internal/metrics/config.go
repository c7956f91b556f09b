package metrics

import (
	"errors"
	"net"
	"strconv"

	"github.com/tierfs/tierfs/internal/units"
)

// Config is the [metrics] table.
type Config struct {
	// Listen is the TCP address the Prometheus endpoint listens on
	// (HOST:PORT, served at /metrics); "" turns it off. The default is
	// the loopback only: the figures name topics.
	Listen string `toml:"listen"`
	// MaxTopics bounds the topics that get series of their own; the
	// others count under topic "other", so that a cluster with thousands
	// of topics does not flood the time-series database.
	MaxTopics int `toml:"max_topics"`
}

// DefaultListen is where the endpoint listens unless told otherwise.
const DefaultListen = "127.0.0.1:9571"

// DefaultConfig is the [metrics] table's defaults.
func DefaultConfig() Config { return Config{Listen: DefaultListen, MaxTopics: 100} }

// Validate checks the address and the topic bound; each error is a
// *units.KeyError naming its key.
func (c Config) Validate() error {
	var errs []error
	if c.Listen != "" {
		host, port, err := net.SplitHostPort(c.Listen)
		switch {
		case err != nil:
			errs = append(errs, units.Errorf("metrics.listen", "%q is not HOST:PORT (e.g. %q; \"\" turns the endpoint off)", c.Listen, DefaultListen))
		case !validPort(port):
			errs = append(errs, units.Errorf("metrics.listen", "port %q is not a number from 0 to 65535", port))
		case host != "" && net.ParseIP(host) == nil && !validHost(host):
			errs = append(errs, units.Errorf("metrics.listen", "host %q is neither an IP address nor a host name", host))
		}
	}
	if c.MaxTopics < 0 {
		errs = append(errs, units.Errorf("metrics.max_topics", "must be 0 or more, got %d", c.MaxTopics))
	}
	return errors.Join(errs...)
}

func validPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n <= 65535
}

// validHost accepts a DNS name (letters, digits, hyphens and dots).
func validHost(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}
