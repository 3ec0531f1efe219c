package sites

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/dnstest"
	"github.com/tollgate-edge/tollgate/internal/giteatest"
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

// TestClaimDomainsSkipsReserved: a repository whose .domains declares
// tollgate's own names, even with DNS that points them at its pages host,
// gets none of them, and loses one it claimed before the names were
// reserved; its other domain is claimed in the same round, in the place the
// reserved one held (the free plan allows one domain).
func TestClaimDomainsSkipsReserved(t *testing.T) {
	gs := giteatest.Start(t)
	gs.CreateUser(t, "alice")
	gs.CreateRepo(t, "alice", "blog")
	gs.CreateBranch(t, "alice", "blog", "pages", "main")
	declared := "blog.alice.example\nbob.pages.test\npages.test\nbilling.test\n"
	gs.PutFile(t, "alice", "blog", "pages", ".domains", []byte(declared))
	gs.WaitRaw(t, "alice", "blog", "pages", ".domains")
	dns := dnstest.Start(t)
	for _, d := range []string{"blog.alice.example", "bob.pages.test", "pages.test", "billing.test"} {
		dns.SetCNAME(d, "blog.alice.pages.test")
	}

	ctx := context.Background()
	r, _ := newRegistry(t)
	mustNoErr(t, r.EnsureGiteaOrg(ctx, "alice", "free"))
	site := PagesSiteID("alice", "blog")
	_, err := r.CreateSite(ctx, Site{ID: site, Org: "gitea-alice", Source: Source{Type: SourceGitea, Owner: "alice", Repo: "blog", Branch: "pages"}})
	mustNoErr(t, err)
	_, err = r.AttachDomainVia(ctx, site, "bob.pages.test", ViaCNAME) // claimed before the names were reserved
	mustNoErr(t, err)
	_, err = r.Reserve(ownNames...)
	mustNoErr(t, err)

	g := newGiteaSource(t, gs, Config{}, GiteaOptions{})
	err = g.ClaimDomains(ctx, r, NewDNSVerifier(dns.Addr(), time.Hour, DNSOptions{}), g.Repo("alice", "blog", "pages"), "pages.test", "free")
	if !errors.Is(err, ErrReserved) {
		t.Fatalf("ClaimDomains: %v; want it to report the reserved names", err)
	}
	for _, d := range []string{"bob.pages.test", "pages.test", "billing.test"} {
		if !strings.Contains(err.Error(), d) {
			t.Errorf("ClaimDomains error %q does not name %s", err, d)
		}
	}
	if got, want := r.Snapshot().DomainsOf(site), []string{"blog.alice.example"}; !slices.Equal(got, want) {
		t.Fatalf("the repository's site holds %q; want %q", got, want)
	}
}
