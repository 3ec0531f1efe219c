package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"
)

// Options are the manager's collaborators.
type Options struct {
	// Storage keeps certificates, keys, the ACME account, challenge tokens
	// (so any node can answer a challenge) and issuance records. Required:
	// NewBoltStorage or NewRedisStorage.
	Storage certmagic.Storage
	// Hosts answers which org a hostname belongs to. Required.
	Hosts Hosts
	// Owners looks Gitea owners up for pages hosts; nil without Gitea.
	Owners Owners
	// PagesDomain is [sites] pages_domain, normalized; "" without pages.
	PagesDomain string
	// Names are hostnames tollgate serves for itself (the Stripe webhook
	// host), normalized; they get certificates like verified domains, on
	// the org "_operator".
	Names []string
	// HTTPAddr and HTTPSAddr are the bound public listeners. certmagic then
	// knows challenges are answered there and never binds a port itself.
	HTTPAddr, HTTPSAddr string
	Metrics             prometheus.Registerer // required
	Logger              *slog.Logger          // default slog.Default()
}

// Manager obtains, renews, stores and hands out certificates.
type Manager struct {
	cfg     Config
	magic   *certmagic.Config
	issuer  *certmagic.ACMEIssuer
	cache   *certmagic.Cache
	storage certmagic.Storage
	decide  *decider
	limits  *issuanceLog
	log     *slog.Logger
	m       managerMetrics

	now      func() time.Time
	renewing sync.Map // names being renewed now (see failFastIssuer)
	mu       sync.Mutex
	lastErr  map[string]certError // by name; bounded by maxLastErrors
}

// certError is the last failure for a name and, for failures to obtain a
// new certificate, until when the name is refused (FailureBackoff).
type certError struct {
	msg      string
	at       time.Time
	failures int       // consecutive failures to obtain
	until    time.Time // refused before this time; zero for renewals
}

// maxBackoff caps the doubling FailureBackoff.
const maxBackoff = 6 * time.Hour

// backingOff reports whether name failed to be obtained recently.
func (m *Manager) backingOff(name string) bool {
	m.mu.Lock()
	e, ok := m.lastErr[name]
	m.mu.Unlock()
	return ok && m.now().Before(e.until)
}

const maxLastErrors = 10_000

type managerMetrics struct {
	obtained, renewed prometheus.Counter
	failed            *prometheus.CounterVec
	refusals          *prometheus.CounterVec
}

// New builds the manager. It contacts no CA: certificates are obtained on
// demand, during the first handshake for a name.
func New(cfg Config, opts Options) (*Manager, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Storage == nil || opts.Hosts == nil || opts.Metrics == nil {
		return nil, errors.New("acme: Options.Storage, Hosts and Metrics are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	roots, err := caRoots(cfg.CARoot)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, storage: opts.Storage, log: opts.Logger, lastErr: map[string]certError{}, now: time.Now,
		m: newManagerMetrics(opts.Metrics)}
	m.decide = m.newDecider(opts)
	m.limits = &issuanceLog{storage: opts.Storage, perOrgDay: cfg.OrgCertsPerDay, globalHour: cfg.CertsPerHour, now: time.Now}
	m.startCertmagic(opts, roots)
	if cfg.WildcardCert != "" {
		if _, err := m.magic.CacheUnmanagedCertificatePEMFile(context.Background(), cfg.WildcardCert, cfg.WildcardKey, []string{"wildcard"}); err != nil {
			m.cache.Stop()
			return nil, fmt.Errorf("acme.wildcard_cert: %w", err)
		}
	}
	return m, nil
}

// caRoots is the pool of acme.ca_root (nil: the system's).
func caRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pemBytes, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("acme.ca_root: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("acme.ca_root: %s holds no PEM certificate", file)
	}
	return roots, nil
}

