package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-edge/tollgate/internal/certtest"
	"github.com/tollgate-edge/tollgate/sites"
	"golang.org/x/net/http2"
)

// rateHarness is a harness serving plain HTTP and TLS (h1 and h2) on
// loopback with the given limits, with a second org "other" whose site
// other.example has no request-rate cap.
type rateHarness struct {
	*harness
	plain, tls string
	pool       *x509.CertPool
}

func newRateHarness(t *testing.T, limits Limits) *rateHarness {
	h := newHarness(t, Config{}, limits)
	ctx := context.Background()
	_, err := h.reg.PutPlan(ctx, sites.Plan{Name: "open"})
	must(t, err)
	_, err = h.reg.CreateOrg(ctx, sites.Org{ID: "other", Plan: "open"})
	must(t, err)
	_, err = h.reg.CreateSite(ctx, sites.Site{ID: "o", Org: "other", Source: sites.Source{Type: sites.SourceDir, Path: h.root}})
	must(t, err)
	_, err = h.reg.AttachDomain(ctx, "o", "other.example")
	must(t, err)
	c, err := certtest.New(time.Hour, "www.example", "other.example")
	must(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go h.proxy.ServeTLS(ln, &tls.Config{Certificates: []tls.Certificate{c.TLS}, NextProtos: []string{"h2", "http/1.1"}})
	return &rateHarness{harness: h, plain: serveOnTCP(t, h), tls: ln.Addr().String(), pool: c.Pool()}
}

// setRPS sets the requests_per_second of acme's plan through the registry.
func (h *rateHarness) setRPS(t *testing.T, rps int64) {
	_, err := h.reg.PutPlan(context.Background(), sites.Plan{Name: "big", RequestsPerSecond: rps})
	must(t, err)
}

// client speaks proto ("h1": plain HTTP/1.1, "h1-tls", "h2") from the
// loopback address src.
func (h *rateHarness) client(t *testing.T, proto, src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	cfg := &tls.Config{RootCAs: h.pool}
	var rt http.RoundTripper
	switch proto {
	case "h1":
		rt = &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, h.plain)
		}}
	case "h1-tls":
		rt = &http.Transport{TLSClientConfig: cfg, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, h.tls)
			}}
	case "h2":
		rt = &http2.Transport{TLSClientConfig: cfg, DialTLSContext: func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, h.tls)
			if err != nil {
				return nil, err
			}
			host, _, _ := net.SplitHostPort(addr)
			cfg = cfg.Clone()
			cfg.ServerName = host
			return tls.Client(c, cfg), nil
		}}
	}
	c := &http.Client{Transport: rt, Timeout: 5 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// get asks host for /index.html and returns the response with its body read.
func get(t *testing.T, c *http.Client, host string) *http.Response {
	t.Helper()
	scheme := "https"
	if _, ok := c.Transport.(*http.Transport); ok && c.Transport.(*http.Transport).TLSClientConfig == nil {
		scheme = "http"
	}
	resp, err := c.Get(scheme + "://" + host + "/index.html")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// flood sends n requests and counts the answers by status; it returns the
// first 429 and how long the flood took.
func flood(t *testing.T, c *http.Client, host string, n int) (served, refused int, first *http.Response, took time.Duration) {
	start := time.Now()
	for range n {
		resp := get(t, c, host)
		switch resp.StatusCode {
		case http.StatusOK:
			served++
		case http.StatusTooManyRequests:
			refused++
			if first == nil {
				first = resp
			}
		default:
			t.Fatalf("%s: status %d", host, resp.StatusCode)
		}
	}
	return served, refused, first, time.Since(start)
}

// checkRefusal checks the fields of a 429 of the limit named policy.
func checkRefusal(t *testing.T, resp *http.Response, policy, state string) {
	t.Helper()
	if resp == nil {
		t.Fatal("no request was refused")
	}
	for name, want := range map[string]string{"Retry-After": "1", "RateLimit-Policy": policy, "RateLimit": state,
		"Tollgate-Reason": "RATE_LIMITED", "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("%s: %q; want %q", name, got, want)
		}
	}
}

var rateProtos = []string{"h1", "h1-tls", "h2"}

// TestPerIPRateLimit: a client flooding a site gets 429s with the
// RateLimit fields while another client of the same site, and the same
// client on another site, are served; over HTTP/1.1, TLS and h2 alike.
func TestPerIPRateLimit(t *testing.T) {
	const rps, burst = 2, 4
	h := newRateHarness(t, Limits{PerIPRPS: rps, PerIPBurst: burst})
	for i, proto := range rateProtos {
		t.Run(proto, func(t *testing.T) {
			abuser := "127.0.0." + string(rune('2'+2*i))
			bystander := "127.0.0." + string(rune('3'+2*i))
			c := h.client(t, proto, abuser)
			served, refused, first, took := flood(t, c, "www.example", 20)
			if limit := burst + int(took.Seconds()*rps) + 1; served > limit || refused == 0 {
				t.Errorf("flood of 20 in %v: %d served, %d refused; want at most %d served", took, served, refused, limit)
			}
			checkRefusal(t, first, `"ip";q=2;w=1`, `"ip";r=0;t=1`)
			if resp := get(t, h.client(t, proto, bystander), "www.example"); resp.StatusCode != http.StatusOK {
				t.Errorf("another client of the site: %d", resp.StatusCode)
			}
			if resp := get(t, c, "other.example"); resp.StatusCode != http.StatusOK {
				t.Errorf("the flooding client on another site: %d", resp.StatusCode)
			}
		})
	}
	if got := testutil.ToFloat64(h.proxy.metrics.rateLimited[rateIP]); got < 3 {
		t.Errorf(`tollgate_ratelimit_refused_requests_total{kind="ip"} = %v`, got)
	}
}

// TestOrgRateLimit: an org past its plan's requests_per_second gets 429s
// with the RateLimit fields, whoever asks; another org is served; raising
// the plan's rate (a registry change) serves it again at once.
func TestOrgRateLimit(t *testing.T) {
	h := newRateHarness(t, Limits{})
	for i, proto := range rateProtos {
		t.Run(proto, func(t *testing.T) {
			h.setRPS(t, 2)
			c := h.client(t, proto, "127.0.0."+string(rune('2'+i)))
			served, refused, first, took := flood(t, c, "www.example", 12)
			if limit := 2 + int(took.Seconds()*2) + 1; served > limit || refused == 0 {
				t.Errorf("flood of 12 in %v: %d served, %d refused; want at most %d served", took, served, refused, limit)
			}
			checkRefusal(t, first, `"org";q=2;w=1`, `"org";r=0;t=1`)
			if resp := get(t, c, "other.example"); resp.StatusCode != http.StatusOK {
				t.Errorf("another org: %d", resp.StatusCode)
			}
			h.setRPS(t, 0)
			pollFor(t, func() bool { return get(t, c, "www.example").StatusCode == http.StatusOK })
		})
	}
	if got := testutil.ToFloat64(h.proxy.metrics.rateLimited[rateOrg]); got < 3 {
		t.Errorf(`tollgate_ratelimit_refused_requests_total{kind="org"} = %v`, got)
	}
}

// TestOrgRateClusterShare measures the error of per-node buckets: two
// nodes (cluster_nodes = 2) each holding half of an org's 100 rps, under
// 3 s of 400 rps offered, spread by the load balancer in several ways,
// against one bucket at the full rate (the exact answer: 100 burst + 300).
// A simulated clock makes the figures exact and the test instant.
func TestOrgRateClusterShare(t *testing.T) {
	const rps, seconds, offered = 100, 3, 400
	s := newShareSnapshot(t, rps)
	serve := func(nodes int, share func(i int) int) int {
		buckets := make([]*orgRate, nodes)
		for n := range buckets {
			buckets[n] = (&orgRates{nodes: float64(nodes), m: map[string]*orgRate{}}).get(s, "acme")
		}
		t0, served := time.Now(), 0
		for i := range seconds * offered {
			now := t0.Add(time.Duration(i) * time.Second / offered)
			if buckets[share(i)].limit.Load().lim.AllowN(now, 1) {
				served++
			}
		}
		return served
	}
	exact := serve(1, func(int) int { return 0 })
	for _, tc := range []struct {
		name      string
		nodes     int
		share     func(i int) int
		errorLow  float64 // bounds of served/exact - 1
		errorHigh float64
	}{
		{"round robin", 2, func(i int) int { return i % 2 }, -0.01, 0.01},
		{"75/25", 2, func(i int) int { return min(i%4, 1) }, -0.01, 0.01},
		{"95/5", 2, func(i int) int { return min(i%20, 1) }, -0.36, -0.34},
		{"all on one node", 2, func(int) int { return 0 }, -0.51, -0.49},
		{"full rate per node (not chosen), round robin", 1, nil, 0.99, 1.01},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var served int
			if tc.share == nil { // two nodes, each at the full rate, each offered half
				served = 2 * serveHalf(s, seconds, offered/2)
			} else {
				served = serve(tc.nodes, tc.share)
			}
			e := float64(served)/float64(exact) - 1
			t.Logf("%s: %d served over %d s (one bucket at the full rate: %d): error %+.1f%%", tc.name, served, seconds, exact, 100*e)
			if e < tc.errorLow || e > tc.errorHigh {
				t.Errorf("error %+.3f not in [%+.2f, %+.2f]", e, tc.errorLow, tc.errorHigh)
			}
		})
	}
}

