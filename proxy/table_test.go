package proxy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tollgate-edge/tollgate/sites"
)

// TestRouteTableFollowsChanges: a registry write rebuilds the routes of the
// hosts it touches and no other (a route of an untouched host is the same
// value before and after), opens and closes only the resources of the sites
// it changed, and requests follow at once.
func TestRouteTableFollowsChanges(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, Config{}, Limits{})
	reg := h.reg
	_, err := reg.CreateOrg(ctx, sites.Org{ID: "other", Plan: "big"})
	must(t, err)
	for i := range 40 {
		org := "acme"
		if i%2 == 1 {
			org = "other"
		}
		id := fmt.Sprintf("s%d", i)
		_, err := reg.CreateSite(ctx, sites.Site{ID: id, Org: org, Source: sites.Source{Type: sites.SourceDir, Path: h.root}})
		must(t, err)
		_, err = reg.AttachDomain(ctx, id, id+".example")
		must(t, err)
	}
	routes := func() map[string]*route {
		out := map[string]*route{}
		for name, r := range h.proxy.table.Load().hosts.All() {
			out[name] = r
		}
		return out
	}
	runtimeOf := func(id string) *siteRuntime {
		h.proxy.mu.Lock()
		defer h.proxy.mu.Unlock()
		return h.proxy.runtime[id]
	}
	// same reports the hosts whose route is the same value in both tables.
	same := func(a, b map[string]*route) (n int) {
		for name, r := range a {
			if b[name] == r {
				n++
			}
		}
		return n
	}
	before := routes()
	if len(before) != 41 {
		t.Fatalf("table has %d hosts, want 41", len(before))
	}

	// A new site and domain: one route more, none rebuilt.
	_, err = reg.CreateSite(ctx, sites.Site{ID: "new", Org: "other", Source: sites.Source{Type: sites.SourceDir, Path: h.root}})
	must(t, err)
	_, err = reg.AttachDomain(ctx, "new", "new.example")
	must(t, err)
	after := routes()
	if len(after) != 42 || after["new.example"] == nil || same(before, after) != 41 {
		t.Fatalf("after adding a domain: %d hosts, %d untouched routes; want 42 and 41", len(after), same(before, after))
	}
	if got := h.do("GET", "new.example", "/").StatusCode(); got != 200 {
		t.Errorf("GET new.example: %d, want 200", got)
	}

	// An org change rebuilds its sites' routes (they hold the org), no others.
	before = after
	name := "Acme Renamed"
	_, err = reg.UpdateOrg(ctx, "acme", sites.OrgPatch{Name: &name})
	must(t, err)
	after = routes()
	for host, r := range after {
		rebuilt := before[host] != r
		if want := r.site.Org == "acme"; rebuilt != want {
			t.Errorf("after changing org acme: route of %s (org %s) rebuilt = %v", host, r.site.Org, rebuilt)
		}
		if r.site.Org == "acme" && r.org.Name != name {
			t.Errorf("route of %s holds org name %q", host, r.org.Name)
		}
	}

	// A deleted site: its host is gone, its resources closed, the rest kept.
	before = after
	rt := runtimeOf("s3")
	must(t, reg.DeleteSite(ctx, "s3"))
	after = routes()
	if after["s3.example"] != nil || len(after) != 41 || same(before, after) != 41 {
		t.Errorf("after deleting s3: %d hosts, s3.example routed: %v, %d untouched; want 41, false, 41",
			len(after), after["s3.example"] != nil, same(before, after))
	}
	if rt == nil || runtimeOf("s3") != nil || runtimeOf("s4") == nil {
		t.Errorf("runtime of s3 before %v, after %v; of s4 after %v", rt != nil, runtimeOf("s3") != nil, runtimeOf("s4") != nil)
	}
	if got := h.do("GET", "s3.example", "/").StatusCode(); got != 404 {
		t.Errorf("GET s3.example after its site was deleted: %d, want 404", got)
	}

	// A detached domain.
	must(t, reg.DetachDomain(ctx, "s4.example"))
	if routes()["s4.example"] != nil || runtimeOf("s4") == nil {
		t.Errorf("s4.example still routed after detaching it, or its site's resources closed")
	}
}

// TestUnopenedSiteRetried: a site whose directory could not be opened
// answers 503 and is opened again at the next registry change, whatever
// it is (the operator fixed the directory, then changed anything).
func TestUnopenedSiteRetried(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, Config{}, Limits{})
	dir := filepath.Join(t.TempDir(), "later")
	_, err := h.reg.CreateSite(ctx, sites.Site{ID: "later", Org: "acme", Source: sites.Source{Type: sites.SourceDir, Path: dir}})
	must(t, err)
	_, err = h.reg.AttachDomain(ctx, "later", "later.example")
	must(t, err)
	if got := h.do("GET", "later.example", "/").StatusCode(); got != 503 {
		t.Fatalf("GET of a site without its directory: %d, want 503", got)
	}
	must(t, os.MkdirAll(dir, 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "index.html"), []byte("now"), 0o644))
	_, err = h.reg.CreateOrg(ctx, sites.Org{ID: "unrelated", Plan: "big"})
	must(t, err)
	if got := h.do("GET", "later.example", "/").StatusCode(); got != 200 {
		t.Errorf("GET after the directory appeared and the registry changed: %d, want 200", got)
	}
}