func newManagerMetrics(reg prometheus.Registerer) managerMetrics {
	f := promauto.With(reg)
	mm := managerMetrics{
		obtained: f.NewCounter(prometheus.CounterOpts{Name: "tollgate_acme_certificates_obtained_total",
			Help: "New certificates obtained from the CA by this node."}),
		renewed: f.NewCounter(prometheus.CounterOpts{Name: "tollgate_acme_certificates_renewed_total",
			Help: "Certificates renewed by this node."}),
		failed: f.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_acme_certificates_failed_total",
			Help: "Failed attempts to obtain (op=obtain) or renew (op=renew) a certificate."}, []string{"op"}),
		refusals: f.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_acme_ondemand_refusals_total",
			Help: "On-demand certificate requests refused, by reason; none of them reached the CA."}, []string{"reason"}),
	}
	for _, r := range reasons {
		mm.refusals.WithLabelValues(r)
	}
	mm.failed.WithLabelValues("obtain")
	mm.failed.WithLabelValues("renew")
	return mm
}

// newDecider is the on-demand decision of m (decisionFunc).
func (m *Manager) newDecider(opts Options) *decider {
	d := &decider{
		hosts: opts.Hosts, names: map[string]bool{}, owners: opts.Owners, wildcard: m.cfg.WildcardCert != "",
		ownerTTL: m.cfg.OwnerTTL, negativeTTL: m.cfg.NegativeTTL, now: time.Now,
		refused: func(reason string) { m.m.refusals.WithLabelValues(reason).Inc() },
		known:   map[string]ownerEntry{},
	}
	if opts.PagesDomain != "" {
		d.pagesSuffix = "." + opts.PagesDomain
	}
	for _, n := range opts.Names {
		d.names[n] = true
	}
	return d
}

// startCertmagic builds m's certmagic cache, config and ACME issuer (the
// cache starts its maintenance goroutine).
func (m *Manager) startCertmagic(opts Options, roots *x509.CertPool) {
	cfg := m.cfg
	zl := zap.New(slogCore{l: opts.Logger.With(slog.String("component", "certmagic"))})
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		Logger:           zl,
	})
	m.magic = certmagic.New(m.cache, certmagic.Config{
		Storage:  opts.Storage,
		OnDemand: &certmagic.OnDemandConfig{DecisionFunc: m.decisionFunc},
		OnEvent:  m.onEvent,
		Logger:   zl,
	})
	iss := certmagic.ACMEIssuer{
		CA: cfg.CA, Email: cfg.Email, Agreed: true, TrustedRoots: roots,
		DisableHTTPChallenge: cfg.DisableHTTPChallenge, DisableTLSALPNChallenge: cfg.DisableTLSALPNChallenge,
		Logger: zl,
	}
	if cfg.CA != certmagic.LetsEncryptProductionCA {
		// certmagic retries failed background renewals against TestCA
		// (Let's Encrypt staging by default): keep them at our CA.
		iss.TestCA = cfg.CA
	}
	if host, port, ok := splitAddr(opts.HTTPAddr); ok {
		iss.ListenHost, iss.AltHTTPPort = host, port
	}
	if host, port, ok := splitAddr(opts.HTTPSAddr); ok {
		iss.ListenHost, iss.AltTLSALPNPort = host, port
	}
	m.issuer = certmagic.NewACMEIssuer(m.magic, iss)
	m.magic.Issuers = []certmagic.Issuer{failFastIssuer{ACMEIssuer: m.issuer, m: m}}
}

// splitAddr splits a bound listener address; certmagic only tries to bind
// these (and finds them in use, so it relies on tollgate's listeners).
func splitAddr(addr string) (string, int, bool) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, false
	}
	port, err := strconv.Atoi(p)
	return host, port, err == nil
}

// TLSConfig is the public listener's TLS configuration: TLS 1.2 and up,
// AEAD cipher suites with forward secrecy only (tls12CipherSuites; TLS 1.3
// has no other kind), the key exchanges of curvePreferences, h2 and
// http/1.1 through ALPN, and acme-tls/1 for TLS-ALPN-01 challenges.
func (m *Manager) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS12,
		CipherSuites:     tls12CipherSuites(),
		CurvePreferences: curvePreferences(),
		GetCertificate:   m.getCertificate,
		NextProtos:       []string{"h2", "http/1.1", acmeTLS1},
	}
}

