package proxy

import (
	"bytes"
	"testing"
)

// FuzzStaticPath throws arbitrary request URIs at a dir site: no panic, no
// byte from outside the site root, no hidden file, and only the expected
// statuses.
func FuzzStaticPath(f *testing.F) {
	for _, s := range []string{"/", "/about", "/../secret.txt", "/%2e%2e/secret.txt", "/leak.txt", "/.env",
		"/docs", "/a%00b", "//..//secret.txt", "/docs/../../secret.txt", "/%2e%2e%2fsecret.txt", "/..%5csecret.txt"} {
		f.Add(s)
	}
	h := newHarness(f, Config{}, Limits{})
	f.Fuzz(func(t *testing.T, uri string) {
		ctx := newCtx("www.example", uri)
		h.proxy.Handler(ctx)
		body := ctx.Response.Body()
		if bytes.Contains(body, []byte(secret)) || bytes.Contains(body, []byte("hidden")) {
			t.Fatalf("%q served forbidden content", uri)
		}
		switch ctx.Response.StatusCode() {
		case 200, 301, 400, 404:
		default:
			t.Fatalf("%q: unexpected status %d", uri, ctx.Response.StatusCode())
		}
	})
}
