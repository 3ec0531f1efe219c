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
	// 431. Over HTTP/2 it bounds the decoded header list (plus 32 bytes for
	// each of ten fields, as SETTINGS_MAX_HEADER_LIST_SIZE), and a header
	// block of more than twice it plus one frame closes the connection
	// (CONTINUATION flood). Default 16 KiB (nginx allows 4×8 KiB, Caddy
	// 1 MiB).
	MaxHeaderBytes int `toml:"max_header_bytes"`
	// MaxBodyBytes bounds a request body (only upstream sites accept one);
	// larger ones get 413. Bodies are streamed, never held in memory whole.
	// Default 64 MiB.
	MaxBodyBytes int `toml:"max_body_bytes"`
	// ReadTimeout bounds reading one request's headers, and over HTTP/2
	// the client's preface and first SETTINGS. Default 30s.
	ReadTimeout time.Duration `toml:"read_timeout"`
	// WriteTimeout bounds writing one response. Default 10m, so a slow client
	// can still download a large file.
	WriteTimeout time.Duration `toml:"write_timeout"`
	// IdleTimeout closes keep-alive connections idle this long, and HTTP/2
	// connections this long after their last stream (GOAWAY). Default 120s.
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
	// PerIPRPS caps the requests one client makes to one site each second
	// on this node: a token bucket per site and client (an IPv4 address or
	// an IPv6 /64, as max_conns_per_ip; from a peer in
	// proxy.trusted_proxies, the nearest untrusted address of
	// X-Forwarded-For), refilled at this rate up to per_ip_burst. Past it
	// the client gets 429 with Retry-After, RateLimit-Policy ("ip";q=N;w=1)
	// and RateLimit, while the site's other clients are served. Pages hosts
	// count per host. Each node counts the requests it serves. Default 0:
	// off.
	PerIPRPS int `toml:"per_ip_rps"`
	// PerIPBurst is the size of a per_ip_rps bucket: the requests a client
	// that was quiet may make at once (a page and its assets). Default
	// twice per_ip_rps.
	PerIPBurst int `toml:"per_ip_burst"`
	// PerIPTable is the number of per_ip_rps buckets (24 bytes each),
	// allocated at start and never more, however many addresses ask:
	// rounded up to a power of two, at least 512. A new client takes the
	// bucket of the one quiet the longest among eight, and an evicted
	// client starts again with a full bucket. Default 65536 (1.5 MiB).
	PerIPTable int `toml:"per_ip_table"`
	// ClusterNodes is how many nodes serve the same orgs (behind one load
	// balancer or DNS name). A plan's requests_per_second is enforced per
	// node, each node holding requests_per_second ÷ cluster_nodes (burst:
	// one second of that): exact when the load balancer spreads an org's
	// requests evenly, stricter when it does not (one node gets all of an
	// org's traffic: the org gets its share of one node). No request waits
	// on Redis. Default 1.
	ClusterNodes int `toml:"cluster_nodes"`

	// H2MaxStreams caps the HTTP/2 streams one connection has open at once
	// (SETTINGS_MAX_CONCURRENT_STREAMS); a stream past it is refused
	// (RST_STREAM REFUSED_STREAM). A stream reset by the client still counts
	// until its handler has returned, so resets do not buy more work
	// (CVE-2023-44487). Default 100, as nginx and Chromium expect.
	H2MaxStreams int `toml:"h2_max_streams"`
	// H2StreamWindow is the flow-control window of one HTTP/2 request body
	// (SETTINGS_INITIAL_WINDOW_SIZE): what a client may send before the
	// upstream has read it. Default 256 KiB.
	H2StreamWindow int `toml:"h2_stream_window"`
	// H2ConnWindow is the flow-control window of one HTTP/2 connection over
	// all its request bodies, and so the request-body bytes one connection
	// can make the server hold (a stream's buffer is at most 32 KiB or four
	// times what it holds). Default 1 MiB.
	H2ConnWindow int `toml:"h2_conn_window"`
	// H2ConnBuffer caps the frames one HTTP/2 connection queues for
	// writing: past it they are written out (and the connection waits for
	// a client that does not read, up to write_timeout) before more are
	// made, so however far a client opens its flow-control windows, its
	// responses occupy at most this much plus one 16 KiB DATA frame and one
	// header block of memory. Cached files are sent from the cache's bytes,
	// and streamed bodies (upstreams, large files) are read only as the
	// windows take them: a stream waiting on a shut window holds its copy
	// buffer (4 KiB) and its upstream connection's buffers (20 KiB), bounded
	// per connection by h2_max_streams. Request bodies are bounded by
	// h2_conn_window, request headers by h2_max_streams × max_header_bytes.
	// Default 64 KiB.
	H2ConnBuffer int `toml:"h2_conn_buffer"`
	// H2Workers caps the HTTP/2 streams served off their connection's loop
	// over all connections: those that wait (upstream sites, Gitea, request
	// bodies, throttled orgs). Responses ready in memory are served on the
	// loop itself. A stream past it is refused (REFUSED_STREAM); browsers
	// retry. Default 16384.
	H2Workers int `toml:"h2_workers"`
	// H2MaxControlFrames caps the SETTINGS, PING, PRIORITY, WINDOW_UPDATE
	// and empty DATA frames one HTTP/2 connection may send per second;
	// past it the connection gets GOAWAY ENHANCE_YOUR_CALM and is closed
	// (SETTINGS, PING and empty-DATA floods). Default 1000.
	H2MaxControlFrames int `toml:"h2_max_control_frames"`
	// H2MaxResets caps the streams one HTTP/2 connection may reset
	// (RST_STREAM) per second; past it the connection gets GOAWAY
	// ENHANCE_YOUR_CALM and is closed (rapid reset, CVE-2023-44487).
	// Default 200.
	H2MaxResets int `toml:"h2_max_resets"`
	// H2StallTimeout closes an HTTP/2 connection whose responses have
	// waited this long for the client to open its flow-control window, so
	// a client that never reads pins no worker and no response longer.
	// Default 30s.
	H2StallTimeout time.Duration `toml:"h2_stall_timeout"`
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
	setDefault(&l.PerIPBurst, 2*l.PerIPRPS)
	setDefault(&l.PerIPTable, 64<<10)
	setDefault(&l.ClusterNodes, 1)
	setDefault(&l.H2MaxStreams, 100)
	setDefault(&l.H2StreamWindow, 256<<10)
	setDefault(&l.H2ConnWindow, 1<<20)
	setDefault(&l.H2ConnBuffer, 64<<10)
	setDefault(&l.H2Workers, 16384)
	setDefault(&l.H2MaxControlFrames, 1000)
	setDefault(&l.H2MaxResets, 200)
	setDefault(&l.H2StallTimeout, 30*time.Second)
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
	for key, d := range map[string]time.Duration{"read_timeout": l.ReadTimeout, "write_timeout": l.WriteTimeout, "idle_timeout": l.IdleTimeout, "h2_stall_timeout": l.H2StallTimeout} {
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
	errs = append(errs, l.validateRates()...)
	if l.H2MaxStreams < 1 || l.H2MaxStreams > 1<<16 {
		errs = append(errs, fmt.Errorf("limits.h2_max_streams: %d not in 1..65536", l.H2MaxStreams))
	}
	for key, w := range map[string]int{"h2_stream_window": l.H2StreamWindow, "h2_conn_window": l.H2ConnWindow} {
		if w < 65535 || w > 1<<30 {
			errs = append(errs, fmt.Errorf("limits.%s: %d not in 65535..1073741824", key, w))
		}
	}
	if l.H2ConnBuffer < 16<<10 || l.H2ConnBuffer > 16<<20 {
		errs = append(errs, fmt.Errorf("limits.h2_conn_buffer: %d not in 16384..16777216", l.H2ConnBuffer))
	}
	for key, n := range map[string]int{"h2_workers": l.H2Workers, "h2_max_control_frames": l.H2MaxControlFrames, "h2_max_resets": l.H2MaxResets} {
		if n < 1 {
			errs = append(errs, fmt.Errorf("limits.%s: must be at least 1", key))
		}
	}
	return errors.Join(errs...)
}

