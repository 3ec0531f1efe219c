// Package reason holds the stable, machine-readable codes of tollgate's
// refusals: the "code" member of every problem document the admin API
// answers and the Tollgate-Reason header of the pages the proxy answers
// for an account or routing decision. A client branches on the code, never
// on a title or a detail, which may be reworded.
//
// It is a leaf: admin and proxy import it, and it imports nothing of
// tollgate's.
package reason

// Code is one stable reason. Codes are upper-case ASCII with underscores;
// one is never renamed or given another meaning, only added.
type Code string

// Codes of the admin API's problem documents.
const (
	BadRequest           Code = "BAD_REQUEST"            // 400: malformed JSON, an unknown field, a bad query parameter
	Unauthorized         Code = "UNAUTHORIZED"           // 401: no valid bearer token, or a bad webhook signature
	InsufficientScope    Code = "INSUFFICIENT_SCOPE"     // 403: the org token lacks the scope the route needs
	NotFound             Code = "NOT_FOUND"              // 404: the named plan, org, site or domain does not exist
	RouteNotFound        Code = "ROUTE_NOT_FOUND"        // 404: no route has this path
	MethodNotAllowed     Code = "METHOD_NOT_ALLOWED"     // 405: the path exists, the method does not (Allow lists them)
	Conflict             Code = "CONFLICT"               // 409: an id or domain taken, an org that still owns sites
	PlanLimit            Code = "PLAN_LIMIT"             // 409: the org's plan allows no more sites or domains
	ReservedDomain       Code = "RESERVED_DOMAIN"        // 409: the domain is one of tollgate's own names
	BodyTooLarge         Code = "BODY_TOO_LARGE"         // 413: the body exceeds its limit
	UnsupportedMediaType Code = "UNSUPPORTED_MEDIA_TYPE" // 415: the body is not JSON (or NDJSON where that is asked)
	Invalid              Code = "INVALID"                // 422: a field is malformed or refers to nothing
	SiteNotInOrg         Code = "SITE_NOT_IN_ORG"        // 422: the site named belongs to another org
	Internal             Code = "INTERNAL"               // 500: an internal error; the server log has the details
	UpstreamUnavailable  Code = "UPSTREAM_UNAVAILABLE"   // 502: Gitea could not be asked
	NotConfigured        Code = "NOT_CONFIGURED"         // 503: the feature is not configured on this node
	NotReady             Code = "NOT_READY"              // 503: the server, or a fatal readiness check, is not ready
	RegistryUnavailable  Code = "REGISTRY_UNAVAILABLE"   // 503: the registry's store was lost; writes are refused
)

// Codes of the proxy's refusals (the Tollgate-Reason header).
const (
	AccountSuspended   Code = "ACCOUNT_SUSPENDED"   // 403: the org is suspended by the operator
	NoAccount          Code = "NO_ACCOUNT"          // 403: the site's org is not in the registry
	PaymentRequired    Code = "PAYMENT_REQUIRED"    // 402: the account is expired (unpaid past its grace period)
	QuotaExceeded      Code = "QUOTA_EXCEEDED"      // 429: past the hard limit of the egress quota
	MisdirectedRequest Code = "MISDIRECTED_REQUEST" // 421: the TLS connection was opened for another host
	// StorageQuotaExceeded, 429: the org stores more than its plan allows,
	// for longer than [billing] storage_grace.
	StorageQuotaExceeded Code = "STORAGE_QUOTA_EXCEEDED"
	// UpgradeRequired, 402: the site or domain is beyond what the org's plan
	// includes (after a downgrade, past [billing] downgrade_grace).
	UpgradeRequired Code = "UPGRADE_REQUIRED"
	// SiteInactive, 404: the site is deactivated (active: false).
	SiteInactive Code = "SITE_INACTIVE"
	// RateLimited, 429: past a request-rate limit (also the admin API's
	// per-token limit).
	RateLimited Code = "RATE_LIMITED"
)

// Codes of refusals of billing's rules in the admin API.
const (
	PlanDowngradeNotAllowed Code = "PLAN_DOWNGRADE_NOT_ALLOWED" // 409: a tenant asked for a lower-ranked plan
	// CreditCodeInvalid, 422: no credit code has this name, or it was
	// withdrawn.
	CreditCodeInvalid Code = "CREDIT_CODE_INVALID"
	CreditCodeExpired Code = "CREDIT_CODE_EXPIRED" // 422: the credit code's expiry has passed
	// CreditCodeUsedUp, 409: the credit code was redeemed as often as it
	// may be.
	CreditCodeUsedUp Code = "CREDIT_CODE_USED_UP"
	// CreditCodeAlreadyRedeemed, 409: the org redeemed this credit code
	// before (the answer names that grant).
	CreditCodeAlreadyRedeemed Code = "CREDIT_CODE_ALREADY_REDEEMED"
)

