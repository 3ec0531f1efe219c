package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/stripetest"
	"golang.org/x/net/http2"
)

// What tollgate promises a stranger over TLS, on the redirecting HTTP
// listener and at its own endpoints, against the built binary with a real
// ACME CA (Pebble) and stripe-mock.

func startTLSEdge(t *testing.T) (*instance, *x509.CertPool) {
	t.Helper()
	sm := stripetest.Start(t)
	in, roots := startHTTPS(t, billingConf("http://127.0.0.1:9/hooks", sm.URL())+
		"[sites]\ngitea_url = \"http://127.0.0.1:9\"\ngitea_webhook_secret = \"e2e-gitea-secret\"\n")
	in.addSite(t, "shop", "big", in.siteDir(t, "<h1>tls home</h1>"), "a.shop.test", "b.shop.test")
	return in, roots
}

func TestTLSMisdirected(t *testing.T) {
	in, roots := startTLSEdge(t)
	for _, name := range []string{"a.shop.test", "b.shop.test"} {
		if resp, _, err := in.httpsGet(roots, name, "/", "h2"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", name, resp, err)
		}
	}
	dial := func(proto string) *tls.Conn {
		c, err := tls.Dial("tcp", in.https, &tls.Config{RootCAs: roots, ServerName: "a.shop.test", NextProtos: []string{proto}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// HTTP/1.1: the certificate was chosen for a.shop.test; b.shop.test on
	// the same connection is 421, a.shop.test is served.
	c := dial("http/1.1")
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: b.shop.test\r\n\r\nGET / HTTP/1.1\r\nHost: A.Shop.Test:443\r\n\r\n")
	res := readResponses(c, 2)
	if fmt.Sprint(res.statuses()) != "[421 200]" || strings.Contains(res.bodies[0], "tls home") {
		t.Fatalf("h1 over a.shop.test's connection: %v %q %v", res.statuses(), res.bodies, res.err)
	}
	// HTTP/2: the same.
	cc, err := (&http2.Transport{}).NewClientConn(dial("h2"))
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]int{"b.shop.test": 421, "a.shop.test": 200} {
		req, _ := http.NewRequest("GET", "https://"+host+"/", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("h2 %s: %v", host, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("h2 %s on a.shop.test's connection: %d, want %d", host, resp.StatusCode, want)
		}
	}
}

func TestRedirectListener(t *testing.T) {
	in, _ := startTLSEdge(t)
	port := in.https[strings.LastIndexByte(in.https, ':')+1:]
	tests := []struct {
		name, send string
		status     int
		location   string
		closed     bool
	}{
		{"origin form", "GET /x?y=1 HTTP/1.1\r\nHost: A.shop.test\r\n\r\n", 308, "https://a.shop.test:" + port + "/x?y=1", false},
		{"absolute form: the target's host and path", "GET http://a.shop.test/p?q HTTP/1.1\r\nHost: evil.example\r\n\r\n", 308, "https://a.shop.test:" + port + "/p?q", false},
		{"absolute form with another scheme", "GET a.evil.example://a.shop.test/x HTTP/1.1\r\nHost: a.shop.test\r\n\r\n", 400, "", true},
		{"unknown host", "GET / HTTP/1.1\r\nHost: nobody.test\r\n\r\n", 404, "", false},
		{"challenge path takes no body", "POST /.well-known/acme-challenge/x HTTP/1.1\r\nHost: a.shop.test\r\nContent-Length: 314572800\r\n\r\n" + strings.Repeat("x", 16<<10), 413, "", true},
		{"chunked body to the challenge path", "POST /.well-known/acme-challenge/x HTTP/1.1\r\nHost: a.shop.test\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk("abc") + "0\r\n\r\n", 413, "", true},
		{"expect 100-continue gets the final status", "POST /x HTTP/1.1\r\nHost: a.shop.test\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n", 308, "https://a.shop.test:" + port + "/x", true},
		{"a body is not a request", fmt.Sprintf("POST /x HTTP/1.1\r\nHost: a.shop.test\r\nContent-Length: %d\r\n\r\n%s", len(smuggled), smuggled), 308, "https://a.shop.test:" + port + "/x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := exchange(t, in.http, tt.send, 2)
			if fmt.Sprint(res.statuses()) != fmt.Sprint([]int{tt.status}) {
				t.Fatalf("statuses %v (%v), want [%d]", res.statuses(), res.err, tt.status)
			}
			if got := res.responses[0].Header.Get("Location"); got != tt.location {
				t.Errorf("Location %q, want %q", got, tt.location)
			}
			if tt.closed && !res.closed {
				t.Errorf("connection left open")
			}
		})
	}
}

// TestInternalEndpointBodies sends 300 MiB bodies to every endpoint of
// tollgate's own (the Stripe webhook on the public listeners, the ACME
// challenge path, the Gitea hook on the admin listener): each is refused
// with 413 without being held in memory, and the process's resident set
// stays within 32 MiB of where it started.
func TestInternalEndpointBodies(t *testing.T) {
	in, roots := startTLSEdge(t)
	plain := func(addr string) func() net.Conn {
		return func() net.Conn {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
	overTLS := func(name string) func() net.Conn {
		return func() net.Conn {
			c, err := tls.Dial("tcp", in.https, &tls.Config{RootCAs: roots, ServerName: name, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
	const size = 300 << 20
	const bound = 32 << 20
	before := in.rss(t)
	// A normal visitor keeps being served while the bodies arrive.
	stop := make(chan struct{})
	latencies := make(chan []time.Duration, 1)
	go func() {
		var got []time.Duration
		defer func() { latencies <- got }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			start := time.Now()
			c, err := net.Dial("tcp", in.http)
			if err != nil {
				continue // counted as not answered
			}
			fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: a.shop.test\r\nConnection: close\r\n\r\n")
			res := readResponses(c, 1)
			c.Close()
			if len(res.responses) == 1 && res.responses[0].StatusCode == 308 {
				got = append(got, time.Since(start))
			}
		}
	}()
	targets := []struct {
		name       string
		dial       func() net.Conn
		host, path string
		chunked    bool
	}{
		{"stripe webhook, Content-Length", overTLS(webhookHost), webhookHost, "/stripe/webhook", false},
		{"stripe webhook, chunked", overTLS(webhookHost), webhookHost, "/stripe/webhook", true},
		{"acme challenge, Content-Length", plain(in.http), "a.shop.test", "/.well-known/acme-challenge/x", false},
		{"acme challenge, chunked", plain(in.http), "a.shop.test", "/.well-known/acme-challenge/x", true},
		{"gitea hook, Content-Length", plain(in.admin), "localhost", "/hooks/gitea", false},
		{"gitea hook, chunked", plain(in.admin), "localhost", "/hooks/gitea", true},
	}
	for _, tt := range targets {
		t.Run(tt.name, func(t *testing.T) {
			status, sent := postHuge(t, tt.dial(), tt.host, tt.path, size, tt.chunked)
			if status != 413 {
				t.Errorf("status %d after %d bytes sent, want 413", status, sent)
			}
			if sent >= size {
				t.Errorf("all %d bytes were accepted before the answer", sent)
			}
		})
	}
	close(stop)
	got := <-latencies
	slices.Sort(got)
	if len(got) < 10 {
		t.Fatalf("only %d visitor requests answered during the uploads", len(got))
	}
	median, worst := got[len(got)/2], got[len(got)-1]
	t.Logf("visitor requests during the uploads: %d, median %v, worst %v", len(got), median, worst)
	if median > 100*time.Millisecond {
		t.Errorf("visitors waited %v (median) while the bodies arrived", median)
	}
	after := in.rss(t)
	t.Logf("RSS before %d MiB, after %d MiB", before>>20, after>>20)
	if after-before > bound {
		t.Errorf("RSS grew by %d MiB (bound %d MiB)", (after-before)>>20, bound>>20)
	}
	if resp, body, err := in.httpsGet(roots, "a.shop.test", "/", "h2"); err != nil || resp.StatusCode != 200 {
		t.Errorf("after the bodies: %v %q %v", resp, body, err)
	}
}

// postHuge streams a body of size bytes (or until the server answers or
// closes) and returns the status read and the bytes written.
func postHuge(t *testing.T, c net.Conn, host, path string, size int, chunked bool) (int, int) {
	t.Helper()
	defer c.Close()
	framing := fmt.Sprintf("Content-Length: %d", size)
	if chunked {
		framing = "Transfer-Encoding: chunked"
	}
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n%s\r\n\r\n", path, host, framing)
	status := make(chan int, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	piece := make([]byte, 64<<10)
	for i := range piece {
		piece[i] = 'x'
	}
	sent := 0
	_ = c.SetWriteDeadline(time.Now().Add(60 * time.Second))
	for sent < size {
		var err error
		if chunked {
			_, err = fmt.Fprintf(c, "%x\r\n%s\r\n", len(piece), piece)
		} else {
			_, err = c.Write(piece)
		}
		if err != nil {
			break
		}
		sent += len(piece)
		select {
		case s := <-status:
			return s, sent
		default:
		}
	}
	select {
	case s := <-status:
		return s, sent
	case <-time.After(10 * time.Second):
		t.Fatalf("no answer after %d bytes", sent)
	}
	return 0, sent
}
