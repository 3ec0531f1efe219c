package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/certtest"
	"github.com/tollgate-edge/tollgate/sites"
)

// TestSiteHSTS: a site that opts in gets Strict-Transport-Security on its
// HTTPS answers (h1 and h2, files and error pages alike), never over plain
// HTTP; a site that does not gets none.
func TestSiteHSTS(t *testing.T) {
	h := newHarness(t, Config{}, Limits{})
	ctx := context.Background()
	_, err := h.reg.CreateSite(ctx, sites.Site{ID: "strict", Org: "acme", Source: sites.Source{Type: sites.SourceDir, Path: h.root},
		HSTS: &sites.HSTS{MaxAge: sites.Duration(8760 * time.Hour), IncludeSubdomains: true}})
	must(t, err)
	_, err = h.reg.AttachDomain(ctx, "strict", "strict.example")
	must(t, err)
	c, err := certtest.New(time.Hour, "www.example", "strict.example")
	must(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go h.proxy.ServeTLS(ln, &tls.Config{Certificates: []tls.Certificate{c.TLS}, NextProtos: []string{"h2", "http/1.1"}})
	th := &tlsHarness{harness: h, addr: ln.Addr().String(), pool: c.Pool()}

	const want = "max-age=31536000; includeSubDomains"
	for _, proto := range []string{"h2", "http/1.1"} {
		for _, tt := range []struct{ host, path, hsts string }{
			{"strict.example", "/", want},
			{"strict.example", "/missing", want},
			{"www.example", "/", ""},
		} {
			resp, err := th.client(proto).Get("https://" + tt.host + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("Strict-Transport-Security"); got != tt.hsts {
				t.Errorf("%s %s%s: Strict-Transport-Security %q, want %q", proto, tt.host, tt.path, got, tt.hsts)
			}
		}
	}
	if got := h.do("GET", "strict.example", "/").Header.Peek("Strict-Transport-Security"); len(got) != 0 {
		t.Errorf("plain HTTP: Strict-Transport-Security %q", got)
	}
	_, err = h.reg.CreateSite(ctx, sites.Site{ID: "bad", Org: "acme", Source: sites.Source{Type: sites.SourceDir, Path: h.root},
		HSTS: &sites.HSTS{MaxAge: sites.Duration(time.Hour), Preload: true}})
	if err == nil {
		t.Error("preload without includeSubDomains and a year was accepted")
	}
}
