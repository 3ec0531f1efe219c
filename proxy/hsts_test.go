package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestHSTSValue(t *testing.T) {
	for _, tc := range []struct {
		maxAge              time.Duration
		subdomains, preload bool
		want                string
	}{
		{0, false, false, ""},
		{999 * time.Millisecond, true, true, ""},
		{-time.Hour, false, false, ""},
		{time.Second, false, false, "max-age=1"},
		{365 * 24 * time.Hour, false, false, "max-age=31536000"},
		{365*24*time.Hour + 500*time.Millisecond, true, false, "max-age=31536000; includeSubDomains"},
		{2 * 365 * 24 * time.Hour, true, true, "max-age=63072000; includeSubDomains; preload"},
	} {
		if got := string(hstsValue(tc.maxAge, tc.subdomains, tc.preload)); got != tc.want {
			t.Errorf("hstsValue(%v, %v, %v) = %q, want %q", tc.maxAge, tc.subdomains, tc.preload, got, tc.want)
		}
	}
}

// TestSetHSTS: the header goes on responses to TLS requests (h2Stream makes
// ctx.IsTLS true, as a TLS connection does), replaces one an upstream sent,
// and is never sent over plain HTTP or without a policy; setting it does
// not allocate.
func TestSetHSTS(t *testing.T) {
	v := hstsValue(365*24*time.Hour, true, false)
	newCtx := func(tls bool) *fasthttp.RequestCtx {
		var c net.Conn = &readerConn{}
		if tls {
			c = &h2Stream{conn: &readerConn{}}
		}
		ctx := &fasthttp.RequestCtx{}
		ctx.Init2(c, nil, false)
		return ctx
	}
	for _, tc := range []struct {
		name     string
		tls      bool
		upstream string
		value    []byte
		want     string
	}{
		{"TLS", true, "", v, "max-age=31536000; includeSubDomains"},
		{"TLS, replacing the upstream's", true, "max-age=5", v, "max-age=31536000; includeSubDomains"},
		{"TLS, no policy", true, "", nil, ""},
		{"TLS, no policy, the upstream's kept", true, "max-age=5", nil, "max-age=5"},
		{"plain HTTP", false, "", v, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := newCtx(tc.tls)
			if ctx.IsTLS() != tc.tls {
				t.Fatalf("IsTLS %v", ctx.IsTLS())
			}
			if tc.upstream != "" {
				ctx.Response.Header.Set("Strict-Transport-Security", tc.upstream)
			}
			setHSTS(ctx, tc.value)
			if got := string(ctx.Response.Header.Peek("Strict-Transport-Security")); got != tc.want {
				t.Fatalf("Strict-Transport-Security %q, want %q", got, tc.want)
			}
		})
	}
	ctx := newCtx(true)
	if n := testing.AllocsPerRun(100, func() { setHSTS(ctx, v) }); n != 0 {
		t.Fatalf("setHSTS allocates %v times", n)
	}
}
