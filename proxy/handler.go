package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/valyala/fasthttp"
)

// Handler is the whole request path of the public listeners; handle has
// its steps.
func (p *Proxy) Handler(ctx *fasthttp.RequestCtx) { p.handle(ctx, nil) }

// handle is the request path of every listener, the same steps, in order,
// for every kind of request (redirect is nil on the public listeners):
//
//  1. limits: header size and read timeouts were enforced by fasthttp while
//     reading (431, 408 via errorHandler); checkFraming rejects what a
//     strict HTTP/1.1 parser would not accept (400, 501, framing.go);
//     streamed bodies are bounded where they are read (413 from the
//     upstream proxy and internal endpoints; dir sites read none), and a
//     body nobody read is drained or closes the connection (finishBody);
//  2. route: Host (port stripped, case-insensitive) and path → a site, a
//     pages repository, an internal endpoint, or on the redirect listener
//     a redirect (route); else 400, 404, 421, or 502/503 when Gitea could
//     not be asked. A refused request is nobody's usage;
//  3. enforce: the request rates of the client and of the org (429,
//     ratelimit.go), then the org's state and billing's decision (403,
//     402, 429) for sites and pages owners with an org; tollgate's own
//     answers have none;
//  4. charge: the request is counted for its site or repository, and what
//     the connection writes from now on is its egress;
//  5. serve: from the site's directory, Gitea repository or upstream,
//     tollgate's own endpoint, or a redirect;
//  6. measure: status class, body bytes and latency by site kind; the bytes
//     written to the client are metered on the connection (metering.go).
func (p *Proxy) handle(ctx *fasthttp.RequestCtx, redirect *RedirectOptions) {
	start := requestTime(ctx)
	kind := kindNone
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic serving request", slog.Any("panic", r), slog.String("host", string(ctx.Host())))
			p.errPages.writeError(ctx, fasthttp.StatusInternalServerError)
		}
		finishBody(ctx)
		nextHead(ctx)
		p.measure(ctx, kind, start) // 6. measure
	}()

	if p.gates != nil {
		enforceWrites(ctx.Conn(), nil) // a keep-alive connection's previous request may have been paced
	}

	// 1. limits
	if status := checkFraming(ctx); status != 0 {
		charge(ctx.Conn(), nil)
		p.errPages.reject(ctx, status)
		return
	}

	// 2. route
	var buf [sites.MaxHostLen + 8]byte
	t, key, status := p.route(ctx, buf[:0], redirect)
	kind = t.kind
	if status != 0 {
		charge(ctx.Conn(), nil)
		if t.retryAfter != nil {
			ctx.Response.Header.SetBytesKV(headerRetryAfter, t.retryAfter)
		}
		p.errPages.writeRouteError(ctx, status)
		return
	}

	// 3. enforce: the client's and the org's request rates (a token bucket
	// each, 429 past them), then one atomic load of the org's decision; a
	// refused or blocked request is answered here (no upstream, no disk,
	// not metered), a throttled one is paced where it is written
	// (metering.go).
	if !p.allowRate(ctx, &t, key, start) || t.enforce && !p.enforce(ctx, &t, key) {
		return
	}

	// 4. charge
	p.chargeTarget(ctx, &t)

	// 5. serve
	switch t.to {
	case toSite:
		p.serveSite(ctx, t.site)
	case toPages:
		p.servePages(ctx, &t)
	case toSlash:
		redirectSlash(ctx)
	case toInternal:
		p.serveInternal(ctx, t.internal)
	case toRedirect:
		redirectHTTPS(ctx, key, redirect.HTTPSPort)
	case toChallenge:
		p.serveChallenge(ctx, redirect.Challenge)
	}
}

// requestTime is when the request arrived: fasthttp reads the clock for
// HTTP/1.1 requests, the h2 loop for each stream (h2Stream.start). The
// content cache decides from it whether a file must be checked again, so
// it is never zero (a zero time would keep a changed file stale forever).
func requestTime(ctx *fasthttp.RequestCtx) time.Time {
	if t := ctx.Time(); !t.IsZero() {
		return t
	}
	if st, ok := ctx.Conn().(*h2Stream); ok && !st.start.IsZero() {
		return st.start
	}
	return time.Now() // an Expect: 100-continue request answered before its body
}

// enforce applies the org's decision to this request: false when it was
// answered (blocked), with the block's code in Tollgate-Reason. Without
// billing (gate nil) only suspension and a deactivated site block. key is
// the request's normalized host.
func (p *Proxy) enforce(ctx *fasthttp.RequestCtx, t *target, key []byte) bool {
	gate := t.gate
	status, code := refusal(t.org, gate)
	if status == 0 && t.site != nil {
		status, code = siteRefusal(t.site, gate, key)
	}
	if status != 0 {
		charge(ctx.Conn(), nil) // block pages are nobody's usage
		if status == fasthttp.StatusTooManyRequests {
			ctx.Response.Header.SetBytesKV(headerRetryAfter, retryAfterQuota)
		}
		p.errPages.writeRefusal(ctx, status, code, orgID(t.org))
		return false
	}
	if gate != nil {
		// The response's writes follow the gate from now on: a throttle, an
		// upgrade or a block reaches it while it is written (metering.go).
		enforceWrites(ctx.Conn(), gate)
	}
	return true
}

