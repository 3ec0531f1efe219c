package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/tollgate-edge/tollgate/acme"
	"github.com/tollgate-edge/tollgate/admin"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/console"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/proxy"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// Config is the whole configuration file. Each section belongs to the package
// that uses it; [server] and [log] belong to the binary.
type Config struct {
	Server  ServerConfig   `toml:"server"`
	Log     LogConfig      `toml:"log"`
	Store   store.Config   `toml:"store"`
	Limits  proxy.Limits   `toml:"limits"`
	Proxy   proxy.Config   `toml:"proxy"`
	Sites   sites.Config   `toml:"sites"`
	Meter   meter.Config   `toml:"meter"`
	Billing billing.Config `toml:"billing"`
	ACME    acme.Config    `toml:"acme"`
	// Console is the tenant console, served at /console/ on [server] api.
	Console console.Config `toml:"console"`
}

// ServerConfig is the [server] section: listeners and the operator's token.
type ServerConfig struct {
	// HTTP is the public plain-HTTP listener, host:port. Default ":8080".
	// With HTTPS on, it answers ACME HTTP-01 challenges and redirects every
	// other request for a served host to HTTPS (308); put it on port 80 then.
	HTTP string `toml:"http"`
	// HTTPS is the public TLS listener, host:port (":443" in production).
	// Certificates come on demand from the [acme] CA, for the names tollgate
	// routes; h2 and http/1.1 are offered. Default "": no TLS.
	HTTPS string `toml:"https"`
	// HTTPSPublicPort is the port visitors reach HTTPS on, used in the
	// HTTP→HTTPS redirects, when it differs from the listener's (a
	// container publishing -p 443:8443). Default 0: the listener's port.
	HTTPSPublicPort int `toml:"https_public_port"`
	// Admin is the operator API listener (admin API, /metrics, /healthz,
	// /readyz). Keep it on loopback or a private network. Default
	// "127.0.0.1:9180".
	Admin string `toml:"admin"`
	// API is the tenant API listener, host:port (e.g. "0.0.0.0:9443"):
	// the /v1 routes an org token may use, confined to its org, and the
	// public plan catalog (GET /v1/plans), safe to expose publicly. The
	// admin token is refused there; operators use the admin listener,
	// which serves org tokens too. Default "": off.
	API string `toml:"api"`
	// APITLS serves the API listener over TLS, with certificates from the
	// same manager as the public HTTPS listener (so it needs server.https
	// and server.api_host). Default false: plain HTTP, for a listener
	// behind a TLS-terminating load balancer, or on loopback.
	APITLS bool `toml:"api_tls"`
	// APIHost is the hostname tenants reach the API at; with api_tls it
	// gets a certificate like tollgate's own names (the Stripe webhook
	// host). Default "".
	APIHost string `toml:"api_host"`
	// AdminToken is the bearer token of the admin API, at least 16 characters.
	// Give it as "env:NAME" or "file:PATH" to keep it out of the file; the
	// environment variable TOLLGATE_ADMIN_TOKEN overrides it. Required.
	AdminToken string `toml:"admin_token"`
	// AdminMaxBodyBytes bounds an admin API request body; larger ones get 413.
	// Default 1 MiB.
	AdminMaxBodyBytes int64 `toml:"admin_max_body_bytes"`
	// AdminRequestsPerSecond caps the admin API's /v1 requests per second
	// per bearer token, and per client address for requests without a
	// valid token (so strangers cannot use up the token's budget); past it
	// 429 with Retry-After and the RateLimit fields. /healthz, /readyz,
	// /metrics and /hooks/gitea are not limited. `tollgate admin` waits
	// and retries when told to. Default 50; -1: off.
	AdminRequestsPerSecond int `toml:"admin_requests_per_second"`
	// AdminBurst is the admin requests a token (or address) may send at
	// once after a quiet while. Default twice admin_requests_per_second.
	AdminBurst int `toml:"admin_burst"`
	// ShutdownTimeout bounds how long in-flight requests may finish after
	// SIGTERM or SIGINT. Default 30s.
	ShutdownTimeout time.Duration `toml:"shutdown_timeout"`
	// GCPercent is the Go garbage collector's target (GOGC): a collection
	// starts when the heap has grown by this percentage of what the last
	// one kept. tollgate keeps certificates, routes and small files in
	// memory, so it holds about 1 + gc_percent/100 times them; lower holds
	// less, for more collector CPU on the paths that allocate (TLS
	// handshakes above all), and a node of a million sites collects its
	// gigabyte of registry twice as often as at 100 (a follower just started
	// then applied another node's writes in 73 ms at p50 instead of 16).
	// The GOGC environment variable, when set, wins. Default 50 (Go's own
	// default is 100).
	GCPercent int `toml:"gc_percent"`
}

