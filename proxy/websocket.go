package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"time"

	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/valyala/fasthttp"
)

// isUpgradeRequest reports a request to switch protocols (WebSocket, or any
// other "Connection: Upgrade" + "Upgrade: x" without a body). Other requests
// lose both headers as hop-by-hop.
func isUpgradeRequest(h *fasthttp.RequestHeader) bool {
	if !h.ConnectionUpgrade() || len(h.Peek(fasthttp.HeaderUpgrade)) == 0 {
		return false
	}
	n := h.ContentLength()
	return n == 0 || n == -2 // no body
}

// serveUpgrade passes an Upgrade request through on a connection of its own:
// it sends the request with its Upgrade and Connection headers, and if the
// upstream answers 101 it hijacks the visitor's connection and copies bytes
// both ways until either side closes. Any other answer is relayed like a
// normal response.
func (u *upstream) serveUpgrade(ctx *fasthttp.RequestCtx) error {
	conn, ic, err := u.dial(u.ioTimeout)
	if err != nil {
		return u.fail(ctx, err, nil)
	}

	req := fasthttp.AcquireRequest()
	u.prepareRequest(ctx, req)
	// Written by hand, not by a client: origin form and the visitor's Host,
	// as for every other request (prepareRequest's absolute URI is only
	// for fasthttp's client).
	var scratch [256]byte
	req.SetRequestURIBytes(u.appendOrigin(scratch[:0], ctx))
	upgrade := ctx.Request.Header.Peek(fasthttp.HeaderUpgrade)
	req.Header.Set(fasthttp.HeaderConnection, "Upgrade")
	req.Header.SetBytesV(fasthttp.HeaderUpgrade, upgrade)
	bw := bufio.NewWriter(conn)
	err = req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	fasthttp.ReleaseRequest(req)
	if err != nil {
		_ = conn.Close()
		return u.fail(ctx, err, nil)
	}

	// br may hold the upstream's first bytes after the 101 head; the tunnel
	// reads from it, not from conn.
	br := bufio.NewReaderSize(conn, upstreamHeaderBytes)
	resp := fasthttp.AcquireResponse()
	resp.StreamBody = true
	if err := resp.ReadLimitBody(br, 0); err != nil {
		fasthttp.ReleaseResponse(resp)
		_ = conn.Close()
		return u.fail(ctx, err, nil)
	}
	if resp.StatusCode() != fasthttp.StatusSwitchingProtocols {
		_ = relayResponse(ctx, resp, conn) // streams (conn is set), closing conn after the body
		return nil
	}

	copyResponseHeader(&ctx.Response.Header, &resp.Header)
	if v := resp.Header.Peek(fasthttp.HeaderUpgrade); len(v) > 0 {
		upgrade = v
	}
	ctx.Response.Header.Set(fasthttp.HeaderConnection, "Upgrade")
	ctx.Response.Header.SetBytesV(fasthttp.HeaderUpgrade, upgrade)
	fasthttp.ReleaseResponse(resp)
	if !u.track(conn) {
		_ = conn.Close()
		return u.fail(ctx, errors.New("upstream closed"), nil)
	}

	// We write the 101 head ourselves from the hijack handler
	// (HijackSetNoResponse): when fasthttp writes it, the server skips the
	// handler if it decides to close the connection (DisableKeepalive,
	// MaxRequestsPerConn, shutdown), after a 101 the visitor can do nothing
	// with, and the upstream connection would be left open.
	head := append([]byte(nil), ctx.Response.Header.Header()...)
	ic.timeout = 0 // a tunnel may be idle for long; the apps ping
	_ = conn.SetDeadline(time.Time{})
	var gate *access.Gate // the org's gate, set by enforce (the hijacked conn hides it)
	if mc := metered(ctx.Conn()); mc != nil {
		gate = mc.gate.Load()
	}
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer u.untrack(conn)
		if _, err := c.Write(head); err != nil {
			return
		}
		tunnel(c, conn, br, gate)
	})
	return nil
}

// tunnel copies bytes between the visitor and the upstream until either
// side closes or fails, then stops the other direction too. Bytes toward
// the visitor follow the org's gate (metering.go: throttled, paced; blocked,
// the write fails); a tunnel whose org is blocked is also ended within
// paceCheck when neither side is writing.
func tunnel(client, up net.Conn, upr io.Reader, g *access.Gate) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, client)
		breakConns(client, up)
	}()
	if g != nil {
		go watchGate(g, done, func() { breakConns(client, up) })
	}
	_, _ = io.Copy(client, upr)
	breakConns(client, up)
	<-done
}

// watchGate calls stop once g blocks, looking every paceCheck until done.
func watchGate(g *access.Gate, done <-chan struct{}, stop func()) {
	t := time.NewTicker(paceCheck)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if d := g.Decision(); d != access.Allow && d != access.Throttle {
				stop()
				return
			}
		}
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// breakConns makes every blocked and later read and write on both
// connections fail at once. (Closing the hijacked connection is fasthttp's
// job once the hijack handler returns.)
func breakConns(a, b net.Conn) {
	_ = a.SetDeadline(aLongTimeAgo)
	_ = b.SetDeadline(aLongTimeAgo)
}

// track registers the upstream side of a tunnel so close can end it; false
// once the upstream is closed.
func (u *upstream) track(c net.Conn) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false
	}
	if u.tunnels == nil {
		u.tunnels = map[net.Conn]struct{}{}
	}
	u.tunnels[c] = struct{}{}
	return true
}

func (u *upstream) untrack(c net.Conn) {
	u.mu.Lock()
	delete(u.tunnels, c)
	u.mu.Unlock()
	_ = c.Close()
}
