package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// The header fields of a refusal. RateLimit and RateLimit-Policy are those
// of draft-ietf-httpapi-ratelimit-headers (-08 and later): a List of
// items named by a String, RateLimit-Policy with the quota q per window w
// seconds, RateLimit with the remaining quota r and the seconds t until
// it is back.
const (
	HeaderRetryAfter = "Retry-After"
	HeaderPolicy     = "RateLimit-Policy"
	HeaderState      = "RateLimit"
)

// Refusal is the header values of a 429 for one limit, made once when the
// limit is set so the request path only copies bytes.
type Refusal struct {
	// RetryAfter is whole seconds, the longest wait for the next token.
	RetryAfter []byte
	// Policy is the RateLimit-Policy value: `"org";q=100;w=1`. A rate
	// below one per second is q=1 over the window that refills one token.
	Policy []byte
	// State is the RateLimit value when refused: `"org";r=0;t=1`.
	State []byte
}

// NewRefusal builds the values of a limit named name (a policy identifier:
// "org", "ip", "admin") of rps requests per second.
func NewRefusal(name string, rps float64) Refusal {
	wait := RetryAfter(rps)
	q, w := int(math.Floor(rps)), 1
	if rps < 1 {
		q, w = 1, wait
	}
	return Refusal{
		RetryAfter: strconv.AppendInt(nil, int64(wait), 10),
		Policy:     fmt.Appendf(nil, "%q;q=%d;w=%d", name, q, w),
		State:      fmt.Appendf(nil, "%q;r=0;t=%d", name, wait),
	}
}

// Kinds of limits, as the kind label of the refused-requests counter.
const (
	KindOrg   = "org"   // a plan's requests_per_second
	KindIP    = "ip"    // limits.per_ip_rps, per site and client address
	KindAdmin = "admin" // server.admin_requests_per_second, per token or address
)

// Refused returns the counter of requests refused by limits of kind,
// tollgate_ratelimit_refused_requests_total{kind}. The proxy and the admin
// API share the series' family on the process's registry: the first call
// registers it, later ones reuse it.
func Refused(reg prometheus.Registerer, kind string) prometheus.Counter {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tollgate_ratelimit_refused_requests_total",
		Help: "Requests answered 429 by a request-rate limit, by kind (org: a plan's requests_per_second; ip: limits.per_ip_rps; admin: server.admin_requests_per_second).",
	}, []string{"kind"})
	if err := reg.Register(v); err != nil {
		var dup prometheus.AlreadyRegisteredError
		if !errors.As(err, &dup) {
			panic(err)
		}
		v = dup.ExistingCollector.(*prometheus.CounterVec)
	}
	return v.WithLabelValues(kind)
}
