package admin

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/ratelimit"
	"github.com/tollgate-edge/tollgate/reason"
)

// ProblemTypeRateLimited: more requests per second than
// server.admin_requests_per_second, with this token (or, without a valid
// one, from this address). Retry-After says when to come back.
const ProblemTypeRateLimited = "urn:tollgate:problem:rate-limited"

// adminRateTable is the number of admin buckets: the token's, and one per
// address sending no valid token. An address evicting the token's bucket
// gives it a full one again, so strangers cannot use up its budget.
const adminRateTable = ratelimit.MinSize

// rates is the admin API's request-rate limit, per bearer token (by its
// SHA-256) and, for requests without a valid token, per client address.
type rates struct {
	table   *ratelimit.Table
	keys    ratelimit.Keys
	rps     int
	refusal ratelimit.Refusal
	refused prometheus.Counter
}

// newRates is nil when the limit is off (RequestsPerSecond -1).
func newRates(cfg Config, reg prometheus.Registerer) *rates {
	if cfg.RequestsPerSecond < 0 {
		return nil
	}
	rps := float64(cfg.RequestsPerSecond)
	return &rates{
		table:   ratelimit.NewTable(adminRateTable, rps, cfg.Burst),
		keys:    ratelimit.NewKeys(),
		rps:     cfg.RequestsPerSecond,
		refusal: ratelimit.NewRefusal(ratelimit.KindAdmin, rps),
		refused: ratelimit.Refused(reg, ratelimit.KindAdmin),
	}
}

// allow takes a token for r, keyed by sum (the SHA-256 of its valid token)
// when valid, else by its address; false when r was answered 429.
func (l *rates) allow(w http.ResponseWriter, r *http.Request, valid bool, sum *[sha256.Size]byte) bool {
	if l == nil {
		return true
	}
	var key uint64
	if valid {
		key = l.keys.Bytes(sum[:])
	} else {
		key = l.keys.Addr(1, remoteAddr(r))
	}
	if l.table.Allow(key, time.Now()) {
		return true
	}
	l.refused.Inc()
	h := w.Header()
	h.Set(ratelimit.HeaderPolicy, string(l.refusal.Policy))
	h.Set(ratelimit.HeaderState, string(l.refusal.State))
	writeRateLimited(w, string(l.refusal.RetryAfter),
		fmt.Sprintf("more than %d requests per second (server.admin_requests_per_second); retry after %s s", l.rps, l.refusal.RetryAfter))
	return false
}

// writeRateLimited answers 429 RATE_LIMITED with Retry-After (whole
// seconds) and detail.
func writeRateLimited(w http.ResponseWriter, retryAfter, detail string) {
	w.Header().Set(ratelimit.HeaderRetryAfter, retryAfter)
	writeProblem(w, &Problem{Type: ProblemTypeRateLimited, Code: reason.RateLimited, Title: "Too many requests",
		Status: http.StatusTooManyRequests, Detail: detail})
}

// remoteAddr is r's client address; the zero address (one key for all)
// when RemoteAddr is not host:port.
func remoteAddr(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}