// tls12CipherSuites are the TLS 1.2 cipher suites the public listener
// accepts: ECDHE key exchange (forward secrecy) with AES-GCM or
// ChaCha20-Poly1305 (AEAD), for ECDSA and RSA certificates. Go's default
// adds CBC suites with HMAC-SHA1 (ECDHE-ECDSA-AES128-SHA and the like),
// open to Lucky13-style padding oracles; they are left out.
func tls12CipherSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// curvePreferences are the key exchanges the public listener accepts, in
// TLS 1.2 and 1.3: the hybrid post-quantum X25519MLKEM768 (TLS 1.3 only),
// X25519 and P-256. Go's default adds P-384, P-521 and the hybrids with
// P-256 and P-384; they are left out.
func curvePreferences() []tls.CurveID {
	return []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256}
}

// acmeTLS1 is the ALPN protocol of TLS-ALPN-01 challenges (RFC 8737).
const acmeTLS1 = "acme-tls/1"

// getCertificate decides before certmagic does anything: a name tollgate
// would not serve fails the handshake at once (no default certificate, no
// storage read, no CA contact). Challenge handshakes go straight through.
func (m *Manager) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmeTLS1 {
		return m.magic.GetCertificate(hello)
	}
	name := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
	ctx := hello.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	if _, err := m.decide.decide(ctx, name); err != nil {
		return nil, err
	}
	if m.backingOff(name) {
		// Only names that have no certificate fail to be obtained; one being
		// renewed keeps being served by certmagic.
		return nil, m.decide.refuse(reasonBackoff, name)
	}
	return m.magic.GetCertificate(hello)
}

// decisionFunc is certmagic's on-demand gate, asked before a certificate is
// loaded from storage, obtained or renewed on demand.
func (m *Manager) decisionFunc(ctx context.Context, name string) error {
	_, err := m.decide.decide(ctx, name)
	return err
}

// onEvent applies the issuance limits right before certmagic contacts the CA
// for a new certificate (after it took the name's lock and found nothing in
// storage), and keeps metrics and the last error per name.
func (m *Manager) onEvent(ctx context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	switch event {
	case "cert_obtaining":
		if renewal {
			m.renewing.Store(name, true)
			return nil
		}
		if m.backingOff(name) {
			return certmagic.ErrNoRetry{Err: m.decide.refuse(reasonBackoff, name)}
		}
		// A refusal is final for this attempt: ErrNoRetry keeps certmagic
		// from retrying it in the background (and the handshake waiting).
		org, err := m.decide.decide(ctx, name)
		if err != nil {
			return certmagic.ErrNoRetry{Err: err}
		}
		reason, err := m.limits.reserve(ctx, org, name)
		if err != nil {
			return err
		}
		if reason != "" {
			m.log.Warn("certificate issuance limit reached", slog.String("name", name), slog.String("org", org), slog.String("limit", reason))
			return certmagic.ErrNoRetry{Err: m.decide.refuse(reason, name)}
		}
	case "cert_obtained":
		m.renewing.Delete(name)
		if renewal {
			m.m.renewed.Inc()
		} else {
			m.m.obtained.Inc()
		}
		m.mu.Lock()
		delete(m.lastErr, name)
		m.mu.Unlock()
	case "cert_failed":
		m.renewing.Delete(name)
		op := "obtain"
		if renewal {
			op = "renew"
		}
		m.m.failed.WithLabelValues(op).Inc()
		now := m.now()
		m.mu.Lock()
		if len(m.lastErr) >= maxLastErrors {
			clear(m.lastErr)
		}
		e := m.lastErr[name]
		e.msg, e.at = fmt.Sprint(data["error"]), now
		if !renewal {
			// Certmagic's own retries stop at the next cert_obtaining
			// (ErrNoRetry), and handshakes are refused, until e.until.
			e.failures++
			e.until = now.Add(min(m.cfg.FailureBackoff<<min(e.failures-1, 16), maxBackoff))
		}
		m.lastErr[name] = e
		m.mu.Unlock()
	}
	return nil
}

