// Package pebbletest runs Pebble, Let's Encrypt's test ACME CA, in-process on
// loopback, for tests and for benchmark programs.
//
// The ACME API is served over HTTPS on 127.0.0.1 with a certificate made for
// this CA alone (APIRootsPEM, APIRootsFile, APIRoots); the certificates Pebble
// issues chain to a root Pebble makes at start (IssuerRoots, IssuerRootsPEM).
// Orders, Certificates and Requests count what the CA received, so a test can
// assert that no ACME request happened.
//
// Pebble reads its settings from environment variables when its parts are
// built. New sets them for that moment only, under a package mutex, and
// restores them afterwards: the environment is process-wide, so code that
// reads PEBBLE_* variables concurrently with New may see the values set here.
package pebbletest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/tollgate-edge/tollgate/internal/certtest"
)

// Paths of Pebble's WFE that are counted. They are unexported constants in
// github.com/letsencrypt/pebble/v2/wfe (newOrderPath, orderFinalizePath);
// the new-order one is also announced by the directory.
const (
	newOrderPath      = "/order-plz"
	orderFinalizePath = "/finalize-order/"
)

// Options configures a CA. The zero value is a CA that really validates
// challenges on ports 80 and 443 of the address the system resolver gives.
type Options struct {
	// AlwaysValid makes Pebble accept every challenge without contacting the
	// validated host (Pebble's PEBBLE_VA_ALWAYS_VALID). Default false.
	AlwaysValid bool

	// HTTPPort is the port Pebble connects to on the validated host for
	// HTTP-01, i.e. where the server under test answers
	// /.well-known/acme-challenge/. Default 80. Unused when AlwaysValid.
	HTTPPort int

	// TLSPort is the port Pebble connects to on the validated host for
	// TLS-ALPN-01. Default 443. Unused when AlwaysValid.
	TLSPort int

	// Resolver is host:port of a DNS server answering over UDP (such as
	// dnstest.Server.Addr()) through which Pebble resolves the names it
	// validates. Pebble queries its resolver over TCP only, so the CA runs a
	// loopback TCP-to-UDP relay in front of it. Default "": the system
	// resolver. Unused when AlwaysValid.
	Resolver string

	// Validity is the lifetime of issued certificates, rounded down to whole
	// seconds. Default 0: Pebble's default of 90 days.
	Validity time.Duration

	// Log receives Pebble's log lines (several per ACME request). Default
	// nil: they are discarded.
	Log io.Writer
}

// Validate reports every problem with o. It is fast and does no I/O.
func (o Options) Validate() error {
	var errs []error
	if o.HTTPPort < 0 || o.HTTPPort > 65535 {
		errs = append(errs, fmt.Errorf("pebbletest: HTTPPort %d is not a port number", o.HTTPPort))
	}
	if o.TLSPort < 0 || o.TLSPort > 65535 {
		errs = append(errs, fmt.Errorf("pebbletest: TLSPort %d is not a port number", o.TLSPort))
	}
	if o.Resolver != "" {
		if _, _, err := net.SplitHostPort(o.Resolver); err != nil {
			errs = append(errs, fmt.Errorf("pebbletest: Resolver %q is not host:port: %w", o.Resolver, err))
		}
	}
	if o.Validity != 0 && o.Validity < time.Second {
		errs = append(errs, fmt.Errorf("pebbletest: Validity %s is shorter than one second", o.Validity))
	}
	return errors.Join(errs...)
}

// CA is a running Pebble. Its methods are safe for concurrent use.
type CA struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:port/dir.
	DirectoryURL string
	// APIRootsPEM is the self-signed certificate the ACME API serves, the
	// one an ACME client must trust to talk to this CA.
	APIRootsPEM []byte
	// APIRootsFile is a file holding APIRootsPEM, removed by Close.
	APIRootsFile string

	issuerRootsPEM []byte
	srv            *httptest.Server
	relay          *dnsRelay
	dir            string
	requests       atomic.Int64
	orders         atomic.Int64
	certificates   atomic.Int64
	closeOnce      sync.Once
}

// envMu serializes New's changes to the process environment.
var envMu sync.Mutex

