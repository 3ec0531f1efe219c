package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/admin"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// behindLimit is how long a node may hold an older registry version than
// Redis before /readyz says so.
const behindLimit = 10 * time.Second

// watchRegistry returns the part that keeps reg in step with the registry
// in Redis while it runs: it follows the change log (store.RedisKV
// ReadLog, sites.Registry Follow), so another node's write costs this one
// what it changed, and loads the whole registry again only when the log
// cannot bring it up to date (this node fell further behind than the log
// keeps, or a write too large to log, such as a restore). A version check
// every second catches a log that holds nothing newer while Redis does.
// The registry version this node is behind by is the metric
// tollgate_registry_behind_versions; behind for longer than behindLimit
// fails the returned readiness check.
//
// A registry Redis lost (restarted empty, or back at an older version) is
// not loaded: the node keeps serving its snapshot, logs one ERROR, sets
// tollgate_store_registry_lost to 1 and reports it in the returned
// (non-fatal) readiness check until the registry is restored.
func watchRegistry(kv *store.RedisKV, reg *sites.Registry, metrics prometheus.Registerer, log *slog.Logger) (*loop, admin.Check) {
	w := newRegistryWatch(kv, reg, metrics, log)
	return &loop{run: w.run}, admin.Check{Name: "registry", Run: w.check}
}

// newRegistryWatch is watchRegistry's watch, its metrics registered.
func newRegistryWatch(kv *store.RedisKV, reg *sites.Registry, metrics prometheus.Registerer, log *slog.Logger) *registryWatch {
	w := &registryWatch{kv: kv, reg: reg, log: log}
	metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_store_registry_lost",
		Help: "1 while Redis does not hold the registry this node serves (it came back empty or at an older version): the node serves its last snapshot and refuses registry changes until `tollgate store restore`.",
	}, func() float64 {
		if reg.Lost() != nil {
			return 1
		}
		return 0
	}), prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tollgate_registry_behind_versions",
		Help: "Registry writes in Redis this node had not applied at its last check (each second); 0 when in step.",
	}, func() float64 { return float64(w.behind.Load()) }), prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tollgate_registry_full_loads_total",
		Help: "Times this node loaded the whole registry from Redis because the change log could not bring it up to date.",
	}, func() float64 { return float64(w.reloads.Load()) }))
	return w
}

type registryWatch struct {
	kv  *store.RedisKV
	reg *sites.Registry
	log *slog.Logger

	behind      atomic.Int64 // versions behind at the last check
	behindSince atomic.Int64 // unix nanos since when behind; 0: in step
	reloads     atomic.Int64
	reported    bool // the loss was logged; only run's goroutine touches it
	readErr     bool // a log read failure was logged; likewise
}

// logBatch is how many log entries one read returns at most.
const logBatch = 1000

func (w *registryWatch) run(ctx context.Context) {
	check := time.NewTicker(time.Second)
	defer check.Stop()
	w.reconcile(ctx)
	for ctx.Err() == nil {
		entries, err := w.kv.ReadLog(ctx, w.reg.Seen(), logBatch, time.Second)
		switch {
		case err != nil && ctx.Err() == nil:
			if !w.readErr {
				w.readErr = true
				w.log.Warn("registry change log not readable from redis; serving the last snapshot", slog.Any("err", err))
			}
			select { // Redis down: try again at the next check
			case <-ctx.Done():
			case <-check.C:
			}
		case len(entries) > 0:
			w.readErr = false
			if !w.reg.Follow(entries) {
				w.reload(ctx)
			}
		}
		select {
		case <-check.C:
			w.reconcile(ctx)
		default:
		}
	}
}

// reconcile compares the version this node holds with Redis's: behind, it
// reads the log at once (a missed or trimmed entry then means a reload);
// ahead (Redis lost writes) or lost, it reloads, which reports the loss or
// its end.
func (w *registryWatch) reconcile(ctx context.Context) {
	seen := w.reg.Seen() // first: this node's own writes meanwhile only raise v
	v, err := w.kv.Version(ctx)
	if err != nil {
		return // Redis down: the snapshot keeps serving
	}
	if w.reg.Lost() != nil || v < seen {
		w.reload(ctx)
	} else if v > seen {
		entries, err := w.kv.ReadLog(ctx, seen, logBatch, 0)
		if err == nil && (len(entries) == 0 || entries[0].Version != seen+1 || !w.reg.Follow(entries)) {
			w.reload(ctx)
		}
	}
	behind := max(v-w.reg.Seen(), 0)
	w.behind.Store(behind)
	switch {
	case behind == 0:
		w.behindSince.Store(0)
	case w.behindSince.Load() == 0:
		w.behindSince.Store(time.Now().UnixNano())
	}
}

// reload loads the whole registry (sites.Registry Reload) and logs a loss
// or its end once.
func (w *registryWatch) reload(ctx context.Context) {
	w.reloads.Add(1)
	_, err := w.reg.Reload(ctx)
	switch {
	case errors.Is(err, sites.ErrRegistryLost):
		if !w.reported {
			w.reported = true
			loss := w.reg.Lost()
			w.log.Error("registry lost from redis; serving the last snapshot and refusing registry changes until it is restored (tollgate store restore)",
				slog.String("reason", loss.Reason), slog.Int("orgs", loss.Orgs), slog.Int("sites", loss.Sites), slog.Int("domains", loss.Domains))
		}
	case err != nil:
		if ctx.Err() == nil {
			w.log.Warn("registry not reloaded from redis; serving the last snapshot", slog.Any("err", err))
		}
	case w.reported && w.reg.Lost() == nil:
		w.reported = false
		w.log.Info("registry in redis matches this node's snapshot again; registry changes accepted")
	}
}

// check is the readiness check: lost, or behind for too long.
func (w *registryWatch) check(context.Context) error {
	if loss := w.reg.Lost(); loss != nil {
		return fmt.Errorf("lost from redis since %s (%s); serving the last snapshot (%d orgs, %d sites, %d domains), changes refused until `tollgate store restore`",
			loss.Since.UTC().Format(time.RFC3339), loss.Reason, loss.Orgs, loss.Sites, loss.Domains)
	}
	if since := w.behindSince.Load(); since != 0 && time.Since(time.Unix(0, since)) > behindLimit {
		return fmt.Errorf("behind redis by %d registry writes since %s", w.behind.Load(), time.Unix(0, since).UTC().Format(time.RFC3339))
	}
	return nil
}
