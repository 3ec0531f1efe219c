package proxy

import (
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/ratelimit"
	"github.com/tollgate-edge/tollgate/reason"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/valyala/fasthttp"
	"golang.org/x/time/rate"
)

// Request-rate limits of the enforce step, checked in this order:
//
//   - per client: limits.per_ip_rps per site and client address (clientKey's
//     address; behind proxy.trusted_proxies the nearest untrusted address
//     of X-Forwarded-For), in a ratelimit.Table of limits.per_ip_table
//     buckets;
//   - per org: the plan's requests_per_second, one token bucket per org on
//     this node holding its share (limits.cluster_nodes), burst one
//     second's worth.
//
// A refused request is answered 429 with Retry-After, RateLimit-Policy,
// RateLimit and Tollgate-Reason: RATE_LIMITED; it is nobody's usage and
// reaches no upstream. Tollgate's own answers (internal endpoints,
// redirects, challenges) are never limited.

// Rate-limit kinds, as indexes of metrics.rateLimited.
const (
	rateIP = iota
	rateOrg
	numRateKinds
)

// clientRates is the per-client limit; nil when limits.per_ip_rps is off.
type clientRates struct {
	table   *ratelimit.Table
	keys    ratelimit.Keys
	refusal ratelimit.Refusal
}

func newClientRates(l Limits, keys ratelimit.Keys) *clientRates {
	if l.PerIPRPS <= 0 {
		return nil
	}
	return &clientRates{
		table:   ratelimit.NewTable(l.PerIPTable, float64(l.PerIPRPS), l.PerIPBurst),
		keys:    keys,
		refusal: ratelimit.NewRefusal(ratelimit.KindIP, float64(l.PerIPRPS)),
	}
}

// orgRates holds each org's request-rate bucket on this node, for the orgs
// this node has routed. It is read through the routes and pages owners that
// hold an *orgRate; the map is touched only when they are built and when
// plans or orgs change.
type orgRates struct {
	nodes float64 // limits.cluster_nodes
	mu    sync.Mutex
	m     map[string]*orgRate
}

// orgRate is one org's limit; a nil limit is no cap.
type orgRate struct{ limit atomic.Pointer[orgLimit] }

// orgLimit is an org's bucket at one rate; a new rate gets a new one.
type orgLimit struct {
	rps     float64 // this node's share of the plan's requests_per_second
	lim     *rate.Limiter
	refusal ratelimit.Refusal
}

// get returns org's limit, made on first use, at the rate of its plan in s.
func (o *orgRates) get(s *sites.Snapshot, org string) *orgRate {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.m[org]
	if r == nil {
		r = &orgRate{}
		o.m[org] = r
	}
	o.setLocked(s, org, r)
	return r
}

// update follows s for the orgs named (all when every is set): a new plan
// or plan rate takes effect at once, a deleted org's bucket is dropped.
func (o *orgRates) update(s *sites.Snapshot, orgs []string, every bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if every {
		for id, r := range o.m {
			o.setLocked(s, id, r)
		}
		return
	}
	for _, id := range orgs {
		if r := o.m[id]; r != nil {
			o.setLocked(s, id, r)
		}
	}
}

func (o *orgRates) setLocked(s *sites.Snapshot, id string, r *orgRate) {
	org := s.Orgs.Get(id)
	if org == nil {
		delete(o.m, id)
		r.limit.Store(nil)
		return
	}
	var perSecond int64
	if plan := s.Plans.Get(org.Plan); plan != nil {
		perSecond = plan.RequestsPerSecond
	}
	r.set(float64(perSecond) / o.nodes)
}

// set changes the rate (0: no cap); the bucket is kept while it is the same.
func (r *orgRate) set(rps float64) {
	if rps <= 0 {
		r.limit.Store(nil)
		return
	}
	if l := r.limit.Load(); l != nil && l.rps == rps {
		return
	}
	burst := max(1, int(math.Ceil(rps)))
	r.limit.Store(&orgLimit{rps: rps, lim: rate.NewLimiter(rate.Limit(rps), burst),
		refusal: ratelimit.NewRefusal(ratelimit.KindOrg, rps)})
}

