package acme

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
	"golang.org/x/sync/singleflight"
)

// Hosts answers, from the registry's in-memory snapshot (no I/O), which org a
// hostname belongs to. *sites.Registry implements it.
type Hosts interface {
	// DomainOrg returns the org of the site the custom domain name is
	// attached to, and whether the domain is verified; ok is false when the
	// name is not attached.
	DomainOrg(name string) (org string, verified, ok bool)
	// OwnerOrg returns the org that pays for a Gitea owner's pages.
	OwnerOrg(owner string) string
}

// Owners tells whether a Gitea user or organization exists. *gitea.Source
// implements it.
type Owners interface {
	OwnerExists(ctx context.Context, owner string) (bool, error)
}

// Refusal reasons, the values of the reason label of
// tollgate_acme_ondemand_refusals_total.
const (
	reasonNoSNI        = "no_sni"
	reasonIP           = "ip"
	reasonInvalid      = "invalid_name"
	reasonUnknownHost  = "unknown_host"
	reasonUnverified   = "unverified_domain"
	reasonUnknownOwner = "unknown_owner"
	reasonLookupFailed = "owner_lookup_failed"
	reasonOrgLimit     = "org_limit"
	reasonGlobalLimit  = "global_limit"
	reasonBackoff      = "recent_failure"
)

var reasons = []string{reasonNoSNI, reasonIP, reasonInvalid, reasonUnknownHost, reasonUnverified,
	reasonUnknownOwner, reasonLookupFailed, reasonOrgLimit, reasonGlobalLimit, reasonBackoff}

// ErrRefused is wrapped by every refusal: tollgate will not get (or serve) a
// certificate for the name.
var ErrRefused = errors.New("no certificate for this name")

type refusal struct {
	reason string
	name   string
}

func (r *refusal) Error() string {
	return fmt.Sprintf("%v: %s (%s)", ErrRefused, r.name, r.reason)
}

func (r *refusal) Unwrap() error { return ErrRefused }

// decider is the on-demand decision: cheap checks first (syntax, IP
// literals, length, the in-memory snapshot), then, only for pages hosts, one
// Gitea look-up per owner, remembered (OwnerTTL) or, when it does not exist,
// negatively cached (NegativeTTL), so that repeated unknown SNI names cost
// nothing and random ones cost one bounded look-up each.
type decider struct {
	hosts       Hosts
	names       map[string]bool // the operator's own hostnames
	owners      Owners          // nil: no Gitea
	pagesSuffix string          // "."+pages_domain; "" without pages
	wildcard    bool            // a configured *.pages_domain certificate covers pages hosts
	ownerTTL    time.Duration
	negativeTTL time.Duration
	now         func() time.Time
	refused     func(reason string)

	sf singleflight.Group
	mu sync.Mutex
	// known maps an owner to when its look-up result expires.
	known map[string]ownerEntry
}

type ownerEntry struct {
	exists  bool
	expires time.Time
}

// operatorOrg is the org issuance limits charge the operator's own names to.
const operatorOrg = "_operator"

// maxKnownOwners bounds the owner cache; past it, it starts over.
const maxKnownOwners = 100_000

// lookupTimeout bounds one Gitea owner look-up inside a handshake.
const lookupTimeout = 5 * time.Second

// decide returns the org a certificate for name would be charged to, or a
// *refusal. name is an SNI value: ASCII (IDNs arrive as punycode).
func (d *decider) decide(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", d.refuse(reasonNoSNI, name)
	}
	if len(name) > sites.MaxHostLen {
		return "", d.refuse(reasonInvalid, name[:64]+"…")
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return "", d.refuse(reasonIP, name)
	}
	if norm, err := sites.NormalizeDomain(name); err != nil || norm != name {
		return "", d.refuse(reasonInvalid, name)
	}
	if d.names[name] {
		return operatorOrg, nil
	}
	if org, verified, ok := d.hosts.DomainOrg(name); ok {
		if !verified {
			return "", d.refuse(reasonUnverified, name)
		}
		return org, nil
	}
	owner, ok := d.pagesOwner(name)
	if !ok {
		return "", d.refuse(reasonUnknownHost, name)
	}
	if d.wildcard {
		return d.hosts.OwnerOrg(owner), nil
	}
	exists, err := d.ownerExists(ctx, owner)
	switch {
	case err != nil:
		return "", d.refuse(reasonLookupFailed, name)
	case !exists:
		return "", d.refuse(reasonUnknownOwner, name)
	}
	return d.hosts.OwnerOrg(owner), nil
}

func (d *decider) refuse(reason, name string) error {
	if d.refused != nil {
		d.refused(reason)
	}
	return &refusal{reason: reason, name: name}
}

// pagesOwner returns the owner of {owner}.{pages_domain}.
func (d *decider) pagesOwner(name string) (string, bool) {
	if d.pagesSuffix == "" || d.owners == nil && !d.wildcard {
		return "", false
	}
	owner, ok := strings.CutSuffix(name, d.pagesSuffix)
	if !ok || owner == "" || strings.Contains(owner, ".") || len(owner) > maxOwnerLen {
		return "", false
	}
	return owner, true
}

// maxOwnerLen is Gitea's limit on user and organization names.
const maxOwnerLen = 40

// ownerExists looks owner up once per TTL; concurrent handshakes for the same
// owner share one look-up. A failed look-up is remembered for NegativeTTL
// too, so a Gitea outage does not turn every handshake into a call.
func (d *decider) ownerExists(ctx context.Context, owner string) (bool, error) {
	now := d.now()
	d.mu.Lock()
	e, ok := d.known[owner]
	d.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.exists, nil
	}
	v, err, _ := d.sf.Do(owner, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		exists, err := d.owners.OwnerExists(lctx, owner)
		ttl := d.negativeTTL
		if err == nil && exists {
			ttl = d.ownerTTL
		}
		d.mu.Lock()
		if len(d.known) >= maxKnownOwners {
			clear(d.known)
		}
		d.known[owner] = ownerEntry{exists: exists && err == nil, expires: d.now().Add(ttl)}
		d.mu.Unlock()
		return exists, err
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}
