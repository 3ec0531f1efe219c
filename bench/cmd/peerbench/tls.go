package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/tollgate-edge/tollgate/internal/pebbletest"
	"github.com/tollgate-edge/tollgate/internal/proctest"
)

// The HTTPS scenarios: every server serves hostTLS from the static site
// directory with a certificate from one Pebble CA that runs inside
// peerbench. tollgate-tls gets its own on demand, at the first handshake
// (the warm-up request, never a measured one); nginx and Caddy get theirs
// from peerbench, obtained with certmagic from the same CA and written to
// PEM files. All are ECDSA P-256 (certmagic's default key type), which the
// check verifies.
const (
	// hostTLS is the name every HTTPS client sends as SNI and Host while
	// connecting to 127.0.0.1: it resolves nowhere, and must not.
	hostTLS = "bench.test"
	// srvTollgateTLS is tollgate with [server] https and [acme] on. It is an
	// instance of its own because its plain-HTTP listener then redirects to
	// HTTPS (308), which the plain scenarios must not measure.
	srvTollgateTLS = "tollgate-tls"
	// tlsIssueTimeout bounds tollgate's on-demand issuance (about a second
	// with Pebble) and peerbench's own.
	tlsIssueTimeout = 60 * time.Second
	// wantTLSVersion is what every server is configured to negotiate; a run
	// on anything else is not comparable and is marked INVALID.
	wantTLSVersion = "TLSv1.3"
)

var tlsServers = []string{srvTollgateTLS, srvNginx, srvCaddy}

// tlsSpec is the CA and the peers' certificate of the HTTPS scenarios.
type tlsSpec struct {
	CA *pebbletest.CA
	// Roots are the CA's issuing roots: the checks trust these only.
	Roots *x509.CertPool
	// CertFile (leaf and intermediates) and KeyFile are the PEM files of
	// hostTLS's certificate for nginx and Caddy.
	CertFile, KeyFile string
}

// startTLS starts the Pebble CA and obtains hostTLS's certificate for the
// peers under dir. On error nothing is left running.
func startTLS(ctx context.Context, dir string) (_ *tlsSpec, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := pebbletest.New(pebbletest.Options{AlwaysValid: true})
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	defer func() {
		if err != nil {
			ca.Close()
		}
	}()
	roots, err := ca.IssuerRoots()
	if err != nil {
		return nil, err
	}
	t := &tlsSpec{CA: ca, Roots: roots,
		CertFile: filepath.Join(dir, hostTLS+".crt"), KeyFile: filepath.Join(dir, hostTLS+".key")}
	cert, err := obtainCert(ctx, ca, filepath.Join(dir, "certmagic"), hostTLS)
	if err != nil {
		return nil, fmt.Errorf("certificate for %s: %w", hostTLS, err)
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	key, err := certmagic.PEMEncodePrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(t.CertFile, chain, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(t.KeyFile, key, 0o600); err != nil {
		return nil, err
	}
	return t, nil
}

// Close stops the CA; safe on nil.
func (t *tlsSpec) Close() {
	if t != nil {
		t.CA.Close()
	}
}

// obtainCert gets a certificate for name from ca with certmagic's defaults
// (ECDSA P-256), storing under dir. Pebble accepts every challenge
// (AlwaysValid) but certmagic still starts its HTTP-01 solver, so it is put
// on a free loopback port rather than :80.
func obtainCert(ctx context.Context, ca *pebbletest.CA, dir, name string) (tls.Certificate, error) {
	port, err := proctest.FreePort()
	if err != nil {
		return tls.Certificate{}, err
	}
	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
		Logger:           zap.NewNop(),
	})
	defer cache.Stop()
	cfg = certmagic.New(cache, certmagic.Config{Storage: &certmagic.FileStorage{Path: dir}, Logger: zap.NewNop()})
	cfg.Issuers = []certmagic.Issuer{certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{
		CA: ca.DirectoryURL, TestCA: ca.DirectoryURL, TrustedRoots: ca.APIRoots(), Agreed: true,
		Email: "peerbench@example.test", ListenHost: "127.0.0.1", AltHTTPPort: port,
		DisableTLSALPNChallenge: true, Logger: zap.NewNop(),
	})}
	ctx, cancel := context.WithTimeout(ctx, tlsIssueTimeout)
	defer cancel()
	if err := cfg.ObtainCertSync(ctx, name); err != nil {
		return tls.Certificate{}, err
	}
	c, err := cfg.CacheManagedCertificate(ctx, name)
	if err != nil {
		return tls.Certificate{}, err
	}
	return c.Certificate, nil
}