// Sender says who answers with a code.
type Sender string

// Senders.
const (
	SentByAdmin Sender = "admin" // in problem documents of the admin API
	SentByProxy Sender = "proxy" // in the Tollgate-Reason header of the public listeners
	SentByNone  Sender = "none"  // declared, sent by nothing in this build
)

// Entry documents one code.
type Entry struct {
	Code   Code
	Status int // the HTTP status it comes with
	Sender Sender
	// Meaning is one sentence, as docs/errors.md has it.
	Meaning string
}

// All lists every code, in the order of docs/errors.md.
func All() []Entry {
	return []Entry{
		{BadRequest, 400, SentByAdmin, "Malformed JSON, an unknown field, or a bad query parameter (the detail names it)."},
		{Unauthorized, 401, SentByAdmin, "No valid bearer token, or a Gitea webhook without a valid signature."},
		{InsufficientScope, 403, SentByAdmin, "The org token lacks the scope the route needs (read, write, billing or admin); the detail names it."},
		{NotFound, 404, SentByAdmin, "The named plan, org, site, domain or token does not exist, or belongs to another org than the token's."},
		{RouteNotFound, 404, SentByAdmin, "No route has this path (check the base URL and the API version)."},
		{MethodNotAllowed, 405, SentByAdmin, "The path exists but not with this method; Allow lists its methods."},
		{Conflict, 409, SentByAdmin, "The write clashes with existing state: an id or a domain taken, an org that still owns sites."},
		{PlanLimit, 409, SentByAdmin, "The org's plan allows no more sites or domains (limit and max say which)."},
		{ReservedDomain, 409, SentByAdmin, "The domain is one of tollgate's own names (the pages domain and names under it, the Stripe webhook host)."},
		{BodyTooLarge, 413, SentByAdmin, "The request body exceeds its limit."},
		{UnsupportedMediaType, 415, SentByAdmin, "The Content-Type is not JSON (or NDJSON for an import)."},
		{Invalid, 422, SentByAdmin, "A field is malformed or refers to something that does not exist."},
		{SiteNotInOrg, 422, SentByAdmin, "The site named in a usage query belongs to another org than the one named."},
		{Internal, 500, SentByAdmin, "An internal error; the server log has the details."},
		{UpstreamUnavailable, 502, SentByAdmin, "Gitea or Stripe could not be asked (a push webhook: the branch is rechecked on its next request; a payment link: try again)."},
		{NotConfigured, 503, SentByAdmin, "The feature is not configured on this node (metering, billing, TLS, backups)."},
		{NotReady, 503, SentByAdmin, "The server is not ready: a fatal readiness check fails (GET /readyz)."},
		{RegistryUnavailable, 503, SentByAdmin, "The registry's store was lost; writes are refused until it is back."},
		{AccountSuspended, 403, SentByProxy, "The site's org is suspended by the operator."},
		{NoAccount, 403, SentByProxy, "The site's org is not in the registry."},
		{PaymentRequired, 402, SentByProxy, "The org's account is expired: unpaid past its grace period; the site is paused."},
		{QuotaExceeded, 429, SentByProxy, "The org is past the hard limit of its egress quota (Retry-After: 3600)."},
		{MisdirectedRequest, 421, SentByProxy, "The TLS connection was opened for another host; retry on a new connection."},
		{StorageQuotaExceeded, 429, SentByProxy, "The org stores more than its plan allows, for longer than the storage grace; removing files or a larger plan serves it again."},
		{UpgradeRequired, 402, SentByProxy, "The site or domain is beyond what the org's plan includes (after a downgrade, past the downgrade grace); a plan that includes it serves it again at once."},
		{SiteInactive, 404, SentByProxy, "The site is deactivated by its org or the operator (active: false)."},
		{RateLimited, 429, SentByProxy, "Past a request-rate limit: the org's requests_per_second, the client's limits.per_ip_rps, or the admin API's per-token limit (a problem with this code); Retry-After, RateLimit-Policy and RateLimit say when to retry."},
		{PlanDowngradeNotAllowed, 409, SentByAdmin, "A move to a plan of equal or lower rank without force (PATCH /v1/orgs/{id} with \"force\": true moves down)."},
		{CreditCodeInvalid, 422, SentByAdmin, "No credit code has this name (matched without regard to case), or the operator withdrew it."},
		{CreditCodeExpired, 422, SentByAdmin, "The credit code's expiry has passed."},
		{CreditCodeUsedUp, 409, SentByAdmin, "The credit code was redeemed by as many orgs as it allows."},
		{CreditCodeAlreadyRedeemed, 409, SentByAdmin, "The org redeemed this credit code before; a code grants its credit once per org."},
	}
}

// HeaderName is the response header of the proxy's refusals that carries
// the code.
const HeaderName = "Tollgate-Reason"
