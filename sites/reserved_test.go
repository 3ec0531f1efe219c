package sites

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// ownNames are the reserved names of these tests, as tollgate serve sets
// them from its config.
var ownNames = []ReservedName{
	{Name: "pages.test", Subdomains: true, Key: "sites.pages_domain"},
	{Name: "billing.test", Key: "billing.stripe.webhook_host"},
}

// TestReserve: every way of attaching a domain refuses tollgate's own
// names with ErrReserved (an ErrConflict), and Reserve reports the domains
// attached before it.
func TestReserve(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	_, err := r.PutPlan(ctx, Plan{Name: "many"})
	mustNoErr(t, err)
	_, err = r.CreateOrg(ctx, Org{ID: "acme", Plan: "many"})
	mustNoErr(t, err)
	_, err = r.CreateSite(ctx, Site{ID: "www", Org: "acme", Source: Source{Type: SourceUpstream, URL: "http://127.0.0.1:9"}})
	mustNoErr(t, err)
	for _, d := range []string{"alice.pages.test", "billing.test", "www.example"} {
		_, err := r.AttachDomain(ctx, "www", d) // attached before the names were reserved
		mustNoErr(t, err)
	}

	if _, err := r.Reserve(ReservedName{Name: "not a name", Key: "sites.pages_domain"}); err == nil || !strings.Contains(err.Error(), "sites.pages_domain") {
		t.Fatalf("Reserve of an invalid name: %v; want an error naming its key", err)
	}
	attached, err := r.Reserve(ownNames...)
	mustNoErr(t, err)
	if want := []string{"alice.pages.test", "billing.test"}; !slices.Equal(attached, want) {
		t.Fatalf("Reserve reported %q attached; want %q", attached, want)
	}

	tests := []struct {
		name     string
		reserved bool
	}{
		{"pages.test", true},
		{"bob.pages.test", true},
		{"BOB.pages.test.", true},
		{"a.b.pages.test", true},
		{"billing.test", true},
		{"api.billing.test", false},
		{"otherpages.test", false},
		{"test", false},
	}
	for _, via := range []string{ViaOperator, ViaCNAME, ViaTXT} {
		for _, tt := range tests {
			t.Run(via+"/"+tt.name, func(t *testing.T) {
				d, err := r.AttachDomainVia(ctx, "www", tt.name, via)
				if !tt.reserved {
					mustNoErr(t, err)
					mustNoErr(t, r.DetachDomain(ctx, d.Name))
					return
				}
				if !errors.Is(err, ErrReserved) || !errors.Is(err, ErrConflict) {
					t.Fatalf("AttachDomainVia(%q) = %v; want ErrReserved, an ErrConflict", tt.name, err)
				}
			})
		}
	}
}
