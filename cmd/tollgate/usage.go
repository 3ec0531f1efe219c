package main

import (
	"context"
	"fmt"
	"time"

	"github.com/tollgate-edge/tollgate/admin"
	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/store"
)

// finalFlushTimeout bounds the meter's final flush at shutdown, counted
// from when it begins: the drain before it may have used all of
// server.shutdown_timeout. What the store does not take by then is spooled.
const finalFlushTimeout = 30 * time.Second

// startMeter starts the meter on the store in use: the bbolt file on the
// embedded default; with [store] redis, Redis for the counters and the bbolt
// file as the spool for what Redis cannot take while it is down. Usage
// that cannot be written either way waits in the spool file beside the
// store, whose room is reserved at start.
func (n *node) startMeter(ctx context.Context) error {
	if n.cfg.Meter.Disabled {
		return nil
	}
	id, err := n.st.NodeID(ctx)
	if err != nil {
		return err
	}
	local := store.NewBoltUsage(n.st)
	mc := n.cfg.Meter
	mc.Defaults()
	spool, err := meter.OpenSpoolFile(n.cfg.Store.Path+".spool", mc.SpoolBytes)
	if err != nil {
		return err
	}
	n.ps.adopt("meter spool", closes(spool.Close))
	opts := meter.Options{Sink: local, Journal: spool, Node: id, Metrics: n.metrics, Logger: n.log}
	n.admin.Usage, n.admin.SiteUsage, n.billing.Usage = local, local, local
	if n.rc != nil {
		// Fail open: serve and count; usage waits in memory, then in the
		// spool, until Redis answers.
		rs := store.NewRedisUsage(n.rc, store.RedisUsageOptions{Retention: n.cfg.Meter.HourlyRetention})
		sp, err := store.NewUsageSpool(ctx, n.st, store.UsageSpoolOptions{Metrics: n.metrics, Logger: n.log})
		if err != nil {
			return err
		}
		opts.Sink, opts.Spool, opts.StoreName = rs, sp, "redis"
		n.admin.Usage, n.admin.SiteUsage, n.billing.Usage = rs, rs, rs
	}
	m, err := meter.New(n.cfg.Meter, opts)
	if err != nil {
		return err
	}
	n.meter = m
	n.proxy.Usage, n.admin.Storage, n.billing.Storage = m, m, m
	// Usage that cannot be written is at risk (and quotas read stale
	// totals): fatal on the embedded store. With Redis, the redis check
	// says why and usage waits in the local spool: degraded.
	n.admin.Checks = append(n.admin.Checks, admin.Check{Name: "meter-flush", Fatal: n.cfg.Store.Redis == "", Run: m.Check})
	return n.ps.start(ctx, "meter", stopWithin(finalFlushTimeout, finalFlush{m}))
}

// finalFlush is the meter as a node part: stopping it is the final flush,
// which says so when usage could be neither written nor spooled.
type finalFlush struct{ *meter.Meter }

func (f finalFlush) Stop(ctx context.Context) error {
	if err := f.Meter.Stop(ctx); err != nil {
		return fmt.Errorf("usage not flushed at shutdown: %w", err)
	}
	return nil
}