// httpsClient fetches from s's HTTPS listener whatever the URL's host: SNI
// and Host are hostTLS, only the CA's roots are trusted, ALPN offers proto
// alone ("h2" or "http/1.1"), one new connection per request.
func (s *server) httpsClient(proto string) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:    &tls.Config{RootCAs: s.tls.Roots, ServerName: hostTLS, NextProtos: []string{proto}},
		ForceAttemptHTTP2:  proto == "h2",
		DisableKeepAlives:  true,
		DisableCompression: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, s.TLSAddr)
		},
	}
	if proto != "h2" {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: tlsIssueTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// checkTLS sends r once over HTTPS and checks the answer as check does, and
// the connection: protocol r.Proto, a certificate for hostTLS that chains to
// the CA's roots (the client verified it) with an ECDSA P-256 key. It keeps
// the leaf in s.leaf for the handshake client.
func checkTLS(ctx context.Context, s *server, r request) error {
	if s.TLSAddr == "" || s.tls == nil {
		return fmt.Errorf("%s has no HTTPS listener", s.Name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+hostTLS+r.Path, nil)
	if err != nil {
		return err
	}
	resp, err := s.httpsClient(r.Proto).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return err
	case resp.StatusCode != r.WantStatus:
		return fmt.Errorf("GET https://%s%s: status %d, want %d", hostTLS, r.Path, resp.StatusCode, r.WantStatus)
	case len(body) != r.WantBytes:
		return fmt.Errorf("GET https://%s%s: %d body bytes, want %d", hostTLS, r.Path, len(body), r.WantBytes)
	case resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0:
		return errors.New("no TLS connection state")
	case resp.TLS.NegotiatedProtocol != r.Proto:
		return fmt.Errorf("ALPN %q, want %q", resp.TLS.NegotiatedProtocol, r.Proto)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		return fmt.Errorf("certificate key %s, want ECDSA P-256", leaf.PublicKeyAlgorithm)
	}
	s.leaf = leaf.Raw
	return nil
}

// waitTLSReady polls GET https://hostTLS/index.html on s until it answers
// 200, the process exits, or timeout passes. For tollgate-tls the first
// request is the one that obtains the certificate.
func waitTLSReady(ctx context.Context, s *server, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	r := request{Path: "/index.html", Host: hostTLS, Proto: "h2", WantStatus: http.StatusOK, WantBytes: len(indexHTML)}
	for {
		err := checkTLS(ctx, s, r)
		if err == nil {
			return nil
		}
		if s.proc.exited() {
			return fmt.Errorf("%s exited before HTTPS was ready (%v); log:\n%s", s.Name, s.proc.waitErr, s.proc.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: HTTPS not ready on %s (SNI %s) after %s: %v; log:\n%s",
				s.Name, s.TLSAddr, hostTLS, timeout, err, s.proc.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tlsProblems says why a run over TLS is not comparable with the others:
// another protocol version than every server is configured for, or another
// application protocol than the scenario measures.
func tlsProblems(r runResult, wantALPN string) []string {
	if r.TLS == nil {
		return []string{"the client reported no TLS connection details"}
	}
	var p []string
	if r.TLS.Protocol != wantTLSVersion {
		p = append(p, fmt.Sprintf("negotiated %s, want %s", r.TLS.Protocol, wantTLSVersion))
	}
	if r.TLS.ALPN != wantALPN {
		p = append(p, fmt.Sprintf("ALPN %q, want %q", r.TLS.ALPN, wantALPN))
	}
	return p
}
