package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/hooks"
	"github.com/tollgate-edge/tollgate/billing/stripe"
	"github.com/tollgate-edge/tollgate/proxy"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// newBilling starts enforcement (always: plans, states and, with the meter,
// quotas), the lifecycle hooks when [[billing.hooks]] are configured, and
// Stripe when [billing.stripe] is. It returns Stripe's webhook as a route
// for the public listeners (nil without Stripe) and a func that stops them
// all, in reverse order.
func newBilling(ctx context.Context, cfg Config, st *store.Bolt, records billing.Scanner, reg *sites.Registry, usage usageParts,
	metrics prometheus.Registerer, log *slog.Logger) (*billing.Billing, *proxy.InternalRoute, func(), error) {
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	// run starts a part's loop on a context of its own, so that stop, not
	// the end of ctx, ends it in order.
	run := func(loop func(context.Context), closer func() error) {
		rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		go loop(rctx)
		stops = append(stops, func() {
			cancel()
			if closer != nil {
				_ = closer()
			}
		})
	}

	opts := billing.Options{Sites: reg, Store: st, Records: records, Metrics: metrics, Logger: log}
	if usage.reader != nil {
		opts.Usage = usage.reader
	}
	if usage.m != nil {
		opts.Storage = usage.m
	}
	if len(cfg.Billing.Hooks) > 0 {
		h, err := hooks.New(cfg.Billing.Hooks, hooks.Options{Store: st, Metrics: metrics, Logger: log})
		if err != nil {
			return nil, nil, stop, err
		}
		run(h.Run, h.Close)
		opts.Hooks = h
	}
	bill, err := billing.New(ctx, cfg.Billing, opts)
	if err != nil {
		stop()
		return nil, nil, stop, err
	}
	run(bill.Run, nil)
	if !cfg.Billing.Stripe.Enabled() {
		return bill, nil, stop, nil
	}
	sopts := stripe.Options{Accounts: bill, Store: st, Usage: opts.Usage, Metrics: metrics, Logger: log}
	if kv, ok := records.(*store.RedisKV); ok {
		sopts.EventIDs = kv // a redelivery to another node is a duplicate too
	}
	s, err := stripe.New(cfg.Billing.Stripe, sopts)
	if err != nil {
		stop()
		return nil, nil, stop, err
	}
	run(s.Run, s.Close)
	host, _ := sites.NormalizeDomain(cfg.Billing.Stripe.WebhookHost)
	webhook := &proxy.InternalRoute{Host: host, Path: cfg.Billing.Stripe.WebhookPath, MaxBody: stripe.MaxWebhookBody,
		Handler: fasthttpadaptor.NewFastHTTPHandler(s)}
	return bill, webhook, stop, nil
}
