package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// tlsTestName is the SNI of the handshakes below: a pages host, served from
// the wildcard certificate without any look-up or CA.
const tlsTestName = "a.pages.example"

// TestTLSConfigOffersAEADWithForwardSecrecyOnly handshakes with the public
// listener's configuration (Manager.TLSConfig), once with an ECDSA and once
// with an RSA certificate, from a Go client offering one TLS 1.2 cipher
// suite at a time, every suite crypto/tls implements: exactly the ECDHE
// suites with AES-GCM or ChaCha20-Poly1305 for the certificate's key type
// are accepted; every CBC suite (ECDHE-ECDSA-AES128-SHA, AES128-SHA, ...)
// and every suite without ECDHE fails the handshake.
func TestTLSConfigOffersAEADWithForwardSecrecyOnly(t *testing.T) {
	allowed := map[string][]uint16{
		"ecdsa": {tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256},
		"rsa": {tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256},
	}
	var tls12 []*tls.CipherSuite
	for _, cs := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		if slices.Contains(cs.SupportedVersions, tls.VersionTLS12) {
			tls12 = append(tls12, cs)
		}
	}
	if len(tls12) < 20 {
		t.Fatalf("crypto/tls lists %d TLS 1.2 suites; the test expects all of them, CBC ones included", len(tls12))
	}
	for _, key := range []string{"ecdsa", "rsa"} {
		t.Run(key, func(t *testing.T) {
			addr, roots := serveManagerTLS(t, key)
			for _, cs := range tls12 {
				st, err := handshake(addr, &tls.Config{RootCAs: roots, ServerName: tlsTestName,
					MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{cs.ID}})
				want := slices.Contains(allowed[key], cs.ID)
				switch {
				case want && err != nil:
					t.Errorf("%s refused: %v", cs.Name, err)
				case want && st.CipherSuite != cs.ID:
					t.Errorf("%s offered, %s negotiated", cs.Name, tls.CipherSuiteName(st.CipherSuite))
				case !want && err == nil:
					t.Errorf("%s accepted", cs.Name)
				}
			}
		})
	}
}

// TestTLSConfigKeyExchanges: the listener accepts exactly X25519MLKEM768,
// X25519 and P-256, in TLS 1.3 and (the non-hybrid ones) TLS 1.2, from a
// Go client offering one key exchange at a time, every one crypto/tls
// implements.
func TestTLSConfigKeyExchanges(t *testing.T) {
	addr, roots := serveManagerTLS(t, "ecdsa")
	allowed := []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256}
	for _, tc := range []struct {
		version uint16
		curves  []tls.CurveID
	}{
		{tls.VersionTLS13, []tls.CurveID{tls.X25519MLKEM768, tls.SecP256r1MLKEM768, tls.SecP384r1MLKEM1024,
			tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}},
		{tls.VersionTLS12, []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}},
	} {
		for _, cv := range tc.curves {
			st, err := handshake(addr, &tls.Config{RootCAs: roots, ServerName: tlsTestName,
				MinVersion: tc.version, MaxVersion: tc.version, CurvePreferences: []tls.CurveID{cv}})
			want := slices.Contains(allowed, cv)
			switch {
			case want && err != nil:
				t.Errorf("%s %v refused: %v", tls.VersionName(tc.version), cv, err)
			case want && st.CurveID != cv:
				t.Errorf("%s %v offered, %v negotiated", tls.VersionName(tc.version), cv, st.CurveID)
			case !want && err == nil:
				t.Errorf("%s %v accepted", tls.VersionName(tc.version), cv)
			}
		}
	}
}