// allowRate applies the request-rate limits to a request for a tenant's
// content (t a site or pages repository, host its key): false when it was
// answered 429.
func (p *Proxy) allowRate(ctx *fasthttp.RequestCtx, t *target, host []byte, now time.Time) bool {
	if c := p.clientRates; c != nil && (t.to == toSite || t.to == toPages) {
		if addr, ok := p.clientAddr(ctx); ok {
			var scope uint64
			if t.site != nil {
				scope = t.site.rateScope
			} else {
				scope = c.keys.Bytes(host)
			}
			if !c.table.Allow(c.keys.Addr(scope, addr), now) {
				p.refuseRate(ctx, rateIP, &c.refusal)
				return false
			}
		}
	}
	if t.rate == nil {
		return true
	}
	if l := t.rate.limit.Load(); l != nil && !l.lim.AllowN(now, 1) {
		p.refuseRate(ctx, rateOrg, &l.refusal)
		return false
	}
	return true
}

// refuseRate answers 429 for the limit of kind whose values are r.
func (p *Proxy) refuseRate(ctx *fasthttp.RequestCtx, kind int, r *ratelimit.Refusal) {
	charge(ctx.Conn(), nil) // a refusal is nobody's usage
	h := &ctx.Response.Header
	h.SetCanonical(headerRetryAfter, r.RetryAfter)
	h.SetCanonical(headerRateLimitPolicy, r.Policy)
	h.SetCanonical(headerRateLimit, r.State)
	p.errPages.writeRefusal(ctx, fasthttp.StatusTooManyRequests, reasonRateLimited, "")
	p.metrics.rateLimited[kind].Inc()
}

var (
	headerRateLimitPolicy = []byte(ratelimit.HeaderPolicy)
	headerRateLimit       = []byte(ratelimit.HeaderState)
	reasonRateLimited     = []byte(reason.RateLimited)
)

// clientAddr is the address a per-client limit counts: clientKey's (an
// IPv4 address or an IPv6 /64). From a peer in proxy.trusted_proxies it is
// the nearest address of X-Forwarded-For that is not trusted itself (what
// the load balancer appended); false when there is none, and for peers
// that are not TCP addresses.
func (p *Proxy) clientAddr(ctx *fasthttp.RequestCtx) (netip.Addr, bool) {
	a, trusted := clientKey(ctx.RemoteAddr(), p.trusted)
	if !a.IsValid() {
		return a, false
	}
	if !trusted {
		return a, true
	}
	values := ctx.Request.Header.PeekAll(fasthttp.HeaderXForwardedFor)
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for len(v) > 0 {
			j := len(v) - 1
			for j >= 0 && v[j] != ',' {
				j--
			}
			if a, ok := forwardedAddr(v[j+1:], p.trusted); ok {
				return a, true
			}
			v = v[:max(j, 0)]
		}
	}
	return netip.Addr{}, false
}

// forwardedAddr parses one X-Forwarded-For element, reporting false for
// one that is no address or is trusted. It does not allocate.
func forwardedAddr(b []byte, trusted []netip.Prefix) (netip.Addr, bool) {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, false
	}
	// The string is parsed and dropped: ParseAddr keeps no part of it
	// (zones are interned copies).
	ip, err := netip.ParseAddr(unsafe.String(unsafe.SliceData(b), len(b)))
	if err != nil {
		return netip.Addr{}, false
	}
	key, isTrusted := addrKey(ip, trusted)
	return key, !isTrusted
}

func newRateMetrics(reg prometheus.Registerer) [numRateKinds]prometheus.Counter {
	return [numRateKinds]prometheus.Counter{
		rateIP:  ratelimit.Refused(reg, ratelimit.KindIP),
		rateOrg: ratelimit.Refused(reg, ratelimit.KindOrg),
	}
}
