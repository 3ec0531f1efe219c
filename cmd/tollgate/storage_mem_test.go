//go:build !race

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// maxTenderHeapPerSite bounds the heap the site tender holds per registry
// site, besides the registry and the meter: it keeps no entry per site,
// only one per directory and per gitea site.
const maxTenderHeapPerSite = 4

// TestSiteTenderHeapPerSite loads a registry of 100,000 dir sites (on 16
// directories, in 100 orgs) from a bbolt store as start-up does, runs a
// whole round and bounds the heap the tender holds per site
// (maxTenderHeapPerSite).
func TestSiteTenderHeapPerSite(t *testing.T) {
	const n, dirs, orgs = 100_000, 16, 100
	ctx := context.Background()
	st := storetest.Open(t)
	root := t.TempDir()
	put := func(bucket, key string, v any) store.Op {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return store.Put(bucket, key, b)
	}
	ops := []store.Op{put("plans", "big", sites.Plan{Name: "big"})}
	for i := range dirs {
		dir := filepath.Join(root, fmt.Sprint(i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "index.html"), make([]byte, 100+i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range orgs {
		id := fmt.Sprintf("o-%d", i)
		ops = append(ops, put("orgs", id, sites.Org{ID: id, Plan: "big", State: sites.StateActive}))
	}
	for i := range n {
		id, dir := fmt.Sprintf("s-%d", i), filepath.Join(root, fmt.Sprint(i%dirs))
		ops = append(ops, put("sites", id, sites.Site{ID: id, Org: fmt.Sprintf("o-%d", i%orgs), Source: sites.Source{Type: sites.SourceDir, Path: dir}}))
		if len(ops) >= 30_000 || i == n-1 {
			if err := st.Apply(ctx, ops...); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	reg, err := sites.New(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if got := reg.Snapshot().Sites.Len(); got != n {
		t.Fatalf("loaded %d sites, want %d", got, n)
	}

	before := tenderHeapInUse()
	tender := newSiteTender(reg, nil, nil, time.Hour, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	tender.round(ctx)
	after := tenderHeapInUse()
	if tender.measured != n || picturedSites(tender) != n {
		t.Fatalf("the round measured %d sites, pictured %d; want %d", tender.measured, picturedSites(tender), n)
	}
	if got, ok := tender.stored("o-7", "s-7"); !ok || got != 107 {
		t.Fatalf("s-7 stores %d bytes (pictured: %t); want 107", got, ok)
	}
	perSite := (float64(after) - float64(before)) / n
	t.Logf("%d sites: the tender holds %.1f B of heap a site", n, perSite)
	if perSite > maxTenderHeapPerSite {
		t.Errorf("the tender holds %.1f bytes of heap a site, more than %d", perSite, maxTenderHeapPerSite)
	}
	runtime.KeepAlive(tender)
	runtime.KeepAlive(reg)
}

// tenderHeapInUse is the heap the program holds after a full collection.
func tenderHeapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