// defaultGCPercent is server.gc_percent's default.
const defaultGCPercent = 50

// applyGCPercent sets the collector's target from server.gc_percent, unless
// the GOGC environment variable set it.
func (s ServerConfig) applyGCPercent() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(s.GCPercent)
	}
}

// adminConfig is the admin API's part of [server].
func (s ServerConfig) adminConfig() admin.Config {
	return admin.Config{Token: s.AdminToken, MaxBodyBytes: s.AdminMaxBodyBytes,
		RequestsPerSecond: s.AdminRequestsPerSecond, Burst: s.AdminBurst}
}

// validateAPI checks the keys of the tenant API listener.
func (s ServerConfig) validateAPI() error {
	var errs []error
	if s.API != "" {
		if _, _, err := net.SplitHostPort(s.API); err != nil {
			errs = append(errs, fmt.Errorf("server.api: %q is not host:port", s.API))
		}
	}
	if s.APITLS {
		if s.API == "" || s.HTTPS == "" {
			errs = append(errs, errors.New("server.api_tls: needs server.api and server.https (the certificates come from the HTTPS listener's manager)"))
		}
		if s.APIHost == "" {
			errs = append(errs, errors.New("server.api_tls: needs server.api_host, the name the certificate is for"))
		}
	}
	if s.APIHost != "" {
		if _, err := sites.NormalizeDomain(s.APIHost); err != nil {
			errs = append(errs, fmt.Errorf("server.api_host: %w", err))
		}
	}
	return errors.Join(errs...)
}

// LogConfig is the [log] section.
type LogConfig struct {
	// Level is debug, info, warn or error. Default info.
	Level string `toml:"level"`
	// Format is "text" (logfmt-like) or "json". Default text.
	Format string `toml:"format"`
}

// Defaults fills unset fields of every section.
func (c *Config) Defaults() {
	if c.Server.HTTP == "" {
		c.Server.HTTP = ":8080"
	}
	if c.Server.Admin == "" {
		c.Server.Admin = "127.0.0.1:9180"
	}
	if c.Server.AdminMaxBodyBytes == 0 {
		c.Server.AdminMaxBodyBytes = admin.DefaultMaxBodyBytes
	}
	if c.Server.AdminRequestsPerSecond == 0 {
		c.Server.AdminRequestsPerSecond = admin.DefaultRequestsPerSecond
	}
	if c.Server.AdminBurst == 0 {
		c.Server.AdminBurst = 2 * c.Server.AdminRequestsPerSecond
	}
	if c.Server.ShutdownTimeout == 0 {
		c.Server.ShutdownTimeout = 30 * time.Second
	}
	if c.Server.GCPercent == 0 {
		c.Server.GCPercent = defaultGCPercent
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	c.Store.Defaults()
	c.Limits.Defaults()
	c.Proxy.Defaults()
	c.Sites.Defaults()
	c.Meter.Defaults()
	c.Billing.Defaults()
	c.ACME.Defaults()
	c.Console.Defaults()
}

// Validate names every bad key of the file.
func (c Config) Validate() error {
	var errs []error
	for key, addr := range map[string]string{"server.http": c.Server.HTTP, "server.admin": c.Server.Admin} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port", key, addr))
		}
	}
	if c.Server.HTTPS != "" {
		if _, _, err := net.SplitHostPort(c.Server.HTTPS); err != nil {
			errs = append(errs, fmt.Errorf("server.https: %q is not host:port", c.Server.HTTPS))
		}
		errs = append(errs, c.ACME.Validate())
	}
	errs = append(errs, c.Server.validateAPI())
	if c.Server.HTTPSPublicPort < 0 || c.Server.HTTPSPublicPort > 65535 {
		errs = append(errs, fmt.Errorf("server.https_public_port: %d is not a port", c.Server.HTTPSPublicPort))
	}
	errs = append(errs, c.Server.adminConfig().Validate())
	if c.Server.ShutdownTimeout < 0 {
		errs = append(errs, errors.New("server.shutdown_timeout: must not be negative"))
	}
	if c.Server.GCPercent < 0 {
		errs = append(errs, fmt.Errorf("server.gc_percent: %d must be positive", c.Server.GCPercent))
	}
	if _, err := c.Log.level(); err != nil {
		errs = append(errs, err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format: %q must be \"text\" or \"json\"", c.Log.Format))
	}
	errs = append(errs, c.Store.Validate(), c.Limits.Validate(), c.Proxy.Validate(), c.Sites.Validate(), c.Meter.Validate(), c.Billing.Validate(),
		c.Console.Validate())
	return errors.Join(errs...)
}

