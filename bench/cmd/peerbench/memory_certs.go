package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/tollgate-edge/tollgate/acme"
	"github.com/tollgate-edge/tollgate/store"
)

// The memory-certs scenario: every server holds one certificate for each of
// the memory scenario's extra sites, the same certificates for all (ECDSA
// P-256, signed by one root peerbench makes). nginx and Caddy read them from
// PEM files named in their configs; tollgate finds them in its certificate
// storage (written into its bbolt file before it starts, where certmagic
// would have put certificates it obtained) and caches each at the first
// handshake for its name, as it does in production.

// memoryCertsCA is the ACME directory of the memory-certs tollgate. Nothing
// listens there: every certificate it serves is already in its storage, so
// a contact with the CA would be a bug, and fails.
const memoryCertsCA = "https://127.0.0.1:9/directory"

// memoryTouchWorkers is how many TLS clients touch the extra hosts at once.
const memoryTouchWorkers = 4

// certSet is n certificates for extraHost(0..n-1), as PEM files in Dir.
type certSet struct {
	Dir   string
	N     int
	roots *x509.CertPool
}

func (c *certSet) certFile(i int) string { return filepath.Join(c.Dir, fmt.Sprintf("s%05d.crt", i)) }
func (c *certSet) keyFile(i int) string  { return filepath.Join(c.Dir, fmt.Sprintf("s%05d.key", i)) }