// TestTLSConfigWithOpenSSL probes the listener with openssl s_client, as
// testssl.sh does: the CBC suites and the suites without ECDHE that it
// reported (AES128-SHA, AES256-SHA, ECDHE-ECDSA-AES128-SHA, ...) fail the
// handshake, the AEAD ECDHE suites succeed, and of the groups OpenSSL
// offers only X25519 and P-256 are accepted. Each refusal is checked
// against a control listener with the same certificate that enables every
// suite and group crypto/tls implements, so it is tollgate's configuration
// that refuses, not the client.
func TestTLSConfigWithOpenSSL(t *testing.T) {
	if testing.Short() {
		t.Skip("needs openssl; -short")
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl not found: run `make openssl` (Debian package openssl)")
	}
	type probe struct {
		args []string // after -connect and -servername
		want bool
	}
	cases := map[string][]probe{
		"ecdsa": {
			{[]string{"-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"}, true},
			{[]string{"-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"}, true},
			{[]string{"-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"}, true},
			{[]string{"-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"}, false},
			{[]string{"-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA"}, false},
			{[]string{"-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"}, false},
			{[]string{"-tls1_3", "-groups", "X25519"}, true},
			{[]string{"-tls1_3", "-groups", "P-256"}, true},
			{[]string{"-tls1_3", "-groups", "P-384"}, false},
			{[]string{"-tls1_3", "-groups", "P-521"}, false},
		},
		"rsa": {
			{[]string{"-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"}, true},
			{[]string{"-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"}, true},
			{[]string{"-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"}, true},
			{[]string{"-tls1_2", "-cipher", "AES128-SHA"}, false},
			{[]string{"-tls1_2", "-cipher", "AES256-SHA"}, false},
			{[]string{"-tls1_2", "-cipher", "AES128-GCM-SHA256"}, false},
			{[]string{"-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"}, false},
			{[]string{"-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA"}, false},
			// In TLS 1.2 OpenSSL's groups also bound an ECDSA certificate's
			// curve: the TLS 1.2 key exchanges are probed with RSA.
			{[]string{"-tls1_2", "-groups", "X25519"}, true},
			{[]string{"-tls1_2", "-groups", "P-256"}, true},
			{[]string{"-tls1_2", "-groups", "P-384"}, false},
			{[]string{"-tls1_2", "-groups", "P-521"}, false},
		},
	}
	for _, key := range []string{"ecdsa", "rsa"} {
		t.Run(key, func(t *testing.T) {
			addr, _ := serveManagerTLS(t, key)
			control := serveControlTLS(t, key)
			for _, p := range cases[key] {
				got, out := sclient(t, openssl, addr, p.args)
				if got != p.want {
					t.Errorf("openssl s_client %s: handshake %v, want %v\n%s", strings.Join(p.args, " "), got, p.want, out)
				}
				if !p.want {
					if ok, out := sclient(t, openssl, control, p.args); !ok {
						t.Errorf("control listener refused openssl s_client %s: the probe proves nothing\n%s", strings.Join(p.args, " "), out)
					}
				}
			}
		})
	}
}

// sclient runs one openssl s_client handshake against addr and reports
// whether it completed.
func sclient(t *testing.T, openssl, addr string, args []string) (bool, string) {
	t.Helper()
	cmd := exec.Command(openssl, append([]string{"s_client", "-brief", "-connect", addr, "-servername", tlsTestName}, args...)...)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running openssl: %v", err)
	}
	return err == nil && strings.Contains(string(out), "CONNECTION ESTABLISHED"), string(out)
}

// handshake completes one TLS handshake with addr and returns its state.
func handshake(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	d := &tls.Dialer{Config: cfg, NetDialer: &net.Dialer{Timeout: 10 * time.Second}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState(), nil
}

// serveManagerTLS serves Manager.TLSConfig on a loopback port, with a
// wildcard certificate for *.pages.example of the given key type ("ecdsa"
// or "rsa"), and returns the address and the roots that trust it.
func serveManagerTLS(t *testing.T, key string) (string, *x509.CertPool) {
	t.Helper()
	certFile, keyFile, roots := writeTestCert(t, key)
	m, _, err := newTestManager(t, Config{WildcardCert: certFile, WildcardKey: keyFile, CA: "https://127.0.0.1:1/dir"})
	if err != nil {
		t.Fatal(err)
	}
	return serveTLS(t, m.TLSConfig()), roots
}

// serveControlTLS serves the same kind of certificate with every TLS 1.2
// suite and every key exchange crypto/tls implements.
func serveControlTLS(t *testing.T, key string) string {
	t.Helper()
	certFile, keyFile, _ := writeTestCert(t, key)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var suites []uint16
	for _, cs := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		suites = append(suites, cs.ID)
	}
	return serveTLS(t, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, CipherSuites: suites,
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.SecP256r1MLKEM768, tls.SecP384r1MLKEM1024,
			tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}})
}

// serveTLS accepts connections on a loopback port and runs the handshake
// of each, until the test ends.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				tc := tls.Server(c, cfg)
				if tc.Handshake() == nil {
					tc.Close() // close_notify: openssl reads it as a clean end
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// writeTestCert writes a self-signed certificate for *.pages.example with
// an ECDSA P-256 or RSA 2048 key, and returns its files and a pool trusting
// it.
func writeTestCert(t *testing.T, key string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	var priv any
	var pub any
	switch key {
	case "ecdsa":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	default:
		t.Fatalf("key type %q", key)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "*.pages.example"},
		DNSNames:     []string{"*.pages.example", "pages.example"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, key+".crt"), filepath.Join(dir, key+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(leaf)
	return certFile, keyFile, roots
}
