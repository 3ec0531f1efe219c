package main

import (
	"context"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/hooks"
	"github.com/tollgate-edge/tollgate/billing/stripe"
	"github.com/tollgate-edge/tollgate/credit"
	"github.com/tollgate-edge/tollgate/proxy"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// startBilling starts the lifecycle hooks when [[billing.hooks]] are
// configured, enforcement (always: plans, states and, with the meter,
// quotas; Gitea commits over the storage quota are not published), and
// Stripe when [billing.stripe] is; Stripe's webhook becomes a
// route of the public listeners. Stopped in reverse: Stripe's reports end
// first, the hooks' outbox last.
func (n *node) startBilling(ctx context.Context) error {
	opts := n.billing // Usage and Storage come from the meter
	opts.Sites, opts.Store, opts.Records, opts.Metrics, opts.Logger = n.reg, n.st, n.records, n.metrics, n.log
	if len(n.cfg.Billing.Hooks) > 0 {
		h, err := hooks.New(n.cfg.Billing.Hooks, hooks.Options{Store: n.st, Metrics: n.metrics, Logger: n.log})
		if err != nil {
			return err
		}
		if err := n.ps.start(ctx, "hooks", h); err != nil {
			return err
		}
		opts.Hooks = h
	}
	cs := n.creditStore()
	ledger, err := credit.New(credit.Config{Store: cs, Currency: n.cfg.Billing.Currency, Now: opts.Now})
	if err != nil {
		return err
	}
	opts.Credits, opts.Codes = ledger, cs
	bill, err := billing.New(ctx, n.cfg.Billing, opts)
	if err != nil {
		return err
	}
	if err := n.ps.start(ctx, "billing", bill); err != nil {
		return err
	}
	n.proxy.Gates, n.admin.Accounts, n.admin.Credits, n.admin.CreditCodes = bill, bill, bill, bill
	guard, err := billing.NewPublishGuard(ctx, bill)
	if err != nil {
		return err
	}
	n.admin.Publishing = guard
	if n.publish != nil {
		n.publish.setGuard(guard)
	}
	if !n.cfg.Billing.Stripe.Enabled() {
		return nil
	}
	s, err := stripe.New(n.cfg.Billing.Stripe, stripe.Options{Accounts: bill, Store: n.st, Usage: opts.Usage,
		Metrics: n.metrics, Logger: n.log, EventIDs: n.eventIDs, Plans: bill, Hooks: opts.Hooks, Credits: bill})
	if err != nil {
		return err
	}
	n.admin.Payments, n.admin.Invoicing, n.admin.Coupons, n.admin.TopUps = s, s, s, s
	if err := n.ps.start(ctx, "stripe", s); err != nil {
		return err
	}
	host, _ := sites.NormalizeDomain(n.cfg.Billing.Stripe.WebhookHost)
	n.proxy.Internal = append(n.proxy.Internal, proxy.InternalRoute{Host: host, Path: n.cfg.Billing.Stripe.WebhookPath,
		MaxBody: stripe.MaxWebhookBody, Handler: fasthttpadaptor.NewFastHTTPHandler(s)})
	return nil
}

// creditStores keeps the prepaid credit ledgers and the credit codes.
type creditStores interface {
	credit.Store
	credit.CodeStore
}

// creditStore is where the prepaid credit ledgers and credit codes live:
// with the registry, in the cluster's Redis or the bbolt file.
func (n *node) creditStore() creditStores {
	if n.rc != nil {
		return store.NewRedisCredit(n.rc)
	}
	return store.NewBoltCredit(n.st)
}
