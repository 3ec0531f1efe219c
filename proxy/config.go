package proxy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Limits is the [limits] section: what one client may ask of the public listener.
// Requests past a limit get a short error page. Connections past a limit are
// closed: with a page on plain HTTP, without one on TLS (an answer would need
// a handshake) and when the connection never sent a byte.
type Limits struct {
	// MaxHeaderBytes bounds the request line plus headers; larger requests get
	// 431. Default 16 KiB (nginx allows 4×8 KiB, Caddy 1 MiB).
	MaxHeaderBytes int `toml:"max_header_bytes"`
	// MaxBodyBytes bounds a request body (only upstream sites accept one);
	// larger ones get 413. Bodies are streamed, never held in memory whole.
	// Default 64 MiB.
	MaxBodyBytes int `toml:"max_body_bytes"`
	// ReadTimeout bounds reading one request's headers. Default 30s.
	ReadTimeout time.Duration `toml:"read_timeout"`
	// WriteTimeout bounds writing one response. Default 10m, so a slow client
	// can still download a large file.
	WriteTimeout time.Duration `toml:"write_timeout"`
	// IdleTimeout closes keep-alive connections idle this long. Default 120s.
	IdleTimeout time.Duration `toml:"idle_timeout"`
	// MaxConnsPerIP caps the connections one client holds open on a public
	// listener: one IPv4 address, or one IPv6 /64 network. Past it a new
	// connection gets 429 on plain HTTP and is closed on TLS. Peers in
	// proxy.trusted_proxies are exempt (a load balancer carries many
	// clients). Default 1024: a browser holds one connection per site over
	// HTTP/2 and up to six over HTTP/1.1, so a few hundred people behind one
	// NAT fit, while one machine holds a small part of a listener's
	// capacity (see concurrency). -1 means no cap.
	MaxConnsPerIP int `toml:"max_conns_per_ip"`
	// Concurrency caps connections served at once over all clients. A public
	// listener holds at most 15/16 of it open (the rest is for connections
	// being closed) and at most a quarter of the process's file-descriptor
	// limit (RLIMIT_NOFILE), so upstream connections, files and the admin
	// listener always find a descriptor. A full listener closes its oldest
	// connection that has not sent a byte to take a new one; with none, the
	// new connection gets 503 on plain HTTP and is closed on TLS. Accept
	// errors (out of descriptors, for one) are retried after a back-off of
	// 5ms doubling to 1s. Default 262144.
	Concurrency int `toml:"concurrency"`
}

// Defaults fills unset fields.
func (l *Limits) Defaults() {
	setDefault(&l.MaxHeaderBytes, 16<<10)
	setDefault(&l.MaxBodyBytes, 64<<20)
	setDefault(&l.ReadTimeout, 30*time.Second)
	setDefault(&l.WriteTimeout, 10*time.Minute)
	setDefault(&l.IdleTimeout, 120*time.Second)
	setDefault(&l.MaxConnsPerIP, 1024)
	setDefault(&l.Concurrency, 256<<10)
}

// Validate names every bad key of [limits].
func (l Limits) Validate() error {
	var errs []error
	if l.MaxHeaderBytes < 1024 || l.MaxHeaderBytes > 1<<20 {
		errs = append(errs, fmt.Errorf("limits.max_header_bytes: %d not in 1024..1048576", l.MaxHeaderBytes))
	}
	if l.MaxBodyBytes < 0 {
		errs = append(errs, errors.New("limits.max_body_bytes: must not be negative"))
	}
	for key, d := range map[string]time.Duration{"read_timeout": l.ReadTimeout, "write_timeout": l.WriteTimeout, "idle_timeout": l.IdleTimeout} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("limits.%s: must not be negative", key))
		}
	}
	if l.MaxConnsPerIP < -1 {
		errs = append(errs, errors.New("limits.max_conns_per_ip: must be -1 (no cap) or more"))
	}
	if l.Concurrency < 0 {
		errs = append(errs, errors.New("limits.concurrency: must not be negative"))
	}
	return errors.Join(errs...)
}

// Config is the [proxy] section: how tollgate talks to clients and upstreams.
type Config struct {
	// TrustedProxies lists the addresses or CIDR ranges of load balancers in
	// front of tollgate. Only from these peers are X-Forwarded-For/-Proto/-Host
	// and Forwarded kept (and appended to); from anyone else they are replaced.
	// Default: none.
	TrustedProxies []string `toml:"trusted_proxies"`
	// UpstreamTimeout bounds waiting for an upstream's response headers; past
	// it the visitor gets 504. Default 60s.
	UpstreamTimeout time.Duration `toml:"upstream_timeout"`
	// UpstreamDialTimeout bounds connecting to an upstream; a failure gives 502.
	// Default 5s.
	UpstreamDialTimeout time.Duration `toml:"upstream_dial_timeout"`
	// UpstreamMaxConns caps pooled connections per upstream site. Default 512.
	UpstreamMaxConns int `toml:"upstream_max_conns"`
	// UpstreamIdleTimeout closes pooled upstream connections idle this long.
	// Default 4s: shorter than the keep-alive of common app servers (Node 5s,
	// gunicorn 2s is the exception), so a request with a body, which cannot be
	// retried, rarely meets a connection the upstream has just closed.
	UpstreamIdleTimeout time.Duration `toml:"upstream_idle_timeout"`
	// AccessLog writes one structured log line per request at Info level.
	// Default false (it costs about a microsecond per request).
	AccessLog bool `toml:"access_log"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	setDefault(&c.UpstreamTimeout, 60*time.Second)
	setDefault(&c.UpstreamDialTimeout, 5*time.Second)
	setDefault(&c.UpstreamMaxConns, 512)
	setDefault(&c.UpstreamIdleTimeout, 4*time.Second)
}

// Validate names every bad key of [proxy].
func (c Config) Validate() error {
	var errs []error
	if _, err := parsePrefixes(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	for key, d := range map[string]time.Duration{"upstream_timeout": c.UpstreamTimeout, "upstream_dial_timeout": c.UpstreamDialTimeout, "upstream_idle_timeout": c.UpstreamIdleTimeout} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("proxy.%s: must not be negative", key))
		}
	}
	if c.UpstreamMaxConns < 0 {
		errs = append(errs, errors.New("proxy.upstream_max_conns: must not be negative"))
	}
	return errors.Join(errs...)
}

// parsePrefixes reads "10.0.0.0/8" or "192.0.2.7" entries.
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("proxy.trusted_proxies: %q is neither an address nor a CIDR range", s))
			continue
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, errors.Join(errs...)
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}
