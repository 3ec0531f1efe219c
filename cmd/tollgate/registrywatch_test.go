package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/internal/redistest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// TestRegistryWatchSaysBehind: a node that cannot catch up with the
// registry in Redis (a version with no log entry, and a record it cannot
// decode, so neither following nor a full load brings it level) says so:
// tollgate_registry_behind_versions counts the versions, and past
// behindLimit its readiness check fails naming them. Once Redis is readable
// again, it catches up and both clear.
func TestRegistryWatchSaysBehind(t *testing.T) {
	ctx := context.Background()
	rs := redistest.Start(t)
	rc := rs.NewClient(t)
	kv := store.NewRedisKV(rc, nil)
	reg, err := sites.New(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.CreateOrg(ctx, sites.Org{ID: "acme", Plan: sites.FreePlan.Name}); err != nil {
		t.Fatal(err)
	}
	metrics := prometheus.NewRegistry()
	w := newRegistryWatch(kv, reg, metrics, slog.New(slog.NewTextHandler(io.Discard, nil)))

	w.reconcile(ctx)
	if err := w.check(ctx); err != nil || behindVersions(t, metrics) != 0 {
		t.Fatalf("in step: check %v, behind %v", err, behindVersions(t, metrics))
	}

	// Another writer's version without its log entry, and a record no node
	// can decode.
	if err := rc.Incr(ctx, "{tollgate:reg}:version").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.HSet(ctx, "{tollgate:reg}:b:orgs", "broken", "{not json").Err(); err != nil {
		t.Fatal(err)
	}
	w.reconcile(ctx)
	if got := behindVersions(t, metrics); got != 1 {
		t.Fatalf("tollgate_registry_behind_versions = %v, want 1", got)
	}
	if err := w.check(ctx); err != nil {
		t.Fatalf("behind for less than %s: check fails already: %v", behindLimit, err)
	}
	w.behindSince.Store(time.Now().Add(-behindLimit - time.Second).UnixNano()) // behind that long
	if err := w.check(ctx); err == nil || !strings.Contains(err.Error(), "behind redis by 1 registry writes") {
		t.Fatalf("behind for more than %s: check %v, want it to say so", behindLimit, err)
	}

	if err := rc.HDel(ctx, "{tollgate:reg}:b:orgs", "broken").Err(); err != nil {
		t.Fatal(err)
	}
	w.reconcile(ctx) // a full load now succeeds
	if err := w.check(ctx); err != nil || behindVersions(t, metrics) != 0 {
		t.Fatalf("caught up: check %v, behind %v", err, behindVersions(t, metrics))
	}
}

func behindVersions(t *testing.T, metrics *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tollgate_registry_behind_versions" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no tollgate_registry_behind_versions")
	return 0
}
