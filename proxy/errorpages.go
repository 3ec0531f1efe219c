package proxy

import (
	"html/template"
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

// refusalTexts are the sentences of the refusals whose status is shared
// with another refusal of other meaning, by code; the other refusals say
// their status's sentence.
var refusalTexts = map[reason.Code]string{
	reason.StorageQuotaExceeded: "This site is paused: its owner stores more than their plan includes. It will be back as soon as that is settled.",
	reason.UpgradeRequired:      "This site is not included in its owner's current plan.",
}

// orgCodes are the refusals about one org's account or site: their pages
// get the org's id (PageData.Org).
var orgCodes = map[reason.Code]bool{
	reason.AccountSuspended:     true,
	reason.PaymentRequired:      true,
	reason.QuotaExceeded:        true,
	reason.StorageQuotaExceeded: true,
	reason.UpgradeRequired:      true,
	reason.SiteInactive:         true,
}

// renewalCodes are the refusals an org settles through its plan or its
// payment: their pages get [billing] renewal_url (PageData.RenewalURL).
var renewalCodes = map[reason.Code]bool{
	reason.PaymentRequired:      true,
	reason.QuotaExceeded:        true,
	reason.StorageQuotaExceeded: true,
	reason.UpgradeRequired:      true,
}

// errorText is the sentence of status, or of the refusal code ("" for a
// plain error).
func errorText(status int, code reason.Code) string {
	if text, ok := refusalTexts[code]; ok {
		return text
	}
	if text, ok := errorTexts[status]; ok {
		return text
	}
	if status < 500 {
		return "The request cannot be answered."
	}
	return "The server cannot answer this request."
}

// pageStatuses are the statuses with a page: every 4xx and 5xx status
// net/http names.
func pageStatuses() []int {
	var out []int
	for code := 400; code < 600; code++ {
		if http.StatusText(code) != "" {
			out = append(out, code)
		}
	}
	return out
}

// builtinPage is the template of tollgate's own pages: small, without any
// internal detail (no upstream address, no file path, no Go error), and
// neutral in wording, since tollgate cannot tell a site's owner from its
// visitors. A refusal in renewalCodes links to the org's renewal URL when
// [billing] renewal_url is set; the org's id is not printed.
const builtinPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{.Status}} {{.StatusText}}</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:15vh auto;padding:0 1em;color:#222}h1{font-size:1.4em}small{color:#777}</style></head>
<body><h1>{{.Status}} {{.StatusText}}</h1><p>{{.Text}}</p>{{with .RenewalURL}}<p><a href="{{.}}" rel="nofollow">Is this your site? Manage its plan.</a></p>{{end}}<p><small>tollgate</small></p></body></html>
`

var builtinTemplate = template.Must(template.New("built-in").Parse(builtinPage))

var contentTypeHTML = []byte("text/html; charset=utf-8")

// writeError answers with the page for status, a 4xx or 5xx. It discards
// any body or headers set so far, except those that describe the error
// (Allow, Retry-After, Content-Range), and never allocates. A status
// without a page (a redirect, a success: the caller's mistake, which
// TestWriteErrorStatuses looks for in every call) answers 500. A nil e
// answers the built-in pages.
func (e *ErrorPages) writeError(ctx *fasthttp.RequestCtx, status int) {
	page := e.get().statusPage(status)
	writePage(ctx, page.status, page.body)
}

// writePage answers status with body, a page.
func writePage(ctx *fasthttp.RequestCtx, status int, body []byte) {
	resp := &ctx.Response
	resp.ResetBody()
	resp.Header.Del(fasthttp.HeaderContentEncoding)
	resp.Header.Del(fasthttp.HeaderETag)
	resp.Header.Del(fasthttp.HeaderLastModified)
	resp.Header.Del(fasthttp.HeaderVary)
	resp.Header.SetStatusCode(status)
	resp.Header.SetContentTypeBytes(contentTypeHTML)
	resp.Header.SetCanonical(strCacheControl, strNoStore)
	resp.SetBodyRaw(body)
}

// writeRefusal is writeError for a refusal tollgate decided (a block for
// the org's account, a misdirected request): the code's page, and code in
// the Tollgate-Reason header, so a tenant's monitoring can tell a decision
// from an outage (which has no Tollgate-Reason). code is one of the
// reason* values below. org is the org whose decision it is ("" for none):
// a page that shows the org or its renewal URL is rendered once per org
// and kept (orgPages), so a blocked org's visitors cost no allocation
// after its first.
func (e *ErrorPages) writeRefusal(ctx *fasthttp.RequestCtx, status int, code []byte, org string) {
	e = e.get()
	page := e.refusal[string(code)]
	if page == nil || page.status != status {
		page = e.statusPage(status)
	}
	body := page.body
	if page.perOrg && org != "" {
		body = e.orgs.get(e, page, org)
	}
	writePage(ctx, page.status, body)
	ctx.Response.Header.SetCanonical(headerTollgateReason, code)
}

// writeRouteError answers a route's refusal: a 421 carries its reason, the
// other statuses (400, 404, 502, 503) are plain error pages.
func (e *ErrorPages) writeRouteError(ctx *fasthttp.RequestCtx, status int) {
	if status == fasthttp.StatusMisdirectedRequest {
		e.writeRefusal(ctx, status, reasonMisdirected, "")
		return
	}
	e.writeError(ctx, status)
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
