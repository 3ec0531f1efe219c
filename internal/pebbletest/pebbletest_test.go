package pebbletest

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/tollgate-edge/tollgate/internal/dnstest"
)

// newCertmagic returns a certmagic Config with its own cache and storage in a
// temporary directory, issuing from c with the issuer settings of tmpl.
func newCertmagic(t *testing.T, c *CA, tmpl certmagic.ACMEIssuer) (*certmagic.Config, *certmagic.ACMEIssuer) {
	t.Helper()
	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		Logger:           zap.NewNop(),
	})
	t.Cleanup(cache.Stop)
	cfg = certmagic.New(cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: t.TempDir()},
		Logger:  zap.NewNop(),
	})
	tmpl.CA = c.DirectoryURL
	tmpl.TestCA = c.DirectoryURL
	tmpl.TrustedRoots = c.APIRoots()
	tmpl.Agreed = true
	tmpl.Email = "t@example.test"
	tmpl.Logger = zap.NewNop()
	issuer := certmagic.NewACMEIssuer(cfg, tmpl)
	cfg.Issuers = []certmagic.Issuer{issuer}
	return cfg, issuer
}

// obtain gets a certificate for name and checks that it chains to the CA's
// issuing root, and to no other root.
func obtain(t *testing.T, c *CA, cfg *certmagic.Config, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := cfg.ObtainCertSync(ctx, name); err != nil {
		t.Fatalf("ObtainCertSync(%q): %v", name, err)
	}
	cert, err := cfg.CacheManagedCertificate(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	chain := cert.Certificate.Certificate
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	intermediates := x509.NewCertPool()
	for _, der := range chain[1:] {
		ic, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		intermediates.AddCert(ic)
	}
	roots, err := c.IssuerRoots()
	if err != nil {
		t.Fatal(err)
	}
	opts := x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: intermediates}
	if _, err := leaf.Verify(opts); err != nil {
		t.Errorf("leaf does not verify against IssuerRoots: %v", err)
	}
	opts.Roots = c.APIRoots()
	if _, err := leaf.Verify(opts); err == nil {
		t.Error("leaf verifies against APIRoots; want only IssuerRoots to be trusted")
	}
}

func TestObtainAlwaysValid(t *testing.T) {
	c := Start(t, Options{AlwaysValid: true})
	if c.Requests() != 0 || c.Orders() != 0 || c.Certificates() != 0 {
		t.Fatalf("fresh CA counts requests=%d orders=%d certificates=%d, want 0", c.Requests(), c.Orders(), c.Certificates())
	}
	cfg, _ := newCertmagic(t, c, certmagic.ACMEIssuer{})
	obtain(t, c, cfg, "a.test")

	if got := c.Orders(); got != 1 {
		t.Errorf("Orders() = %d, want 1", got)
	}
	if got := c.Certificates(); got != 1 {
		t.Errorf("Certificates() = %d, want 1", got)
	}
	t.Logf("requests=%d orders=%d certificates=%d", c.Requests(), c.Orders(), c.Certificates())
	if got := c.Requests(); got < 6 {
		t.Errorf("Requests() = %d, want at least directory, nonce, account, order, finalize, certificate", got)
	}
}

func TestObtainHTTP01(t *testing.T) {
	dns := dnstest.Start(t) // every name is 127.0.0.1

	// The server under test: answers HTTP-01 on a loopback port of its own.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port

	c := Start(t, Options{HTTPPort: port, Resolver: dns.Addr()})
	cfg, issuer := newCertmagic(t, c, certmagic.ACMEIssuer{
		DisableTLSALPNChallenge: true,
		// certmagic finds this port taken, connects to it, and so assumes
		// our server answers the challenges (solvers.go robustTryListen).
		ListenHost:  "127.0.0.1",
		AltHTTPPort: port,
	})
	var challenges atomic.Int64
	challengeHandler := issuer.HTTPChallengeHandler(http.NotFoundHandler())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") && r.Host == "a.test:"+strconv.Itoa(port) {
			challenges.Add(1)
		}
		challengeHandler.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	obtain(t, c, cfg, "a.test")

	t.Logf("challenge fetches=%d dns queries=%d requests=%d", challenges.Load(), dns.Queries(), c.Requests())
	if got := challenges.Load(); got == 0 {
		t.Error("Pebble never fetched the HTTP-01 challenge from the server")
	}
	if dns.Queries() == 0 {
		t.Error("Pebble never asked the test DNS server")
	}
	if got := c.Orders(); got != 1 {
		t.Errorf("Orders() = %d, want 1", got)
	}
	if got := c.Certificates(); got != 1 {
		t.Errorf("Certificates() = %d, want 1", got)
	}
}

func TestAPIRootsFile(t *testing.T) {
	c := Start(t, Options{AlwaysValid: true})
	b, err := os.ReadFile(c.APIRootsFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(c.APIRootsPEM) {
		t.Error("APIRootsFile does not hold APIRootsPEM")
	}
	if len(c.IssuerRootsPEM()) == 0 {
		t.Error("IssuerRootsPEM is empty")
	}
	c.Close()
	c.Close() // idempotent
	if _, err := os.Stat(c.APIRootsFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("APIRootsFile after Close: %v, want it removed", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want []string // substrings of the error, none for valid
	}{
		{"zero", Options{}, nil},
		{"ports", Options{HTTPPort: 8080, TLSPort: 8443, Resolver: "127.0.0.1:53"}, nil},
		{"bad", Options{HTTPPort: -1, TLSPort: 70000, Resolver: "nope", Validity: time.Millisecond},
			[]string{"HTTPPort", "TLSPort", "Resolver", "Validity"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to name %s", err, w)
				}
			}
		})
	}
}
