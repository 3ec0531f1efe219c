// Package access holds each org's current access decision (allow, throttle
// or block), which the request path reads with one atomic load.
//
// It is a leaf: the proxy imports it to read decisions, billing imports it
// to set them, and neither the registry nor Stripe is linked through it.
package access

import (
	"sync/atomic"

	"golang.org/x/time/rate"
)

// Decision is what the request path does with an org's requests.
type Decision int32

// Decisions. Allow and Throttle serve; every other one blocks (Blocks).
const (
	Allow          Decision = iota // serve
	Throttle                       // serve, at the org's throttle bandwidth on this node
	BlockQuota                     // 429: past the hard limit of the egress quota
	BlockExpired                   // 402: grace period over, sites paused
	BlockSuspended                 // 403: suspended by the operator
	BlockStorage                   // 429: over the storage quota for longer than [billing] storage_grace
)

var decisionNames = [...]string{"allow", "throttle", "block_quota", "block_expired", "block_suspended", "block_storage"}

// Blocks reports whether the decision answers the org's requests with a
// block page instead of content.
func (d Decision) Blocks() bool { return d >= BlockQuota }

func (d Decision) String() string {
	if int(d) < len(decisionNames) {
		return decisionNames[d]
	}
	return "unknown"
}

// Decisions lists every decision, Allow first (for metric labels).
func Decisions() []Decision {
	out := make([]Decision, len(decisionNames))
	for i := range out {
		out[i] = Decision(i)
	}
	return out
}

// Gate is one org's current decision, read by the request path with one
// atomic load and no allocation. The proxy keeps the *Gate of each route;
// billing updates it in place.
type Gate struct {
	d   atomic.Int32
	lim atomic.Pointer[rate.Limiter] // set while throttled
	ex  atomic.Pointer[Excluded]     // set while some of the org's sites are not in its plan
}

// Excluded is what of an org is not served because its plan does not
// include it (more sites or domains than the plan allows, past [billing]
// downgrade_grace). It is never modified once set on a Gate.
type Excluded struct {
	Sites   map[string]struct{} // site ids
	Domains map[string]struct{} // domain names (of sites that are served)
}

// Has reports whether the site, or the domain it is reached by, is
// excluded. It does not allocate.
func (e *Excluded) Has(site string, domain []byte) bool {
	if _, ok := e.Sites[site]; ok {
		return true
	}
	_, ok := e.Domains[string(domain)]
	return ok
}

// Excluded is what of the org its plan does not include; nil (nearly
// always): nothing.
func (g *Gate) Excluded() *Excluded { return g.ex.Load() }

// SetExcluded replaces what of the org is not served; nil or empty: none.
func (g *Gate) SetExcluded(e *Excluded) {
	if e != nil && len(e.Sites) == 0 && len(e.Domains) == 0 {
		e = nil
	}
	g.ex.Store(e)
}

// Decision is the org's current decision.
func (g *Gate) Decision() Decision { return Decision(g.d.Load()) }

// Limiter is the org's shared token bucket on this node while it is
// throttled (bytes per second), nil otherwise.
func (g *Gate) Limiter() *rate.Limiter { return g.lim.Load() }

// throttleBurst is the token bucket's size: writes are paced in pieces of at
// most this many bytes.
const throttleBurst = 16 << 10

// Set changes the decision; bps is the throttle bandwidth when d is
// Throttle. An existing limiter is kept when the rate is unchanged, so the
// bucket's state survives re-evaluation. Billing calls it (and tests).
func (g *Gate) Set(d Decision, bps int64) {
	if d == Throttle {
		if l := g.lim.Load(); l == nil || l.Limit() != rate.Limit(bps) {
			g.lim.Store(rate.NewLimiter(rate.Limit(bps), throttleBurst))
		}
	} else {
		g.lim.Store(nil)
	}
	g.d.Store(int32(d))
}