// makeCerts writes a root and n leaf certificates with their keys under dir.
func makeCerts(dir string, n int) (*certSet, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "peerbench memory-certs root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, err
	}
	set := &certSet{Dir: dir, N: n, roots: x509.NewCertPool()}
	set.roots.AddCert(root)
	for i := range n {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i) + 2), Subject: pkix.Name{CommonName: extraHost(i)},
			DNSNames:  []string{extraHost(i)},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, rootKey)
		if err != nil {
			return nil, err
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(set.certFile(i), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(set.keyFile(i), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// seed writes every certificate into the bbolt file at dbPath where
// certmagic keeps what it obtained from memoryCertsCA: the certificate, its
// key and its metadata under certificates/{issuer}/{name}/. tollgate must
// not be running (bbolt locks the file).
func (c *certSet) seed(ctx context.Context, dbPath string) error {
	st, err := store.Open(store.Config{Path: dbPath, OpenTimeout: time.Second})
	if err != nil {
		return fmt.Errorf("seeding certificates: %w", err)
	}
	defer st.Close()
	storage := acme.NewBoltStorage(st)
	issuer := (&certmagic.ACMEIssuer{CA: memoryCertsCA}).IssuerKey()
	for i := range c.N {
		name := extraHost(i)
		crt, err := os.ReadFile(c.certFile(i))
		if err != nil {
			return err
		}
		key, err := os.ReadFile(c.keyFile(i))
		if err != nil {
			return err
		}
		meta, err := json.Marshal(certmagic.CertificateResource{SANs: []string{name}})
		if err != nil {
			return err
		}
		for _, kv := range []struct {
			key string
			val []byte
		}{
			{certmagic.StorageKeys.SiteCert(issuer, name), crt},
			{certmagic.StorageKeys.SitePrivateKey(issuer, name), key},
			{certmagic.StorageKeys.SiteMeta(issuer, name), meta},
		} {
			if err := storage.Store(ctx, kv.key, kv.val); err != nil {
				return fmt.Errorf("seeding certificates: %s: %w", kv.key, err)
			}
		}
	}
	return nil
}

// runMemoryCerts measures tollgate, nginx and Caddy each holding the n
// certificates of certs (see the top of this file).
func (b *bench) runMemoryCerts(ctx context.Context, sc scenario) scenarioResult {
	res := scenarioResult{ID: sc.ID, Title: sc.Title, Status: statusMeasured, Base: srvTollgate}
	n := b.cfg.Sites
	t0 := time.Now()
	certs, err := makeCerts(filepath.Join(b.tmp, "memory-certs"), n)
	if err != nil {
		res.Status, res.Note = statusFailed, "making certificates: "+err.Error()
		b.logf("%s: %s", sc.ID, res.Note)
		return res
	}
	b.logf("%s: %d certificates made in %s", sc.ID, n, time.Since(t0).Round(time.Millisecond))
	res.Memory = []memoryResult{b.memoryCertsTollgate(ctx, certs), b.memoryCertsPeer(ctx, srvNginx, certs),
		b.memoryCertsPeer(ctx, srvCaddy, certs)}
	b.compareMemory(sc, res.Memory)
	res.Note = "RSS is VmRSS: tollgate's includes the pages of its bbolt file it read the certificates from (mapped, shared, reclaimable)"
	return res
}

// memoryCertsTollgate starts a tollgate with HTTPS whose store already holds
// the certificates, registers the n sites, then handshakes with each name.
func (b *bench) memoryCertsTollgate(ctx context.Context, certs *certSet) memoryResult {
	m := memoryResult{Server: srvTollgate, Sites: certs.N}
	dir := filepath.Join(b.tmp, "memory-certs-tollgate")
	t0 := time.Now()
	srv, err := startTollgate(ctx, b.ps, b.cpu, b.cfg.Tollgate, "tollgate-memory-certs", dir, b.site, tollgateOptions{Certs: certs})
	if err != nil {
		m.Problems = append(m.Problems, err.Error())
		return m
	}
	defer srv.proc.stop()
	b.logf("memory-certs tollgate: certificates stored and started in %s", time.Since(t0).Round(time.Millisecond))
	m.BaseRSS = b.rss(&m, srv)
	start := time.Now()
	if err := srv.admin.registerSites(ctx, b.site.Dir, certs.N); err != nil {
		m.Problems = append(m.Problems, "registering: "+err.Error())
		return m
	}
	m.Setup = time.Since(start)
	m.SitesRSS = b.rss(&m, srv)
	b.touchTLS(ctx, &m, srv, certs)
	return m
}

// memoryCertsPeer is memoryPeer with a certificate per extra site: the base
// figure from the plain base config, then a fresh process configured with
// the n sites over HTTPS.
func (b *bench) memoryCertsPeer(ctx context.Context, name string, certs *certSet) memoryResult {
	return b.measurePeer(ctx, name, "memory-certs", certs.N,
		func(spec *siteSpec) { spec.ExtraCerts = certs },
		func(m *memoryResult, srv *server) { b.touchTLS(ctx, m, srv, certs) })
}

// touchTLS makes one new TLS connection per extra host (SNI and Host the
// host's name, the certificate verified against certs' root only) with one
// GET / each, then reads RSS.
func (b *bench) touchTLS(ctx context.Context, m *memoryResult, srv *server, certs *certSet) {
	if srv.TLSAddr == "" {
		m.Problems = append(m.Problems, srv.Name+": no HTTPS listener")
		return
	}
	next := make(chan int)
	errs := make(chan error, memoryTouchWorkers)
	var wg sync.WaitGroup
	for range memoryTouchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := getOverTLS(ctx, srv.TLSAddr, extraHost(i), certs.roots); err != nil {
					errs <- fmt.Errorf("touching %s over TLS: %w", extraHost(i), err)
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := range certs.N {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	if err != nil {
		m.Problems = append(m.Problems, err.Error())
		return
	}
	m.TouchedRSS = b.rss(m, srv)
}

// getOverTLS sends GET / to host on a new TLS connection to addr and wants
// 200 with the site's index.html.
func getOverTLS(ctx context.Context, addr, host string, roots *x509.CertPool) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: &tls.Config{ServerName: host, RootCAs: roots, NextProtos: []string{"http/1.1"}}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(deadline)
	}
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return err
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("status %d", resp.StatusCode)
	case len(body) != len(indexHTML):
		return fmt.Errorf("%d body bytes, want %d", len(body), len(indexHTML))
	}
	return nil
}

// compareMemory fills the ratios of the peers' rows (tollgate ÷ peer) and
// logs every row.
func (b *bench) compareMemory(sc scenario, rows []memoryResult) {
	base := rows[0]
	for i := range rows[1:] {
		m := &rows[i+1]
		m.SitesRatio = ratioOf(base.SitesRSS, m.SitesRSS)
		m.TouchedRatio = ratioOf(base.TouchedRSS, m.TouchedRSS)
	}
	for _, m := range rows {
		b.logf("%s %-8s base %s, %d sites %s, touched %s (setup %s) %v", sc.ID, m.Server,
			fmtBytes(m.BaseRSS), m.Sites, fmtBytes(m.SitesRSS), fmtBytes(m.TouchedRSS), m.Setup.Round(time.Millisecond), m.Problems)
	}
}
