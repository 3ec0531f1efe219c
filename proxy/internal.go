package proxy

// tollgate's own endpoints on the public listeners (the Stripe webhook):
// matched by host and exact path, their bodies bounded before a handler
// sees them.

import (
	"io"

	"github.com/valyala/fasthttp"
)

// internalRoute returns tollgate's own endpoint at host key and the
// request's path, or nil.
func (p *Proxy) internalRoute(ctx *fasthttp.RequestCtx, key []byte) *InternalRoute {
	routes := p.internal[string(key)]
	for i := range routes {
		if string(ctx.Path()) == routes[i].Path {
			return &routes[i]
		}
	}
	return nil
}

// serveInternal serves tollgate's own endpoint. Its body is read whole,
// up to the route's MaxBody: a longer one gets 413 before (Content-Length)
// or while (chunked) it is read, and closes the connection.
func (p *Proxy) serveInternal(ctx *fasthttp.RequestCtx, ir *InternalRoute) {
	if p.errPages.readBodyWithin(ctx, ir.MaxBody) {
		ir.Handler(ctx)
	}
}

// readBodyWithin reads a streamed request body into the request, up to max
// bytes (0: no body allowed). Past it, it answers 413, closes the
// connection and returns false.
func (e *ErrorPages) readBodyWithin(ctx *fasthttp.RequestCtx, max int) bool {
	h := &ctx.Request.Header
	if !hasBody(h) {
		return true
	}
	if h.ContentLength() > max {
		e.reject(ctx, fasthttp.StatusRequestEntityTooLarge)
		return false
	}
	stream := ctx.RequestBodyStream()
	if stream == nil {
		return len(ctx.Request.Body()) <= max
	}
	b := make([]byte, 0, min(max, 64<<10)+1)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := stream.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if len(b) > max {
			e.reject(ctx, fasthttp.StatusRequestEntityTooLarge)
			return false
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			e.reject(ctx, fasthttp.StatusBadRequest)
			return false
		}
	}
	ctx.Request.SetBodyRaw(b)
	return true
}