// serveHalf is what one node with a bucket at the full rate serves of
// offered requests per second over seconds.
func serveHalf(s *sites.Snapshot, seconds, offered int) int {
	r := (&orgRates{nodes: 1, m: map[string]*orgRate{}}).get(s, "acme")
	t0, served := time.Now(), 0
	for i := range seconds * offered {
		if r.limit.Load().lim.AllowN(t0.Add(time.Duration(i)*time.Second/time.Duration(offered)), 1) {
			served++
		}
	}
	return served
}

// newShareSnapshot is a registry snapshot with org acme on a plan of rps.
func newShareSnapshot(t *testing.T, rps int64) *sites.Snapshot {
	h := newHarness(t, Config{}, Limits{})
	_, err := h.reg.PutPlan(context.Background(), sites.Plan{Name: "big", RequestsPerSecond: rps})
	must(t, err)
	return h.proxy.snap.Load()
}

// TestClientAddr: the address a per-client limit counts, from the peer or,
// behind a trusted proxy, from X-Forwarded-For.
func TestClientAddr(t *testing.T) {
	trusted, err := parsePrefixes([]string{"10.0.0.0/8"})
	must(t, err)
	p := &Proxy{trusted: trusted}
	for _, tc := range []struct {
		peer string
		xff  []string
		want string // "": none
	}{
		{"192.0.2.7", nil, "192.0.2.7"},
		{"192.0.2.7", []string{"198.51.100.1"}, "192.0.2.7"}, // untrusted peers' X-Forwarded-For is ignored
		{"2001:db8:1:2:3:4:5:6", nil, "2001:db8:1:2::"},
		{"10.0.0.1", []string{"198.51.100.1"}, "198.51.100.1"},
		{"10.0.0.1", []string{"203.0.113.9, 198.51.100.1"}, "198.51.100.1"},
		{"10.0.0.1", []string{"203.0.113.9, 198.51.100.1 , 10.0.0.2"}, "198.51.100.1"}, // proxies of the chain are skipped
		{"10.0.0.1", []string{"203.0.113.9", "198.51.100.1,10.1.1.1"}, "198.51.100.1"},
		{"10.0.0.1", []string{"2001:db8:7:8::1"}, "2001:db8:7:8::"},
		{"10.0.0.1", []string{"not-an-address, 10.0.0.3"}, ""},
		{"10.0.0.1", nil, ""},
	} {
		ctx := newCtx("www.example", "/")
		ctx.SetRemoteAddr(&net.TCPAddr{IP: net.ParseIP(tc.peer), Port: 1})
		for _, v := range tc.xff {
			ctx.Request.Header.Add("X-Forwarded-For", v)
		}
		a, ok := p.clientAddr(ctx)
		got := ""
		if ok {
			got = a.String()
		}
		if got != tc.want {
			t.Errorf("peer %s, X-Forwarded-For %q: %q; want %q", tc.peer, tc.xff, got, tc.want)
		}
	}
}

// TestLimitsValidateRates: bad request-rate keys are named.
func TestLimitsValidateRates(t *testing.T) {
	for _, tc := range []struct {
		limits Limits
		want   string // "": valid
	}{
		{Limits{}, ""},
		{Limits{PerIPRPS: 50, PerIPBurst: 100, PerIPTable: 1 << 20, ClusterNodes: 3}, ""},
		{Limits{PerIPRPS: -1}, "limits.per_ip_rps"},
		{Limits{PerIPRPS: 5, PerIPBurst: -1}, "limits.per_ip_burst"},
		{Limits{PerIPTable: 100}, "limits.per_ip_table"},
		{Limits{PerIPTable: 1 << 25}, "limits.per_ip_table"},
		{Limits{ClusterNodes: -1}, "limits.cluster_nodes"},
		{Limits{ClusterNodes: 5000}, "limits.cluster_nodes"},
	} {
		tc.limits.Defaults()
		err := tc.limits.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.limits, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v; want an error naming %s", tc.limits, err, tc.want)
		}
	}
}
