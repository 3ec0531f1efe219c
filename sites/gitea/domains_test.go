package gitea

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/dnstest"
	"github.com/tollgate-edge/tollgate/internal/giteatest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
)

func TestParseDomains(t *testing.T) {
	got, err := ParseDomains([]byte("# mine\nWWW.Example.com.\nexample.com\n\nexample.com\nbad domain\n10.0.0.1\nbücher.example # umlaut\n"))
	if strings.Join(got, ",") != "www.example.com,example.com,xn--bcher-kva.example" {
		t.Fatalf("domains %v", got)
	}
	if err == nil || !strings.Contains(err.Error(), "line 6") || !strings.Contains(err.Error(), "line 7") {
		t.Fatalf("error should name lines 6 and 7: %v", err)
	}
	many := strings.Repeat("a.example\nb.example\n", 10) + func() string {
		var b strings.Builder
		for i := range MaxDomainsLines + 10 {
			b.WriteString("d" + strings.Repeat("x", i%5) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ".example\n")
		}
		return b.String()
	}()
	got, err = ParseDomains([]byte(many))
	if len(got) > MaxDomainsLines || err == nil {
		t.Fatalf("%d domains, %v; want at most %d and an error", len(got), err, MaxDomainsLines)
	}
	if _, err := ParseDomains([]byte(strings.Repeat("#", MaxDomainsBytes+1))); err == nil {
		t.Fatal("no error for an oversized .domains")
	}
}

func TestDNSVerifier(t *testing.T) {
	dns := dnstest.Start(t)
	dns.SetCNAME("www.alice.example", "alice.pages.test")
	dns.SetCNAME("blog.alice.example", "blog.alice.pages.test")
	dns.SetCNAME("evil.example", "mallory.pages.test")
	dns.SetTXT("_tollgate.txt.example", "alice/blog")
	dns.SetTXT("_tollgate.wrongtxt.example", "mallory/blog")
	const ttl = time.Hour
	clk := clocktest.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	v := NewDNSVerifier(dns.Addr(), ttl, DNSOptions{Now: clk.Now})
	ctx := context.Background()
	hosts := []string{"alice.pages.test", "blog.alice.pages.test"}
	for domain, want := range map[string]string{
		"www.alice.example":  sites.ViaCNAME,
		"blog.alice.example": sites.ViaCNAME,
		"txt.example":        sites.ViaTXT,
		"evil.example":       "",
		"wrongtxt.example":   "",
		"nothing.example":    "",
	} {
		got, err := v.Verify(ctx, domain, "alice/blog", hosts...)
		if err != nil || got != want {
			t.Errorf("Verify(%s) = %q, %v; want %q", domain, got, err, want)
		}
	}
	before := dns.Queries()
	clk.Add(ttl - time.Nanosecond)
	for range 10 {
		v.Verify(ctx, "nothing.example", "alice/blog", hosts...)
	}
	if n := dns.Queries() - before; n != 0 {
		t.Fatalf("%d DNS queries for cached answers; want 0", n)
	}
	// Past the TTL the answer is asked again, once: as many queries as the
	// look-up of a domain never asked.
	before = dns.Queries()
	v.Verify(ctx, "new.example", "alice/blog", hosts...)
	lookup := dns.Queries() - before
	dns.SetCNAME("nothing.example", "alice.pages.test")
	clk.Add(time.Nanosecond)
	before = dns.Queries()
	for range 10 {
		if got, err := v.Verify(ctx, "nothing.example", "alice/blog", hosts...); got != sites.ViaCNAME || err != nil {
			t.Fatalf("Verify(nothing.example) after the TTL = %q, %v; want %q", got, err, sites.ViaCNAME)
		}
	}
	if n := dns.Queries() - before; n != lookup || n == 0 {
		t.Fatalf("%d DNS queries for 10 checks of an expired answer; want one look-up (%d)", n, lookup)
	}
}

func TestPagesSiteID(t *testing.T) {
	for in, want := range map[[2]string]string{
		{"alice", "blog"}:                        "gitea-alice-blog",
		{"alice", "My.Site_2"}:                   "gitea-alice-my-site-2",
		{"alice", strings.Repeat("r", 80)}:       "gitea-alice-" + strings.Repeat("r", 51),
		{"alice", "x" + strings.Repeat("_", 70)}: "gitea-alice-x",
	} {
		got := PagesSiteID(in[0], in[1])
		if got != want || !sites.ValidID(got) {
			t.Errorf("PagesSiteID(%v) = %q; want %q (valid id)", in, got, want)
		}
	}
}

func FuzzParseDomains(f *testing.F) {
	f.Add("example.com\n# c\nBücher.example.\n")
	f.Add("a..b\n\x00\n")
	f.Fuzz(func(t *testing.T, file string) {
		got, _ := ParseDomains([]byte(file))
		if len(got) > MaxDomainsLines {
			t.Fatalf("%d domains", len(got))
		}
		for _, d := range got {
			if again, err := sites.NormalizeDomain(d); err != nil || again != d {
				t.Fatalf("%q is not a normalized domain: %q %v", d, again, err)
			}
		}
	})
}

// TestClaimDomainsOnlyFromThePublishedBranch: the same repository seen at
// another branch must not detach the domains its published branch claimed.
func TestClaimDomainsOnlyFromThePublishedBranch(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t)
	mustNoErr(t, r.EnsureGiteaOrg(ctx, "alice", "free"))
	_, err := r.CreateSite(ctx, sites.Site{ID: PagesSiteID("alice", "blog"), Org: "gitea-alice", Source: sites.Source{Type: sites.SourceGitea, Owner: "alice", Repo: "blog", Branch: "pages"}})
	mustNoErr(t, err)
	_, err = r.AttachDomainVia(ctx, PagesSiteID("alice", "blog"), "blog.alice.example", sites.ViaCNAME)
	mustNoErr(t, err)
	cfg := sites.Config{GiteaURL: "http://127.0.0.1:9"} // never asked: the branch is not published
	g, err := New(content.NewCache(cfg), cfg, Options{})
	mustNoErr(t, err)
	if err := g.ClaimDomains(ctx, r, NewDNSVerifier("", time.Minute, DNSOptions{}), g.Repo("alice", "blog", "main"), "pages.test", "free"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Domain("blog.alice.example"); err != nil {
		t.Fatalf("a claim from another branch detached the domain: %v", err)
	}
	if n := g.Calls.Load(); n != 0 {
		t.Fatalf("%d Gitea calls for a branch that claims nothing", n)
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
	_, err := r.CreateSite(ctx, sites.Site{ID: site, Org: "gitea-alice", Source: sites.Source{Type: sites.SourceGitea, Owner: "alice", Repo: "blog", Branch: "pages"}})
	mustNoErr(t, err)
	_, err = r.AttachDomainVia(ctx, site, "bob.pages.test", sites.ViaCNAME) // claimed before the names were reserved
	mustNoErr(t, err)
	_, err = r.Reserve(ownNames...)
	mustNoErr(t, err)

	g := newGiteaSource(t, gs, sites.Config{}, Options{})
	err = g.ClaimDomains(ctx, r, NewDNSVerifier(dns.Addr(), time.Hour, DNSOptions{}), g.Repo("alice", "blog", "pages"), "pages.test", "free")
	if !errors.Is(err, sites.ErrReserved) {
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
