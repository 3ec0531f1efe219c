package proxy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tollgate-edge/tollgate/sites"
)

// TestRouteTableFollowsChanges: routes are built on a host's first request
// (none for hosts nobody asked for, nor for unknown ones), and a registry
// write drops the routes of the hosts it touches and no other (a route of
// an untouched host is the same value before and after), closes only the
// resources of the sites it changed, and requests follow at once.
func TestRouteTableFollowsChanges(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, Config{}, Limits{})
	reg := h.reg
	_, err := reg.CreateOrg(ctx, sites.Org{ID: "other", Plan: "big"})
	must(t, err)
	hosts := []string{"www.example"}
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
		hosts = append(hosts, id+".example")
	}
	routes := func() map[string]*route {
		out := map[string]*route{}
		for name, r := range h.proxy.table.Load().hosts.All() {
			out[name] = r
		}
		return out
	}
	runtimes := func() int {
		h.proxy.mu.Lock()
		defer h.proxy.mu.Unlock()
		return len(h.proxy.runtime)
	}
	runtimeOf := func(id string) *siteRuntime {
		h.proxy.mu.Lock()
		defer h.proxy.mu.Unlock()
		return h.proxy.runtime[id]
	}
	get := func(host string, want int) {
		t.Helper()
		if got := h.do("GET", host, "/").StatusCode(); got != want {
			t.Fatalf("GET %s: %d, want %d", host, got, want)
		}
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
	if n, rts := len(routes()), runtimes(); n != 0 || rts != 0 {
		t.Fatalf("before any request: %d routes, %d open sites; want none", n, rts)
	}
	get("nosuch.example", 404)
	for _, host := range hosts {
		get(host, 200)
	}
	before := routes()
	if len(before) != 41 || runtimes() != 41 {
		t.Fatalf("after a request to each: %d routes, %d open sites; want 41 and 41", len(before), runtimes())
	}

	// A new site and domain: no route dropped, the new one built on request.
	_, err = reg.CreateSite(ctx, sites.Site{ID: "new", Org: "other", Source: sites.Source{Type: sites.SourceDir, Path: h.root}})
	must(t, err)
	_, err = reg.AttachDomain(ctx, "new", "new.example")
	must(t, err)
	if after := routes(); len(after) != 41 || same(before, after) != 41 {
		t.Fatalf("after adding a domain: %d routes, %d untouched; want 41 and 41", len(after), same(before, after))
	}
	get("new.example", 200)

	// An org change drops its sites' routes (they hold the org), no others;
	// the next request builds them with the org as it is now.
	before = routes()
	name := "Acme Renamed"
	_, err = reg.UpdateOrg(ctx, "acme", sites.OrgPatch{Name: &name})
	must(t, err)
	after := routes()
	for host, r := range before {
		if dropped := after[host] == nil; dropped != (r.site.Org == "acme") {
			t.Errorf("after changing org acme: route of %s (org %s) dropped = %v", host, r.site.Org, dropped)
		}
	}
	get("s0.example", 200)
	if r := routes()["s0.example"]; r == nil || r.org.Name != name {
		t.Errorf("route of s0.example after a request does not hold the renamed org")
	}

	// A deleted site: its route and resources gone, the rest kept.
	before = routes()
	rt := runtimeOf("s3")
	must(t, reg.DeleteSite(ctx, "s3"))
	after = routes()
	if after["s3.example"] != nil || same(before, after) != len(before)-1 {
		t.Errorf("after deleting s3: s3.example routed: %v, %d of %d untouched", after["s3.example"] != nil, same(before, after), len(before)-1)
	}
	if rt == nil || runtimeOf("s3") != nil || runtimeOf("s4") == nil {
		t.Errorf("runtime of s3 before %v, after %v; of s4 after %v", rt != nil, runtimeOf("s3") != nil, runtimeOf("s4") != nil)
	}
	get("s3.example", 404)

	// A detached domain.
	must(t, reg.DetachDomain(ctx, "s4.example"))
	if routes()["s4.example"] != nil || runtimeOf("s4") == nil {
		t.Errorf("s4.example still routed after detaching it, or its site's resources closed")
	}
	get("s4.example", 404)
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
