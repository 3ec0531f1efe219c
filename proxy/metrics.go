package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/tollgate-edge/tollgate/sites/content"
)

// Site kinds, as metric label values. The set is fixed so series stay bounded.
const (
	kindNone     = iota // no site: bad request or unknown host
	kindDir             // a local directory
	kindUpstream        // a reverse-proxied tenant instance
	kindGitea           // a Gitea repository (pages)
	numKinds
)

var kindNames = [numKinds]string{"none", "dir", "upstream", "gitea"}

var classNames = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// metrics holds pre-resolved series so the request path never looks a label up.
type metrics struct {
	requests [numKinds][6]prometheus.Counter
	bytes    [numKinds]prometheus.Counter
	duration [numKinds]prometheus.Observer
	upErrors [2]prometheus.Counter // unavailable, timeout

	handshakes        [3]prometheus.Counter // h2, http/1.1, acme-tls/1
	handshakeFailures prometheus.Counter
	h2Requests        prometheus.Counter
	rateLimited       [numRateKinds]prometheus.Counter // requests refused 429 by a rate limit (ratelimit.go)

	listeners listenerVecs
}

// listenerMetrics are the series of one public listener (listener.go).
type listenerMetrics struct {
	acceptErrors prometheus.Counter
	refused      [numRefusals]prometheus.Counter
	evicted      prometheus.Counter
	open         prometheus.Gauge
	limit        prometheus.Gauge
}

// listenerVecs hold the public listeners' series; the listener label is
// "http" or "https".
type listenerVecs struct {
	acceptErrors, refused, evicted *prometheus.CounterVec
	open, limit                    *prometheus.GaugeVec
}

func newListenerVecs(f promauto.Factory) listenerVecs {
	return listenerVecs{
		acceptErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_proxy_accept_errors_total",
			Help: "Failed accepts on a public listener (out of file descriptors, for one), each retried after a back-off.",
		}, []string{"listener"}),
		refused: f.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_proxy_connections_refused_total",
			Help: "Connections a public listener closed at once, by reason (per_ip: limits.max_conns_per_ip; capacity: limits.concurrency reached and every connection in use).",
		}, []string{"listener", "reason"}),
		evicted: f.NewCounterVec(prometheus.CounterOpts{
			Name: "tollgate_proxy_connections_evicted_total",
			Help: "Open connections that had not sent a byte, closed by a full public listener to take a new one.",
		}, []string{"listener"}),
		open: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tollgate_proxy_connections",
			Help: "Connections open on a public listener.",
		}, []string{"listener"}),
		limit: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tollgate_proxy_connections_limit",
			Help: "Connections a public listener holds at most: below limits.concurrency, and at most a quarter of the file-descriptor limit.",
		}, []string{"listener"}),
	}
}

// listener returns the series of the public listener name.
func (m *metrics) listener(name string) listenerMetrics {
	v := m.listeners
	lm := listenerMetrics{
		acceptErrors: v.acceptErrors.WithLabelValues(name),
		evicted:      v.evicted.WithLabelValues(name),
		open:         v.open.WithLabelValues(name),
		limit:        v.limit.WithLabelValues(name),
	}
	for r := range numRefusals {
		lm.refused[r] = v.refused.WithLabelValues(name, refusalNames[r])
	}
	return lm
}

// handshake counts a completed TLS handshake by its ALPN protocol (none
// negotiated counts as http/1.1).
func (m *metrics) handshake(proto string) {
	switch proto {
	case "h2":
		m.handshakes[0].Inc()
	case "acme-tls/1":
		m.handshakes[2].Inc()
	default:
		m.handshakes[1].Inc()
	}
}

func newMetrics(reg prometheus.Registerer, cache *content.Cache) *metrics {
	f := promauto.With(reg)
	req := f.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_http_requests_total",
		Help: "Requests answered on the public listener, by site kind and status class.",
	}, []string{"kind", "class"})
	bytes := f.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_http_response_body_bytes_total",
		Help: "Response body bytes of known length sent on the public listener, by site kind (streams of unknown length are counted by the meter).",
	}, []string{"kind"})
	dur := f.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tollgate_http_request_duration_seconds",
		Help:    "Time from routing to the response being ready to write (streamed bodies excluded), by site kind.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"kind"})
	up := f.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_upstream_errors_total",
		Help: "Upstream requests that failed, by reason (unavailable: 502, timeout: 504).",
	}, []string{"reason"})
	m := &metrics{listeners: newListenerVecs(f), rateLimited: newRateMetrics(reg)}
	for k := range numKinds {
		for c := range classNames {
			m.requests[k][c] = req.WithLabelValues(kindNames[k], classNames[c])
		}
		m.bytes[k] = bytes.WithLabelValues(kindNames[k])
		m.duration[k] = dur.WithLabelValues(kindNames[k])
	}
	m.upErrors[0] = up.WithLabelValues("unavailable")
	m.upErrors[1] = up.WithLabelValues("timeout")
	hs := f.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_tls_handshakes_total",
		Help: "Completed TLS handshakes on the public listener, by negotiated protocol.",
	}, []string{"protocol"})
	for i, proto := range []string{"h2", "http/1.1", "acme-tls/1"} {
		m.handshakes[i] = hs.WithLabelValues(proto)
	}
	m.handshakeFailures = f.NewCounter(prometheus.CounterOpts{
		Name: "tollgate_tls_handshake_failures_total",
		Help: "TLS handshakes that failed: names tollgate does not serve, no SNI, protocol errors.",
	})
	m.h2Requests = f.NewCounter(prometheus.CounterOpts{
		Name: "tollgate_http2_requests_total",
		Help: "Requests (streams) served over HTTP/2; they are also in tollgate_http_requests_total.",
	})

	stat := func(pick func(content.Stats) int64) func() float64 {
		return func() float64 { return float64(pick(cache.Stats())) }
	}
	f.NewCounterFunc(prometheus.CounterOpts{Name: "tollgate_cache_hits_total", Help: "Content cache hits."},
		stat(func(s content.Stats) int64 { return s.Hits }))
	f.NewCounterFunc(prometheus.CounterOpts{Name: "tollgate_cache_misses_total", Help: "Content cache misses (a source was read)."},
		stat(func(s content.Stats) int64 { return s.Misses }))
	f.NewCounterFunc(prometheus.CounterOpts{Name: "tollgate_cache_evictions_total", Help: "Content cache entries evicted to stay within sites.cache_bytes."},
		stat(func(s content.Stats) int64 { return s.Evictions }))
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "tollgate_cache_bytes", Help: "Bytes held by the content cache."},
		stat(func(s content.Stats) int64 { return s.Bytes }))
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "tollgate_cache_entries", Help: "Entries held by the content cache."},
		stat(func(s content.Stats) int64 { return s.Entries }))
	return m
}

func statusClass(code int) int {
	if c := code / 100; c >= 1 && c <= 5 {
		return c
	}
	return 0
}