// orgID is org's id, "" for none.
func orgID(org *sites.Org) string {
	if org == nil {
		return ""
	}
	return org.ID
}

// refusal is the org's refusal, its status and reason code; 0 when the
// org is served.
func refusal(org *sites.Org, gate *access.Gate) (status int, code []byte) {
	switch {
	case org == nil:
		return fasthttp.StatusForbidden, reasonNoAccount
	case gate == nil:
		if org.State == sites.StateSuspended {
			return fasthttp.StatusForbidden, reasonSuspended
		}
		return 0, nil
	}
	switch gate.Decision() {
	case access.BlockQuota:
		return fasthttp.StatusTooManyRequests, reasonQuota
	case access.BlockExpired:
		return fasthttp.StatusPaymentRequired, reasonPayment
	case access.BlockSuspended:
		return fasthttp.StatusForbidden, reasonSuspended
	case access.BlockStorage:
		return fasthttp.StatusTooManyRequests, reasonStorage
	}
	return 0, nil
}

// siteRefusal is the refusal of one site of an org that is served: a
// deactivated site (404), a site or domain its plan no longer includes
// (402); 0 when it is served.
func siteRefusal(r *route, gate *access.Gate, key []byte) (int, []byte) {
	if a := r.site.Active; a != nil && !*a {
		return fasthttp.StatusNotFound, reasonInactive
	}
	if gate != nil {
		if ex := gate.Excluded(); ex != nil && ex.Has(r.site.ID, key) {
			return fasthttp.StatusPaymentRequired, reasonUpgrade
		}
	}
	return 0, nil
}

var (
	headerRetryAfter = []byte("Retry-After")
	// retryAfterQuota: a blocked org may upgrade at any time; clients are
	// told to come back in an hour.
	retryAfterQuota = []byte("3600")
)

// chargeTarget counts a request for t's site or pages repository and
// makes what the connection writes from now on its egress; tollgate's own
// answers (internal endpoints, redirects of hosts that are no site,
// challenges) are nobody's.
func (p *Proxy) chargeTarget(ctx *fasthttp.RequestCtx, t *target) {
	if p.usage == nil {
		return
	}
	var u *meter.Counters
	switch {
	case t.site != nil:
		u = t.site.usage
	case t.to == toPages:
		u = t.owner.usage(p.usage, t.repo)
	}
	if u != nil {
		u.AddRequest()
	}
	charge(ctx.Conn(), u)
}

// serveSite serves a site in the table: from its content (a directory or
// a Gitea repository) or its upstream; 503 when its source could not be
// opened.
func (p *Proxy) serveSite(ctx *fasthttp.RequestCtx, r *route) {
	switch {
	case r.rt.err != nil:
		p.errPages.writeError(ctx, fasthttp.StatusServiceUnavailable)
	case r.rt.content != nil:
		p.serveStatic(ctx, r.rt.content, ctx.Path())
	case r.rt.up != nil:
		if err := r.rt.up.serve(ctx, r.usage); err != nil {
			p.countUpstreamError(err)
		}
	}
	setHSTS(ctx, r.hsts)
}

func (p *Proxy) measure(ctx *fasthttp.RequestCtx, kind int, start time.Time) {
	m := p.metrics
	status := ctx.Response.StatusCode()
	m.requests[kind][statusClass(status)].Inc()
	if n := ctx.Response.Header.ContentLength(); n > 0 && !ctx.IsHead() {
		m.bytes[kind].Add(float64(n))
	} else if !ctx.Response.IsBodyStream() {
		m.bytes[kind].Add(float64(len(ctx.Response.Body())))
	}
	m.duration[kind].Observe(time.Since(start).Seconds())
	if p.cfg.AccessLog && p.log.Enabled(context.Background(), slog.LevelInfo) {
		p.log.LogAttrs(context.Background(), slog.LevelInfo, "request",
			slog.String("host", string(ctx.Host())), slog.String("method", string(ctx.Method())),
			slog.String("uri", string(ctx.RequestURI())), slog.Int("status", status),
			slog.String("remote", ctx.RemoteIP().String()), slog.Duration("duration", time.Since(start)))
	}
}

func (p *Proxy) countUpstreamError(err error) {
	switch {
	case errors.Is(err, errUpstreamTimeout):
		p.metrics.upErrors[1].Inc()
	default:
		p.metrics.upErrors[0].Inc()
	}
}

// errorHandler answers requests fasthttp could not read.
func (p *Proxy) errorHandler(ctx *fasthttp.RequestCtx, err error) {
	charge(ctx.Conn(), nil) // an unreadable request is nobody's usage
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.As(err, &small):
		p.errPages.writeError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		p.errPages.writeError(ctx, fasthttp.StatusRequestEntityTooLarge)
	case errors.Is(err, fasthttp.ErrUnsupportedTransferEncoding):
		// A coding other than chunked: tollgate decodes none (RFC 9112 §6.1).
		p.errPages.writeError(ctx, fasthttp.StatusNotImplemented)
	case errors.As(err, &netErr) && netErr.Timeout():
		p.errPages.writeError(ctx, fasthttp.StatusRequestTimeout)
	default:
		p.errPages.writeError(ctx, fasthttp.StatusBadRequest)
	}
}
