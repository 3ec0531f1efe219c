// Package acme owns tollgate's certificates: it obtains them on demand from an
// ACME CA through certmagic, during the first TLS handshake for a name, but
// only for names tollgate would route (a verified custom domain, or the pages
// host of a Gitea owner that exists), within per-org and global issuance
// limits, and keeps them in the store in use (bbolt, or Redis for a cluster).
package acme

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/caddyserver/certmagic"
)

// Config is the [acme] section. It takes effect when [server] https is set.
type Config struct {
	// Email is the ACME account's contact address; the CA writes to it about
	// expiring certificates and policy changes. Optional, recommended.
	Email string `toml:"email"`
	// CA is the ACME directory URL. Default: Let's Encrypt production.
	CA string `toml:"ca"`
	// CARoot is a PEM file of the roots the CA's API is trusted with (a
	// private CA, or Pebble in tests). Default: the system roots.
	CARoot string `toml:"ca_root"`
	// OrgCertsPerDay caps new certificates per org in any 24 hours (renewals
	// are not counted: they are for names already proven). Default 20; a
	// negative value disables the cap.
	OrgCertsPerDay int `toml:"org_certs_per_day"`
	// CertsPerHour caps new certificates of this installation in any hour,
	// well below the CA's own limits (Let's Encrypt allows 300 new orders
	// per account per 3 hours). Default 100; a negative value disables it.
	CertsPerHour int `toml:"certs_per_hour"`
	// OwnerTTL is how long an existing Gitea owner is remembered by the
	// on-demand decision. Default 10m.
	OwnerTTL time.Duration `toml:"owner_ttl"`
	// NegativeTTL is how long a Gitea owner that does not exist (or could
	// not be looked up) is remembered, so repeated unknown SNI names cost no
	// look-up. Default 1m.
	NegativeTTL time.Duration `toml:"negative_ttl"`
	// FailureBackoff is how long a name whose certificate could not be
	// obtained is refused before the CA is asked again (a domain whose DNS
	// points elsewhere would otherwise cost an order per visitor). It doubles
	// with each consecutive failure, up to 6h, and resets on success.
	// Default 1m.
	FailureBackoff time.Duration `toml:"failure_backoff"`
	// WildcardCert and WildcardKey are PEM files of a certificate for
	// *.{pages_domain} (and usually pages_domain itself), obtained by the
	// operator (for example by DNS-01 with their DNS provider's tooling).
	// With it, pages hosts never need an on-demand certificate; without it,
	// each {owner}.{pages_domain} is issued on demand like a custom domain.
	// The files are read at start.
	WildcardCert string `toml:"wildcard_cert"`
	WildcardKey  string `toml:"wildcard_key"`
	// DisableHTTPChallenge and DisableTLSALPNChallenge turn off one of the
	// two challenge types (both are on: HTTP-01 is answered on [server]
	// http, TLS-ALPN-01 on [server] https).
	DisableHTTPChallenge    bool `toml:"disable_http_challenge"`
	DisableTLSALPNChallenge bool `toml:"disable_tls_alpn_challenge"`
}

// Defaults fills in unset fields.
func (c *Config) Defaults() {
	if c.CA == "" {
		c.CA = certmagic.LetsEncryptProductionCA
	}
	if c.OrgCertsPerDay == 0 {
		c.OrgCertsPerDay = 20
	}
	if c.CertsPerHour == 0 {
		c.CertsPerHour = 100
	}
	if c.OwnerTTL == 0 {
		c.OwnerTTL = 10 * time.Minute
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = time.Minute
	}
	if c.FailureBackoff == 0 {
		c.FailureBackoff = time.Minute
	}
}

// Validate checks the section after Defaults; it reads no files.
func (c Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.CA); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("acme.ca: %q is not an http(s) URL", c.CA))
	}
	if c.OwnerTTL < 0 {
		errs = append(errs, errors.New("acme.owner_ttl: must not be negative"))
	}
	if c.FailureBackoff < 0 {
		errs = append(errs, errors.New("acme.failure_backoff: must not be negative"))
	}
	if c.NegativeTTL < 0 {
		errs = append(errs, errors.New("acme.negative_ttl: must not be negative"))
	}
	if (c.WildcardCert == "") != (c.WildcardKey == "") {
		errs = append(errs, errors.New("acme.wildcard_cert and acme.wildcard_key: set both or neither"))
	}
	if c.DisableHTTPChallenge && c.DisableTLSALPNChallenge {
		errs = append(errs, errors.New("acme.disable_http_challenge and acme.disable_tls_alpn_challenge: at least one challenge type must stay on"))
	}
	return errors.Join(errs...)
}
