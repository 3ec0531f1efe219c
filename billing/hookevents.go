package billing

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// HookConfig is one [[billing.hooks]] entry.
type HookConfig struct {
	// URL is the http(s) URL that receives a POST per event. Each URL has
	// its own delivery worker and queue; a URL may be listed once.
	URL string `toml:"url"`
	// Secret is the HMAC-SHA256 key of Tollgate-Signature, at least 16
	// characters (already resolved from env:/file: by the caller). Required.
	Secret string `toml:"secret"`
	// Events lists the event types sent to URL (see HookTypes). Empty: all.
	Events []string `toml:"events"`
}

// minHookSecret is the shortest secret a hook accepts.
const minHookSecret = 16

// Validate names every bad key of the i-th [[billing.hooks]] entry. It does
// no I/O.
func (c HookConfig) Validate(i int) error {
	var errs []error
	key := func(k string) string { return fmt.Sprintf("billing.hooks[%d].%s", i, k) }
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("%s: %q must be an http:// or https:// URL with a host", key("url"), c.URL))
	}
	if len(c.Secret) < minHookSecret {
		errs = append(errs, fmt.Errorf("%s: must be at least %d characters (has %d)", key("secret"), minHookSecret, len(c.Secret)))
	}
	for _, t := range c.Events {
		if !hookTypeSet[t] {
			errs = append(errs, fmt.Errorf("%s: unknown event type %q (known: %s)", key("events"), t, strings.Join(HookTypes, ", ")))
		}
	}
	return errors.Join(errs...)
}

// HookTypes lists every event type, for [[billing.hooks]] events and docs
// (docs/hooks.md describes each with a sample payload; a test keeps the two
// in step).
var HookTypes = []string{
	"quota.warning", "quota.exceeded", "quota.storage_exceeded", "org.throttled", "org.blocked",
	"grace.started", "grace.ending", "org.expired",
	"payment.succeeded", "payment.failed", "org.restored",
	"trial.ending", "trial.ended",
	"grace.ended", "coupon.cashed",
	"credit.low", "credit.exhausted", "credit.topped_up",
}

// hookTypeSet is HookTypes as a set (built once: changing HookTypes later
// does not change what is valid).
var hookTypeSet = func() map[string]bool {
	m := make(map[string]bool, len(HookTypes))
	for _, t := range HookTypes {
		m[t] = true
	}
	return m
}()

// KnownHookType reports whether t is one of HookTypes (as they were at
// start).
func KnownHookType(t string) bool { return hookTypeSet[t] }

// HookEvent is one lifecycle event, the JSON body of a delivery. Package
// billing/hooks delivers them; its Hooks type documents the headers and how
// a receiver checks them.
type HookEvent struct {
	// ID is unique and stable across retries: receivers deduplicate on it.
	// A caller may set it to make an emit idempotent (e.g.
	// "quota.warning:acme:2026-11:egress"); if empty, Emit makes a random
	// "evt_<hex>". At most 256 bytes, no control characters.
	ID   string         `json:"id"`
	Type string         `json:"type"` // one of HookTypes
	Org  string         `json:"org"`
	At   time.Time      `json:"created_at"` // default: Emit's clock
	Data map[string]any `json:"data,omitempty"`
}
