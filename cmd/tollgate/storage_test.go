package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/storetest"
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
	tender := &siteTender{reg: reg, interval: interval, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		now: func() time.Time { return now }}
	stored := func() (int64, bool) {
		_, n, ok := tender.last.Get("acme", "docs")
		return n, ok
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
