package gitea

// Proving with DNS that whoever declares a domain controls it.

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

// DNSVerifier proves that whoever declares a domain controls it, with DNS.
// Answers are cached for its TTL, so repeated checks cost nothing.
type DNSVerifier struct {
	res *net.Resolver
	ttl time.Duration
	now func() time.Time

	mu    sync.Mutex
	cache map[string]dnsAnswer
}

type dnsAnswer struct {
	cname string
	txt   []string
	at    time.Time
}

// DNSOptions are a DNSVerifier's collaborators.
type DNSOptions struct {
	// Now is the clock (default time.Now) that ages cached answers. Tests
	// inject a clock and advance it past the TTL instead of sleeping.
	Now func() time.Time
}

// NewDNSVerifier asks server ("host:port"; "" means the system resolver)
// and caches answers for ttl.
func NewDNSVerifier(server string, ttl time.Duration, opts DNSOptions) *DNSVerifier {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	res := net.DefaultResolver
	if server != "" {
		res = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		}}
	}
	return &DNSVerifier{res: res, ttl: ttl, now: opts.Now, cache: map[string]dnsAnswer{}}
}

// Verify reports how domain is proven to belong to the site served at
// pagesHost (its CNAME target, e.g. "alice.pages.example" or
// "blog.alice.pages.example") named siteName ("alice/blog"), or "" when it
// is not.
func (v *DNSVerifier) Verify(ctx context.Context, domain, siteName string, pagesHosts ...string) (string, error) {
	a, err := v.lookup(ctx, domain)
	if err != nil {
		return "", err
	}
	for _, h := range pagesHosts {
		if a.cname == h {
			return sites.ViaCNAME, nil
		}
	}
	for _, t := range a.txt {
		if strings.TrimSpace(t) == siteName {
			return sites.ViaTXT, nil
		}
	}
	return "", nil
}

func (v *DNSVerifier) lookup(ctx context.Context, domain string) (dnsAnswer, error) {
	v.mu.Lock()
	a, ok := v.cache[domain]
	v.mu.Unlock()
	if ok && v.now().Sub(a.at) < v.ttl {
		return a, nil
	}
	a = dnsAnswer{at: v.now()}
	cname, err := v.res.LookupCNAME(ctx, domain)
	if err == nil {
		a.cname = strings.ToLower(strings.TrimSuffix(cname, "."))
	} else if !notFound(err) {
		return a, err
	}
	txt, err := v.res.LookupTXT(ctx, "_tollgate."+domain)
	if err == nil {
		a.txt = txt
	} else if !notFound(err) {
		return a, err
	}
	v.mu.Lock()
	v.cache[domain] = a
	v.mu.Unlock()
	return a, nil
}

func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && (de.IsNotFound || strings.Contains(de.Err, "no such host"))
}
