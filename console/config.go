package console

import (
	"errors"
	"fmt"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// Prefix is the path the console is mounted at; every page is under it
// and its cookie is scoped to it.
const Prefix = "/console/"

// Config is the console's settings.
type Config struct {
	// CNAMETarget is the hostname tenants point their domains at with a
	// CNAME record (the operator's edge name, e.g. "edge.example.net"): a
	// CNAME to it both routes a domain to tollgate and proves control of
	// it. "" (the default): the console shows only the TXT record that
	// proves control, and tenants route the domain as the operator tells
	// them.
	CNAMETarget string `toml:"cname_target"`
	// SessionTTL is how long a sign-in lasts before the tenant signs in
	// again; default 12h, at most 168h. A session also ends at its next
	// request once its token is revoked or expired.
	SessionTTL time.Duration `toml:"session_ttl"`
	// MaxSessions caps the sessions held in memory (a few hundred bytes
	// each); default 10000. Past it, a sign-in ends the session closest
	// to its expiry.
	MaxSessions int `toml:"max_sessions"`
}

// Defaults fills the zero fields.
func (c *Config) Defaults() {
	if c.SessionTTL == 0 {
		c.SessionTTL = 12 * time.Hour
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = 10000
	}
}

// Validate reports every bad field; it is pure and fast.
func (c Config) Validate() error {
	var errs []error
	if c.CNAMETarget != "" {
		if h, err := sites.NormalizeDomain(c.CNAMETarget); err != nil || h != c.CNAMETarget {
			errs = append(errs, fmt.Errorf("console.cname_target: %q must be a lower-case hostname", c.CNAMETarget))
		}
	}
	if c.SessionTTL < time.Minute || c.SessionTTL > 168*time.Hour {
		errs = append(errs, fmt.Errorf("console.session_ttl: %s not in 1m..168h", c.SessionTTL))
	}
	if c.MaxSessions < 1 {
		errs = append(errs, fmt.Errorf("console.max_sessions: %d must be at least 1", c.MaxSessions))
	}
	return errors.Join(errs...)
}