// pagesConfig is where the proxy's error pages come from.
func (c Config) pagesConfig() proxy.PagesConfig {
	return proxy.PagesConfig{Dir: c.Proxy.ErrorPages, RenewalURL: c.Billing.RenewalURL}
}

func (l LogConfig) level() (slog.Level, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		return 0, fmt.Errorf("log.level: %q must be debug, info, warn or error", l.Level)
	}
	return lv, nil
}

// LoadConfig reads a TOML file, resolves secrets, applies defaults and the
// environment, and validates. Unknown keys are errors, so a typo never passes
// silently.
func LoadConfig(path string) (Config, error) {
	var c Config
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	var errs []error
	for _, k := range md.Undecoded() {
		errs = append(errs, fmt.Errorf("%s: unknown key", k))
	}
	if tok := os.Getenv("TOLLGATE_ADMIN_TOKEN"); tok != "" {
		c.Server.AdminToken = tok
	} else if tok, err := resolveSecret(c.Server.AdminToken); err != nil {
		errs = append(errs, fmt.Errorf("server.admin_token: %w", err))
	} else {
		c.Server.AdminToken = tok
	}
	for _, sec := range []struct {
		key string
		v   *string
	}{{"store.redis", &c.Store.Redis}, {"sites.gitea_token", &c.Sites.GiteaToken}, {"sites.gitea_webhook_secret", &c.Sites.GiteaWebhookSecret},
		{"billing.stripe.secret_key", &c.Billing.Stripe.SecretKey}, {"billing.stripe.webhook_secret", &c.Billing.Stripe.WebhookSecret}} {
		if *sec.v == "" {
			continue
		}
		if v, err := resolveSecret(*sec.v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sec.key, err))
			*sec.v = ""
		} else {
			*sec.v = v
		}
	}
	for i := range c.Billing.Hooks {
		if v, err := resolveSecret(c.Billing.Hooks[i].Secret); err != nil {
			errs = append(errs, fmt.Errorf("billing.hooks[%d].secret: %w", i, err))
		} else {
			c.Billing.Hooks[i].Secret = v
		}
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := proxy.LoadErrorPages(c.pagesConfig()); err != nil {
		errs = append(errs, err) // each template renders with sample data
	}
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("%s: invalid configuration:\n%w", path, err)
	}
	return c, nil
}

// resolveSecret reads "env:NAME" from the environment and "file:PATH" from a
// file (one trailing newline dropped); anything else is the secret itself.
func resolveSecret(v string) (string, error) {
	switch {
	case strings.HasPrefix(v, "env:"):
		name := strings.TrimPrefix(v, "env:")
		s, ok := os.LookupEnv(name)
		if !ok || s == "" {
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		return s, nil
	case strings.HasPrefix(v, "file:"):
		b, err := os.ReadFile(strings.TrimPrefix(v, "file:"))
		if err != nil {
			return "", err
		}
		return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), nil
	}
	return v, nil
}
