package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
)

// TestSiteTenderWalksDirsEveryInterval: a dir site is walked once per
// storage interval on the tender's clock, and a deleted site leaves the
// picture at the next round, without waiting for a walk.
func TestSiteTenderWalksDirsEveryInterval(t *testing.T) {
	ctx := context.Background()
	reg, err := sites.New(ctx, storetest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	write := func(name string, n int) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(root, name), make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("index.html", 100)
	if _, err := reg.CreateOrg(ctx, sites.Org{ID: "acme", Plan: sites.FreePlan.Name}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.CreateSite(ctx, sites.Site{ID: "docs", Org: "acme", Source: sites.Source{Type: sites.SourceDir, Path: root}}); err != nil {
		t.Fatal(err)
	}
	const interval = 5 * time.Minute
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tender := newSiteTender(reg, nil, nil, interval, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return now })
	stored := func() (int64, bool) {
		return tender.stored("acme", "docs")
	}

	steps := []struct {
		name    string
		advance time.Duration
		change  func()
		want    int64 // -1: not in the picture
	}{
		{"the first round walks", 0, nil, 100},
		{"within the interval the last walk stands", interval - time.Nanosecond, func() { write("big.bin", 1000) }, 100},
		{"a full interval after the last walk, it walks again", time.Nanosecond, nil, 1100},
		{"a deleted site leaves the picture at once", 0, func() {
			if err := reg.DeleteSite(ctx, "docs"); err != nil {
				t.Fatal(err)
			}
		}, -1},
	}
	for _, st := range steps {
		now = now.Add(st.advance)
		if st.change != nil {
			st.change()
		}
		tender.round(ctx)
		n, ok := stored()
		if !ok {
			n = -1
		}
		if n != st.want {
			t.Fatalf("%s: docs stores %d bytes in the picture; want %d", st.name, n, st.want)
		}
	}
}

// TestSiteTenderCostsWhatChanged: between walks a round measures the sites
// the registry wrote since the last round, not every site: a write on a
// registry of thousands costs one site's measure. A new site on a
// directory walked before takes its size from that walk; one on a new
// directory is walked at once; a site moved to another directory is
// measured there; a deleted one leaves the picture.
func TestSiteTenderCostsWhatChanged(t *testing.T) {
	ctx := context.Background()
	reg, err := sites.New(ctx, storetest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	shared, other := t.TempDir(), t.TempDir()
	for dir, n := range map[string]int{shared: 300, other: 7} {
		if err := os.WriteFile(filepath.Join(dir, "index.html"), make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.PutPlan(ctx, sites.Plan{Name: "big"}); err != nil { // no limits
		t.Fatal(err)
	}
	if _, err := reg.CreateOrg(ctx, sites.Org{ID: "acme", Plan: "big"}); err != nil {
		t.Fatal(err)
	}
	const many = 1000
	dir := func(path string) sites.Source { return sites.Source{Type: sites.SourceDir, Path: path} }
	for i := range many {
		if _, err := reg.CreateSite(ctx, sites.Site{ID: fmt.Sprintf("s%d", i), Org: "acme", Source: dir(shared)}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tender := newSiteTender(reg, nil, nil, time.Hour, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return now })
	tender.round(ctx)
	if tender.measured != many || picturedSites(tender) != many {
		t.Fatalf("the first round measured %d sites, pictured %d; want %d", tender.measured, picturedSites(tender), many)
	}
	steps := []struct {
		name     string
		write    func() error
		site     string
		want     int64 // -1: not in the picture
		measured int
	}{
		{"no write: nothing measured", func() error { return nil }, "s0", 300, 0},
		{"a new site on a walked directory", func() error {
			_, err := reg.CreateSite(ctx, sites.Site{ID: "fresh", Org: "acme", Source: dir(shared)})
			return err
		}, "fresh", 300, 1},
		{"a new site on a new directory", func() error {
			_, err := reg.CreateSite(ctx, sites.Site{ID: "elsewhere", Org: "acme", Source: dir(other)})
			return err
		}, "elsewhere", 7, 1},
		{"a site moved to another directory", func() error {
			res, err := reg.Import(ctx, []sites.Record{{Site: &sites.Site{ID: "s2", Org: "acme", Source: dir(other)}}})
			if err == nil && res[0].Err != nil {
				err = res[0].Err
			}
			return err
		}, "s2", 7, 1},
		{"a site deleted", func() error { return reg.DeleteSite(ctx, "s1") }, "s1", -1, 1},
	}
	for _, st := range steps {
		if err := st.write(); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
		tender.round(ctx)
		n, ok := tender.stored("acme", st.site)
		if !ok {
			n = -1
		}
		if n != st.want || tender.measured != st.measured {
			t.Fatalf("%s: %s stores %d bytes, %d sites measured; want %d, %d", st.name, st.site, n, tender.measured, st.want, st.measured)
		}
	}
	if n := picturedSites(tender); n != many+1 {
		t.Fatalf("%d sites pictured, want %d", n, many+1)
	}
}

// picturedSites counts the registry sites in tender's picture.
func picturedSites(tender *siteTender) int {
	n := 0
	for _, s := range tender.reg.Snapshot().Sites.All() {
		if _, ok := tender.bytes(s); ok {
			n++
		}
	}
	return n
}

// TestSiteTenderTellsTheMeter: between walks, a site moved to another org
// stops accruing for the former one at the next round and accrues its
// bytes for the new one; a deleted site stops accruing at once.
func TestSiteTenderTellsTheMeter(t *testing.T) {
	ctx := context.Background()
	reg, err := sites.New(ctx, storetest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "index.html"), make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, org := range []string{"acme", "beta"} {
		if _, err := reg.CreateOrg(ctx, sites.Org{ID: org, Plan: sites.FreePlan.Name}); err != nil {
			t.Fatal(err)
		}
	}
	docs := sites.Site{ID: "docs", Org: "acme", Source: sites.Source{Type: sites.SourceDir, Path: root}}
	if _, err := reg.CreateSite(ctx, docs); err != nil {
		t.Fatal(err)
	}
	m, err := meter.New(meter.Config{}, meter.Options{Sink: discardSink{}, Node: "n1", Metrics: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tender := newSiteTender(reg, nil, m, time.Hour, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), func() time.Time { return now })
	steps := []struct {
		name       string
		write      func() error
		acme, beta int64 // what docs stores for each org in the meter
	}{
		{"the first round", func() error { return nil }, 100, 0},
		{"moved to another org (deleted, created again) between rounds", func() error {
			if err := reg.DeleteSite(ctx, "docs"); err != nil {
				return err
			}
			docs.Org = "beta"
			_, err := reg.CreateSite(ctx, docs)
			return err
		}, 0, 100},
		{"deleted", func() error { return reg.DeleteSite(ctx, "docs") }, 0, 0},
	}
	for _, st := range steps {
		if err := st.write(); err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
		tender.round(ctx)
		if acme, beta := m.Storage("acme", "docs"), m.Storage("beta", "docs"); acme != st.acme || beta != st.beta {
			t.Fatalf("%s: docs stores %d bytes for acme, %d for beta; want %d, %d", st.name, acme, beta, st.acme, st.beta)
		}
	}
}

// discardSink drops every batch.
type discardSink struct{}

func (discardSink) Apply(context.Context, *meter.Batch) error { return nil }
