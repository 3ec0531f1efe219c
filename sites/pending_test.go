package sites

import (
	"context"
	"errors"
	"testing"
)

// TestPendingDomain: a domain a tenant attaches is pending (neither routed
// nor given a certificate) until VerifyDomain, and counts toward the plan's domains; a public plan stays public.
func TestPendingDomain(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	mustNoErr(t, func() error {
		_, err := r.PutPlan(ctx, Plan{Name: "one", Sites: 1, Domains: 1, Public: true})
		return err
	}())
	mustNoErr(t, func() error { _, err := r.CreateOrg(ctx, Org{ID: "acme", Plan: "one"}); return err }())
	mustNoErr(t, func() error {
		_, err := r.CreateSite(ctx, Site{ID: "www", Org: "acme", Source: Source{Type: SourceUpstream, URL: "https://origin.example"}})
		return err
	}())
	d, err := r.AttachDomainVia(ctx, "www", "Shop.Example", ViaTenant)
	mustNoErr(t, err)
	if d.Status != DomainPending || d.Via != ViaTenant {
		t.Fatalf("attached: %+v", d)
	}
	if _, verified, ok := r.DomainOrg("shop.example"); !ok || verified {
		t.Fatalf("DomainOrg: verified %v, ok %v", verified, ok)
	}
	var limit *LimitError
	if _, err := r.AttachDomain(ctx, "www", "other.example"); !errors.As(err, &limit) {
		t.Fatalf("a second domain on a plan of one: %v", err)
	}
	if d, err = r.VerifyDomain(ctx, "shop.example", ViaTXT); err != nil || d.Status != DomainVerified || d.Via != ViaTXT {
		t.Fatalf("VerifyDomain: %+v, %v", d, err)
	}
	if _, verified, _ := r.DomainOrg("shop.example"); !verified {
		t.Fatal("not verified after VerifyDomain")
	}
	if _, err := r.VerifyDomain(ctx, "none.example", ViaTXT); !errors.Is(err, ErrNotFound) {
		t.Fatalf("VerifyDomain of a missing domain: %v", err)
	}
	if p, _ := r.Plan("one"); !p.Public {
		t.Fatal("plan lost public")
	}
}