// New starts a CA. The caller must Close it.
//
// Pebble is built with PEBBLE_VA_NOSLEEP=1 (no random validation delays),
// PEBBLE_WFE_NONCEREJECT=0 (no deliberately rejected nonces, so the request
// counts are deterministic), PEBBLE_AUTHZREUSE=0 (every order gets new
// authorizations and so new challenges) and PEBBLE_VA_ALWAYS_VALID set from
// opts.AlwaysValid. Pebble's VA keeps one goroutine per CA after Close.
func New(opts Options) (_ *CA, err error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	c := &CA{}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()

	logOut := opts.Log
	if logOut == nil {
		logOut = io.Discard
	}
	logger := log.New(logOut, "pebble ", log.LstdFlags|log.Lmicroseconds)

	resolver := ""
	if opts.Resolver != "" && !opts.AlwaysValid {
		c.relay, err = startDNSRelay(opts.Resolver)
		if err != nil {
			return nil, err
		}
		resolver = c.relay.addr()
	}
	httpPort, tlsPort := opts.HTTPPort, opts.TLSPort
	if httpPort == 0 {
		httpPort = 80
	}
	if tlsPort == 0 {
		tlsPort = 443
	}

	store := db.NewMemoryStore()
	profiles := map[string]ca.Profile{
		"default": {Description: "The default profile", ValidityPeriod: uint64(opts.Validity / time.Second)},
	}
	// ECDSA keys for the root and intermediate: generating RSA ones costs
	// tens of milliseconds per start under -race.
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, profiles)
	var handler http.Handler
	withEnv(map[string]string{
		"PEBBLE_VA_ALWAYS_VALID": boolEnv(opts.AlwaysValid),
		"PEBBLE_VA_NOSLEEP":      "1",
		"PEBBLE_WFE_NONCEREJECT": "0",
		"PEBBLE_AUTHZREUSE":      "0",
	}, func() {
		validator := va.New(logger, httpPort, tlsPort, false, resolver, store)
		// The CAA identities only matter for DNS-01/CAA checks; this is
		// Pebble's own default.
		front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
		handler = front.Handler()
	})

	for i := range authority.GetNumberOfRootCerts() {
		c.issuerRootsPEM = append(c.issuerRootsPEM, authority.GetRootCert(i).PEM()...)
	}

	api, err := certtest.New(30*24*time.Hour, "127.0.0.1", "::1", "localhost")
	cert, certPEM := api.TLS, api.CertPEM
	if err != nil {
		return nil, err
	}
	c.APIRootsPEM = certPEM
	c.dir, err = os.MkdirTemp("", "pebbletest-")
	if err != nil {
		return nil, fmt.Errorf("pebbletest: %w", err)
	}
	c.APIRootsFile = filepath.Join(c.dir, "api-root.pem")
	if err := os.WriteFile(c.APIRootsFile, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("pebbletest: %w", err)
	}

	c.srv = httptest.NewUnstartedServer(c.count(handler))
	c.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	c.srv.Config.ErrorLog = logger
	c.srv.StartTLS() // listening and serving on return
	c.DirectoryURL = c.srv.URL + wfe.DirectoryPath
	return c, nil
}

// SkipShort skips tb under go test -short, the hermetic inner loop, which
// runs no Pebble (and so no ACME issuance). Start calls it first; a test that
// does expensive setup before starting the CA calls it before that setup.
func SkipShort(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("needs pebble; -short")
	}
}

// Start starts a CA that is closed when the test ends, and fails the test if
// it cannot start. Under -short the test is skipped (SkipShort).
func Start(tb testing.TB, opts Options) *CA {
	tb.Helper()
	SkipShort(tb)
	c, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// Close stops the ACME API, the DNS relay and removes APIRootsFile. It is
// safe to call more than once and after a failed New.
func (c *CA) Close() {
	c.closeOnce.Do(func() {
		if c.srv != nil {
			c.srv.Close()
		}
		if c.relay != nil {
			c.relay.close()
		}
		if c.dir != "" {
			os.RemoveAll(c.dir)
		}
	})
}

// APIRoots returns a pool holding only the ACME API's certificate.
func (c *CA) APIRoots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.APIRootsPEM)
	return pool
}

// IssuerRootsPEM returns the root certificates of what Pebble issues, PEM
// encoded. They are new for every CA.
func (c *CA) IssuerRootsPEM() []byte { return c.issuerRootsPEM }

// IssuerRoots returns a pool holding the roots of what Pebble issues, so a
// TLS client trusts only certificates from this CA.
func (c *CA) IssuerRoots() (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	rest := c.issuerRootsPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pebbletest: issuer root: %w", err)
		}
		pool.AddCert(cert)
	}
	return pool, nil
}

