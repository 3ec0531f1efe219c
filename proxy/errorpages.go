package proxy

import (
	"fmt"
	"net/http"

	"github.com/tollgate-edge/tollgate/reason"
	"github.com/valyala/fasthttp"
)

// errorTexts are the sentences of tollgate's error pages, by status.
var errorTexts = map[int]string{
	fasthttp.StatusBadRequest:                   "The request could not be understood.",
	fasthttp.StatusPaymentRequired:              "This site is paused: its account has an unpaid balance. It will be back as soon as it is settled.",
	fasthttp.StatusForbidden:                    "Access to this site is not allowed.",
	fasthttp.StatusNotFound:                     "There is nothing here.",
	fasthttp.StatusMethodNotAllowed:             "This method is not allowed here.",
	fasthttp.StatusRequestTimeout:               "The request took too long to arrive.",
	fasthttp.StatusPreconditionFailed:           "The request's condition does not hold for the current version of this page.",
	fasthttp.StatusRequestEntityTooLarge:        "The request body is too large.",
	fasthttp.StatusRequestURITooLong:            "The request URL is too long.",
	fasthttp.StatusRequestedRangeNotSatisfiable: "The requested range is not available.",
	fasthttp.StatusMisdirectedRequest:           "This connection cannot serve this site. Please retry on a new connection.",
	fasthttp.StatusTooManyRequests:              "Too many requests. Please retry later.",
	fasthttp.StatusRequestHeaderFieldsTooLarge:  "The request headers are too large.",
	fasthttp.StatusInternalServerError:          "Something went wrong on our side.",
	fasthttp.StatusNotImplemented:               "The request uses a feature this server does not support.",
	fasthttp.StatusBadGateway:                   "The site's server could not be reached.",
	fasthttp.StatusServiceUnavailable:           "The site is temporarily unavailable.",
	fasthttp.StatusGatewayTimeout:               "The site's server took too long to answer.",
}

// Tollgate's own error pages: small, the same for every site, and without any
// internal detail (no upstream address, no file path, no Go error). Every 4xx
// and 5xx status that net/http names has one; those without a sentence in
// errorTexts get a generic one.
var errorPages = func() map[int][]byte {
	m := map[int][]byte{}
	for code := 400; code < 600; code++ {
		if http.StatusText(code) == "" {
			continue
		}
		text, ok := errorTexts[code]
		switch {
		case ok:
		case code < 500:
			text = "The request cannot be answered."
		default:
			text = "The server cannot answer this request."
		}
		m[code] = errorPage(code, text)
	}
	return m
}()

// errorPage is tollgate's page for status, saying text.
func errorPage(status int, text string) []byte {
	title := fmt.Sprintf("%d %s", status, http.StatusText(status))
	return fmt.Appendf(nil, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>%s</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:15vh auto;padding:0 1em;color:#222}h1{font-size:1.4em}small{color:#777}</style></head>
<body><h1>%s</h1><p>%s</p><p><small>tollgate</small></p></body></html>
`, title, title, text)
}

// refusalPages are the pages of the refusals whose status is shared with
// another refusal of other meaning, by code.
var refusalPages = map[string][]byte{
	string(reason.StorageQuotaExceeded): errorPage(fasthttp.StatusTooManyRequests,
		"This site is paused: its owner stores more than their plan includes. It will be back as soon as that is settled."),
	string(reason.UpgradeRequired): errorPage(fasthttp.StatusPaymentRequired,
		"This site is not included in its owner's current plan."),
}

var contentTypeHTML = []byte("text/html; charset=utf-8")

// writeError answers with tollgate's page for status, a 4xx or 5xx. It
// discards any body or headers set so far, except those that describe the
// error (Allow, Retry-After, Content-Range), and never allocates. A status
// without a page (a redirect, a success: the caller's mistake, which
// TestWriteErrorStatuses looks for in every call) answers 500.
func writeError(ctx *fasthttp.RequestCtx, status int) {
	page, ok := errorPages[status]
	if !ok {
		status = fasthttp.StatusInternalServerError
		page = errorPages[status]
	}
	resp := &ctx.Response
	resp.ResetBody()
	resp.Header.Del(fasthttp.HeaderContentEncoding)
	resp.Header.Del(fasthttp.HeaderETag)
	resp.Header.Del(fasthttp.HeaderLastModified)
	resp.Header.Del(fasthttp.HeaderVary)
	resp.Header.SetStatusCode(status)
	resp.Header.SetContentTypeBytes(contentTypeHTML)
	resp.Header.SetCanonical(strCacheControl, strNoStore)
	resp.SetBodyRaw(page)
}

// writeRefusal is writeError for a refusal tollgate decided (a block for
// the org's account, a misdirected request): the page, and code in the
// Tollgate-Reason header, so a tenant's monitoring can tell a decision from
// an outage (which has no Tollgate-Reason). code is one of the reason*
// values below; it allocates nothing.
func writeRefusal(ctx *fasthttp.RequestCtx, status int, code []byte) {
	writeError(ctx, status)
	if page, ok := refusalPages[string(code)]; ok {
		ctx.Response.SetBodyRaw(page)
	}
	ctx.Response.Header.SetCanonical(headerTollgateReason, code)
}

// writeRouteError answers a route's refusal: a 421 carries its reason, the
// other statuses (400, 404, 502, 503) are plain error pages.
func writeRouteError(ctx *fasthttp.RequestCtx, status int) {
	if status == fasthttp.StatusMisdirectedRequest {
		writeRefusal(ctx, status, reasonMisdirected)
		return
	}
	writeError(ctx, status)
}

// The Tollgate-Reason header and its values, as bytes once (package reason
// documents them).
var (
	headerTollgateReason = []byte(reason.HeaderName)
	reasonSuspended      = []byte(reason.AccountSuspended)
	reasonNoAccount      = []byte(reason.NoAccount)
	reasonPayment        = []byte(reason.PaymentRequired)
	reasonQuota          = []byte(reason.QuotaExceeded)
	reasonMisdirected    = []byte(reason.MisdirectedRequest)
	reasonStorage        = []byte(reason.StorageQuotaExceeded)
	reasonUpgrade        = []byte(reason.UpgradeRequired)
	reasonInactive       = []byte(reason.SiteInactive)
)

var (
	strCacheControl = []byte(fasthttp.HeaderCacheControl)
	strNoStore      = []byte("no-store")
)
