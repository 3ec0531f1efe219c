// Package billing decides what each org may use.
//
// It applies [[billing.plans]], moves each org's account through its
// lifecycle (trialing, active, past_due, expired, suspended; lifecycle.go)
// with a recorded history, and sets each org's access.Gate from its state
// and its usage against its plan (enforce.go). It emits lifecycle events
// (HookEvent) to an Emitter; package billing/hooks delivers them, package
// billing/stripe turns Stripe's events into account changes, and package
// billing/access is the leaf the request path reads decisions from. Config
// is the whole [billing] section, those packages' keys included.
package billing