// failFastIssuer makes a failure to obtain a new certificate final for the
// attempt. certmagic retries on-demand issuance for up to 3 minutes, holding
// the visitor's handshake open; with ErrNoRetry the handshake fails at once
// and the name is refused for FailureBackoff instead. Renewals keep
// certmagic's retries (they run in the background, the old certificate is
// still served).
//
// Cost of the wrapper: certmagic sends ACME renewal info's "replaces" only
// through a bare *ACMEIssuer, so renewals do not claim to replace the old
// certificate (Let's Encrypt still recognizes them as renewals of the same
// names for its rate limits).
type failFastIssuer struct {
	*certmagic.ACMEIssuer
	m *Manager
}

func (i failFastIssuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	c, err := i.ACMEIssuer.Issue(ctx, csr)
	if err != nil && !errors.Is(err, context.Canceled) && len(csr.DNSNames) > 0 {
		if _, renewing := i.m.renewing.Load(csr.DNSNames[0]); !renewing {
			return nil, certmagic.ErrNoRetry{Err: err}
		}
	}
	return c, err
}

// HandleHTTPChallenge answers an HTTP-01 challenge request started by any
// node sharing the storage. It reports whether it handled the request.
func (m *Manager) HandleHTTPChallenge(w http.ResponseWriter, r *http.Request) bool {
	return m.issuer.HandleHTTPChallenge(w, r)
}

// Cert describes one stored certificate, or a name whose last attempt failed.
type Cert struct {
	Names     []string  `json:"names"`
	Issuer    string    `json:"issuer,omitempty"`
	CA        string    `json:"ca,omitempty"` // the storage key of the issuing CA's directory
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	Managed   bool      `json:"managed"` // false: the configured wildcard
	// LastError is the last failure to obtain or renew on this node.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Certs lists the certificates in storage (all nodes' when shared), the
// configured wildcard, and names whose last attempt on this node failed,
// sorted by first name.
func (m *Manager) Certs(ctx context.Context) ([]Cert, error) {
	keys, err := m.storage.List(ctx, "certificates", true)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	m.mu.Lock()
	lastErr := maps.Clone(m.lastErr)
	m.mu.Unlock()
	var out []Cert
	for _, k := range keys {
		if !strings.HasSuffix(k, ".crt") {
			continue
		}
		b, err := m.storage.Load(ctx, k)
		if err != nil {
			continue // deleted meanwhile
		}
		leaf, err := parseLeaf(b)
		if err != nil {
			m.log.Warn("unreadable certificate in storage", slog.String("key", k), slog.Any("err", err))
			continue
		}
		c := certOf(leaf)
		c.Managed = true
		if parts := strings.Split(k, "/"); len(parts) >= 2 {
			c.CA = parts[1]
		}
		for _, n := range c.Names {
			if e, ok := lastErr[n]; ok {
				c.LastError, c.LastErrorAt = e.msg, e.at
				delete(lastErr, n)
			}
		}
		out = append(out, c)
	}
	if m.cfg.WildcardCert != "" {
		if b, err := os.ReadFile(m.cfg.WildcardCert); err == nil {
			if leaf, err := parseLeaf(b); err == nil {
				out = append(out, certOf(leaf))
			}
		}
	}
	for n, e := range lastErr {
		out = append(out, Cert{Names: []string{n}, Managed: true, LastError: e.msg, LastErrorAt: e.at})
	}
	slices.SortFunc(out, func(a, b Cert) int { return strings.Compare(a.Names[0], b.Names[0]) })
	return out, nil
}

func certOf(leaf *x509.Certificate) Cert {
	names := slices.Clone(leaf.DNSNames)
	if len(names) == 0 {
		names = []string{leaf.Subject.CommonName}
	}
	issuer := leaf.Issuer.CommonName
	if issuer == "" && len(leaf.Issuer.Organization) > 0 {
		issuer = leaf.Issuer.Organization[0]
	}
	return Cert{Names: names, Issuer: issuer, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}
}

func parseLeaf(pemBytes []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// Ping reports whether certificate storage answers: a read of a key that
// does not exist must say so rather than fail. For readiness checks.
func (m *Manager) Ping(ctx context.Context) error {
	_, err := m.storage.Load(ctx, "tollgate/readyz-probe")
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// Close stops certificate maintenance (renewals). Safe to call once.
func (m *Manager) Close() error {
	m.cache.Stop()
	return nil
}