// validateRates names the bad request-rate keys.
func (l Limits) validateRates() []error {
	var errs []error
	if l.PerIPRPS < 0 || l.PerIPRPS > 1_000_000 {
		errs = append(errs, fmt.Errorf("limits.per_ip_rps: %d not in 0..1000000 (0: off)", l.PerIPRPS))
	}
	if l.PerIPRPS > 0 && (l.PerIPBurst < 1 || l.PerIPBurst > 2_000_000) {
		errs = append(errs, fmt.Errorf("limits.per_ip_burst: %d not in 1..2000000", l.PerIPBurst))
	}
	if l.PerIPTable < 512 || l.PerIPTable > 1<<24 {
		errs = append(errs, fmt.Errorf("limits.per_ip_table: %d not in 512..16777216", l.PerIPTable))
	}
	if l.ClusterNodes < 1 || l.ClusterNodes > 1000 {
		errs = append(errs, fmt.Errorf("limits.cluster_nodes: %d not in 1..1000", l.ClusterNodes))
	}
	return errs
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
	// ErrorPages is a directory of Go html/template files that replace the
	// built-in pages of errors and refusals: for a refusal the first there
	// is of CODE.html (its Tollgate-Reason code, e.g.
	// STORAGE_QUOTA_EXCEEDED.html), STATUS.html (402.html), 4xx.html or
	// 5xx.html, default.html, else the built-in page; for a plain error
	// (404, 502, …) the same without CODE.html. Variables: .Status,
	// .StatusText, .Reason, .Text (the built-in sentence), .Org and
	// .RenewalURL (README, "Error pages"; [billing] renewal_url). Pages are
	// rendered at start; one that shows .Org or .RenewalURL is rendered for
	// each org on its first refusal and kept (at most 512 such pages, about
	// 2 KiB each for the built-in one). Each file is a whole page of at most
	// 128 KiB rendered, without files of its own (inline CSS and images, or
	// absolute URLs). A file that does not parse, fails with sample data,
	// or whose name is no page's fails start-up and check-config, naming
	// the file; files not ending in .html are ignored. Default "": the
	// built-in pages.
	ErrorPages string `toml:"error_pages"`
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