// Requests returns how many HTTP requests the ACME API received, of any kind
// (directory, nonce, account, order, authorization, challenge, certificate).
func (c *CA) Requests() int { return int(c.requests.Load()) }

// Orders returns how many new-order requests the ACME API received,
// accepted or not.
func (c *CA) Orders() int { return int(c.orders.Load()) }

// Certificates returns how many finalize requests Pebble accepted. Pebble
// issues one certificate for each (asynchronously, before the order becomes
// valid); the count rises before the client sees the finalize response.
func (c *CA) Certificates() int { return int(c.certificates.Load()) }

// count wraps the WFE handler with the request counters.
func (c *CA) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.requests.Add(1)
		switch post := r.Method == http.MethodPost; {
		case post && r.URL.Path == newOrderPath:
			c.orders.Add(1)
		case post && strings.HasPrefix(r.URL.Path, orderFinalizePath):
			w = &finalizeWriter{ResponseWriter: w, accepted: &c.certificates}
		}
		next.ServeHTTP(w, r)
	})
}

// finalizeWriter counts a finalize request as accepted when its status,
// 200, is written: before the client can see the response.
type finalizeWriter struct {
	http.ResponseWriter
	accepted *atomic.Int64
	wrote    bool
}

func (f *finalizeWriter) WriteHeader(code int) {
	if !f.wrote {
		f.wrote = true
		if code == http.StatusOK {
			f.accepted.Add(1)
		}
	}
	f.ResponseWriter.WriteHeader(code)
}

func (f *finalizeWriter) Write(b []byte) (int, error) {
	if !f.wrote {
		f.WriteHeader(http.StatusOK)
	}
	return f.ResponseWriter.Write(b)
}

// withEnv runs f with the environment variables vars set, then restores them.
func withEnv(vars map[string]string, f func()) {
	envMu.Lock()
	defer envMu.Unlock()
	for k, v := range vars {
		old, had := os.LookupEnv(k)
		os.Setenv(k, v)
		defer func() {
			if had {
				os.Setenv(k, old)
			} else {
				os.Unsetenv(k)
			}
		}()
	}
	f()
}

func boolEnv(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// relayTimeout bounds one DNS exchange through the relay, and how long a
// relay connection may sit idle.
const relayTimeout = 5 * time.Second

// dnsRelay accepts DNS over TCP on loopback and forwards each message over
// UDP to upstream. Pebble's VA asks its resolver over TCP only; dnstest and
// most test servers answer UDP only.
type dnsRelay struct {
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	closed   bool
}

func startDNSRelay(upstream string) (*dnsRelay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pebbletest: dns relay: %w", err)
	}
	r := &dnsRelay{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.serve()
	return r, nil
}

func (r *dnsRelay) addr() string { return r.ln.Addr().String() }

func (r *dnsRelay) serve() {
	defer r.wg.Done()
	for {
		conn, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			conn.Close()
			return
		}
		r.conns[conn] = struct{}{}
		r.wg.Add(1)
		r.mu.Unlock()
		go func() {
			defer r.wg.Done()
			r.handle(conn)
			r.mu.Lock()
			delete(r.conns, conn)
			r.mu.Unlock()
		}()
	}
}

// handle relays the length-prefixed messages (RFC 1035 section 4.2.2) of one
// TCP connection until the client closes it.
func (r *dnsRelay) handle(conn net.Conn) {
	defer conn.Close()
	up, err := net.Dial("udp", r.upstream)
	if err != nil {
		return
	}
	defer up.Close()
	req := make([]byte, 65535)
	resp := make([]byte, 2+65535)
	for {
		conn.SetDeadline(time.Now().Add(relayTimeout))
		var size [2]byte
		if _, err := io.ReadFull(conn, size[:]); err != nil {
			return
		}
		msg := req[:binary.BigEndian.Uint16(size[:])]
		if _, err := io.ReadFull(conn, msg); err != nil {
			return
		}
		if _, err := up.Write(msg); err != nil {
			return
		}
		up.SetReadDeadline(time.Now().Add(relayTimeout))
		n, err := up.Read(resp[2:])
		if err != nil {
			return
		}
		binary.BigEndian.PutUint16(resp, uint16(n))
		if _, err := conn.Write(resp[:2+n]); err != nil {
			return
		}
	}
}

func (r *dnsRelay) close() {
	r.mu.Lock()
	r.closed = true
	r.ln.Close()
	for conn := range r.conns {
		conn.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
