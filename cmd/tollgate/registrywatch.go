package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/admin"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// watchRegistry returns the part that keeps reg in step with the registry
// in Redis while it runs: other nodes' writes arrive through pub/sub, and a
// version check every second heals any missed message. A registry Redis
// lost (restarted empty, or back at an older version) is not loaded: the
// node keeps serving its snapshot, logs one ERROR, sets
// tollgate_store_registry_lost to 1 and reports it in the returned
// (non-fatal) readiness check until the registry is restored.
func watchRegistry(kv *store.RedisKV, reg *sites.Registry, metrics prometheus.Registerer, log *slog.Logger) (*loop, admin.Check) {
	metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_store_registry_lost",
		Help: "1 while Redis does not hold the registry this node serves (it came back empty or at an older version): the node serves its last snapshot and refuses registry changes until `tollgate store restore`.",
	}, func() float64 {
		if reg.Lost() != nil {
			return 1
		}
		return 0
	}))
	reported := false // only the watcher goroutine touches it
	reload := func(ctx context.Context) {
		_, err := reg.Reload(ctx)
		switch {
		case errors.Is(err, sites.ErrRegistryLost):
			if !reported {
				reported = true
				loss := reg.Lost()
				log.Error("registry lost from redis; serving the last snapshot and refusing registry changes until it is restored (tollgate store restore)",
					slog.String("reason", loss.Reason), slog.Int("orgs", loss.Orgs), slog.Int("sites", loss.Sites), slog.Int("domains", loss.Domains))
			}
		case err != nil:
			if ctx.Err() == nil {
				log.Warn("registry not reloaded from redis; serving the last snapshot", slog.Any("err", err))
			}
		case reported && reg.Lost() == nil:
			reported = false
			log.Info("registry in redis matches this node's snapshot again; registry changes accepted")
		}
	}
	watch := &loop{run: func(ctx context.Context) {
		kv.Watch(ctx, time.Second, func() { reload(ctx) })
	}}
	return watch, admin.Check{Name: "registry", Run: func(context.Context) error {
		if loss := reg.Lost(); loss != nil {
			return fmt.Errorf("lost from redis since %s (%s); serving the last snapshot (%d orgs, %d sites, %d domains), changes refused until `tollgate store restore`",
				loss.Since.UTC().Format(time.RFC3339), loss.Reason, loss.Orgs, loss.Sites, loss.Domains)
		}
		return nil
	}}
}
