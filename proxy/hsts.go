package proxy

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// HTTP Strict Transport Security (RFC 6797): a browser that received the
// header over HTTPS uses only HTTPS for the host until max-age runs out.
// It is a per-site choice, off unless the site opts in: once sent it cannot
// be taken back before max-age, and with includeSubDomains it binds every
// subdomain of the host, which tollgate may not serve.

var headerHSTS = []byte("Strict-Transport-Security")

// hstsValue is the Strict-Transport-Security field value (RFC 6797 §6.1)
// for a policy kept maxAge (in whole seconds), with the includeSubDomains
// and preload directives when asked; nil when maxAge is under a second
// (no policy). It allocates; setHSTS does not.
func hstsValue(maxAge time.Duration, includeSubdomains, preload bool) []byte {
	secs := int64(maxAge / time.Second)
	if secs < 1 {
		return nil
	}
	v := append([]byte("max-age="), strconv.AppendInt(nil, secs, 10)...)
	if includeSubdomains {
		v = append(v, "; includeSubDomains"...)
	}
	if preload {
		v = append(v, "; preload"...)
	}
	return v
}

// setHSTS sets value as the response's Strict-Transport-Security when the
// request came over TLS (h1 or h2), replacing one an upstream sent. Over
// plain HTTP it sets nothing (RFC 6797 §7.2), nor when value is empty.
func setHSTS(ctx *fasthttp.RequestCtx, value []byte) {
	if len(value) == 0 || !ctx.IsTLS() {
		return
	}
	ctx.Response.Header.SetCanonical(headerHSTS, value)
}
