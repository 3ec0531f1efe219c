package acme

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tollgate-edge/tollgate/internal/certtest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
)

// writeWildcard writes a self-signed certificate for names and its key.
func writeWildcard(t *testing.T, dir string, names ...string) (certFile, keyFile string) {
	t.Helper()
	c, err := certtest.New(90*24*time.Hour, names...)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "wild.crt"), filepath.Join(dir, "wild.key")
	os.WriteFile(certFile, c.CertPEM, 0o600)
	os.WriteFile(keyFile, c.KeyPEM, 0o600)
	return certFile, keyFile
}

func newTestManager(t *testing.T, cfg Config) (*Manager, *prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	m, err := New(cfg, Options{
		Storage: NewBoltStorage(storetest.Open(t)), Hosts: fakeHosts{"shop.example": {"shop", true}},
		PagesDomain: "pages.example", Metrics: reg,
	})
	if m != nil {
		t.Cleanup(func() { m.Close() })
	}
	return m, reg, err
}

func TestNewRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "junk.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing ca_root", Config{CARoot: filepath.Join(dir, "none.pem")}, "acme.ca_root"},
		{"ca_root not PEM", Config{CARoot: notPEM}, "acme.ca_root"},
		{"missing wildcard", Config{WildcardCert: filepath.Join(dir, "none.crt"), WildcardKey: filepath.Join(dir, "none.key")}, "acme.wildcard_cert"},
		{"wildcard not PEM", Config{WildcardCert: notPEM, WildcardKey: notPEM}, "acme.wildcard_cert"},
		{"bad CA URL", Config{CA: "not a url"}, "acme.ca"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := newTestManager(t, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// TestWildcardFromFiles: a configured *.{pages_domain} certificate serves
// every pages host without a look-up or an ACME request; other names are
// still decided, and refused ones fail the handshake cleanly.
func TestWildcardFromFiles(t *testing.T) {
	certFile, keyFile := writeWildcard(t, t.TempDir(), "*.pages.example", "pages.example")
	m, reg, err := newTestManager(t, Config{WildcardCert: certFile, WildcardKey: keyFile, CA: "https://127.0.0.1:1/dir"})
	if err != nil {
		t.Fatal(err)
	}
	get := m.TLSConfig().GetCertificate
	c, err := get(&tls.ClientHelloInfo{ServerName: "anyone.pages.example"})
	if err != nil || c == nil || c.Leaf == nil || c.Leaf.DNSNames[0] != "*.pages.example" {
		t.Fatalf("pages host: %v %v", c, err)
	}
	for _, sni := range []string{"", "10.0.0.1", "unknown.example", "a.b.pages.example"} {
		if c, err := get(&tls.ClientHelloInfo{ServerName: sni}); err == nil || c != nil || !errors.Is(err, ErrRefused) {
			t.Errorf("SNI %q: %v %v, want a refusal", sni, c, err)
		}
	}
	for reason, want := range map[string]float64{reasonNoSNI: 1, reasonIP: 1, reasonUnknownHost: 2} {
		if got := testutil.ToFloat64(m.m.refusals.WithLabelValues(reason)); got != want {
			t.Errorf("refusals{reason=%s} %v, want %v", reason, got, want)
		}
	}
	certs, err := m.Certs(t.Context())
	if err != nil || len(certs) != 1 || certs[0].Managed || !strings.HasPrefix(certs[0].Issuer, "certtest ") {
		t.Fatalf("certs: %+v %v", certs, err)
	}
	if n, err := testutil.GatherAndCount(reg, "tollgate_acme_ondemand_refusals_total"); err != nil || n != len(reasons) {
		t.Fatalf("refusal series %d %v, want one per reason", n, err)
	}
}

// TestFailureBackoff: a name whose certificate could not be obtained is
// refused (handshakes and certmagic's retries alike) for FailureBackoff,
// doubling per consecutive failure, and forgiven on success. Renewal
// failures never refuse a name.
func TestFailureBackoff(t *testing.T) {
	m, _, err := newTestManager(t, Config{CA: "https://127.0.0.1:1/dir", FailureBackoff: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	m.now = func() time.Time { return now }
	ctx := t.Context()
	refusedNow := func() bool {
		err := m.onEvent(ctx, "cert_obtaining", map[string]any{"identifier": "shop.example"})
		var noRetry certmagic.ErrNoRetry
		return errors.As(err, &noRetry) && errors.Is(err, ErrRefused)
	}
	fail := func(renewal bool) {
		m.onEvent(ctx, "cert_failed", map[string]any{"identifier": "shop.example", "renewal": renewal, "error": errors.New("validation failed")})
	}
	fail(true)
	if m.backingOff("shop.example") {
		t.Fatal("a renewal failure refused the name")
	}
	fail(false)
	if !refusedNow() {
		t.Fatal("cert_obtaining right after a failure was not refused")
	}
	if _, err := m.getCertificate(&tls.ClientHelloInfo{ServerName: "shop.example"}); !errors.Is(err, ErrRefused) {
		t.Fatalf("handshake during the backoff: %v", err)
	}
	now = now.Add(61 * time.Second)
	if m.backingOff("shop.example") {
		t.Fatal("still refused after the first backoff")
	}
	fail(false) // second consecutive failure: 2 minutes
	now = now.Add(90 * time.Second)
	if !m.backingOff("shop.example") {
		t.Fatal("second backoff did not double")
	}
	now = now.Add(31 * time.Second)
	if m.backingOff("shop.example") {
		t.Fatal("refused past the doubled backoff")
	}
	m.onEvent(ctx, "cert_obtained", map[string]any{"identifier": "shop.example"})
	fail(false)
	now = now.Add(61 * time.Second)
	if m.backingOff("shop.example") {
		t.Fatal("success did not reset the backoff")
	}
	certs, err := m.Certs(ctx)
	if err != nil || len(certs) != 1 || certs[0].LastError != "validation failed" {
		t.Fatalf("certs: %+v %v", certs, err)
	}
}
