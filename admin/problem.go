package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/tollgate-edge/tollgate/billing"
	"github.com/tollgate-edge/tollgate/billing/stripe"
	"github.com/tollgate-edge/tollgate/reason"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/gitea"
	"github.com/tollgate-edge/tollgate/tokens"
)

// Problem is an RFC 7807 problem detail: the body of every error response of
// the admin API, and the error the Client returns for one.
type Problem struct {
	// Type is "about:blank" (the status says it all) or a tollgate URN such as
	// "urn:tollgate:problem:limit".
	Type string `json:"type"`
	// Code is the stable machine-readable reason (docs/errors.md lists
	// them): what a client branches on. Every problem the server answers
	// has one; a Client builds problems without it from answers that were
	// not problems (a proxy's page).
	Code   reason.Code `json:"code,omitempty"`
	Title  string      `json:"title"`
	Status int         `json:"status"`
	Detail string      `json:"detail,omitempty"`
	// Limit and Max are set on a plan-limit problem: which limit ("sites",
	// "domains") and its value.
	Limit string `json:"limit,omitempty"`
	Max   int    `json:"max,omitempty"`
}

// Error returns "title: detail".
func (p *Problem) Error() string {
	if p.Detail == "" {
		return p.Title
	}
	return p.Title + ": " + p.Detail
}

// Problem types that are not about:blank.
const (
	ProblemTypeLimit = "urn:tollgate:problem:limit"
	// ProblemTypeReserved: the domain is one of tollgate's own hostnames
	// (the pages domain and every name under it, the Stripe webhook host).
	ProblemTypeReserved = "urn:tollgate:problem:reserved"
)

const (
	contentTypeJSON    = "application/json"
	contentTypeProblem = "application/problem+json"
)

// Errors of the HTTP layer. problemFor maps them, like the registry's, to a
// status.
var (
	errUnauthorized = errors.New("a valid bearer token is required")
	errNoRoute      = errors.New("no such route")
	errMethod       = errors.New("method not allowed")
	errNotReady     = errors.New("not ready")
	errNotConfig    = errors.New("not configured")
	errSiteNotInOrg = errors.New("the site belongs to another org")
	errBadRequest   = errors.New("bad request")
	errMediaType    = errors.New("unsupported media type")
)

// badRequest wraps err as a 400.
func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// problemFor is the one place that maps an error to a status, a code and a
// problem. It never puts the text of an unknown (internal) error in the
// problem: internal reports whether the caller should log err.
func problemFor(err error) (p *Problem, internal bool) {
	var limit *sites.LimitError
	var tooBig *http.MaxBytesError
	if p := codeProblem(err); p != nil {
		return p, false
	}
	switch {
	case errors.As(err, &limit):
		return &Problem{
			Type:   ProblemTypeLimit,
			Code:   reason.PlanLimit,
			Title:  "Plan limit reached: " + limit.Limit,
			Status: http.StatusConflict,
			Detail: limit.Error(),
			Limit:  limit.Limit,
			Max:    limit.Max,
		}, false
	case errors.Is(err, billing.ErrDowngrade):
		return &Problem{
			Type:   ProblemTypePlanDowngrade,
			Code:   reason.PlanDowngradeNotAllowed,
			Title:  "Plan downgrade not allowed",
			Status: http.StatusConflict,
			Detail: detail(err, billing.ErrDowngrade),
		}, false
	case errors.Is(err, sites.ErrReserved):
		return &Problem{
			Type:   ProblemTypeReserved,
			Code:   reason.ReservedDomain,
			Title:  "Domain reserved",
			Status: http.StatusConflict,
			Detail: detail(err, sites.ErrReserved),
		}, false
	case errors.As(err, &tooBig):
		return status(http.StatusRequestEntityTooLarge, reason.BodyTooLarge, fmt.Sprintf("the request body exceeds %d bytes", tooBig.Limit)), false
	case errors.Is(err, errBadRequest):
		return status(http.StatusBadRequest, reason.BadRequest, detail(err, errBadRequest)), false
	case errors.Is(err, errMediaType):
		return status(http.StatusUnsupportedMediaType, reason.UnsupportedMediaType, detail(err, errMediaType)), false
	case errors.Is(err, errUnauthorized):
		return status(http.StatusUnauthorized, reason.Unauthorized, errUnauthorized.Error()), false
	case errors.Is(err, errInsufficientScope):
		return status(http.StatusForbidden, reason.InsufficientScope, detail(err, errInsufficientScope)), false
	case errors.Is(err, errNoRoute):
		return status(http.StatusNotFound, reason.RouteNotFound, errNoRoute.Error()), false
	case errors.Is(err, errMethod):
		return status(http.StatusMethodNotAllowed, reason.MethodNotAllowed, "see the Allow header for the methods of this path"), false
	case errors.Is(err, stripe.ErrUpstream):
		// Logged: the detail is Stripe's own message.
		return status(http.StatusBadGateway, reason.UpstreamUnavailable, "Stripe could not be asked; try again"), true
	case errors.Is(err, gitea.ErrUpstream):
		// Logged: the detail would show internal addresses.
		return status(http.StatusBadGateway, reason.UpstreamUnavailable, "Gitea could not be asked; the branch is rechecked on its next request"), true
	case errors.Is(err, errNotConfig):
		return status(http.StatusServiceUnavailable, reason.NotConfigured, detail(err, errNotConfig)), false
	case errors.Is(err, errNotReady):
		return status(http.StatusServiceUnavailable, reason.NotReady, detail(err, errNotReady)), false
	case errors.Is(err, sites.ErrRegistryLost):
		return status(http.StatusServiceUnavailable, reason.RegistryUnavailable, detail(err, sites.ErrRegistryLost)), false
	case errors.Is(err, errSiteNotInOrg):
		return status(http.StatusUnprocessableEntity, reason.SiteNotInOrg, detail(err, errSiteNotInOrg)), false
	case errors.Is(err, sites.ErrNotFound):
		return status(http.StatusNotFound, reason.NotFound, detail(err, sites.ErrNotFound)+" does not exist"), false
	case errors.Is(err, tokens.ErrNotFound):
		return status(http.StatusNotFound, reason.NotFound, detail(err, tokens.ErrNotFound)+" does not exist"), false
	case errors.Is(err, tokens.ErrInvalid):
		return status(http.StatusUnprocessableEntity, reason.Invalid, detail(err, tokens.ErrInvalid)), false
	case errors.Is(err, sites.ErrConflict):
		return status(http.StatusConflict, reason.Conflict, detail(err, sites.ErrConflict)), false
	case errors.Is(err, sites.ErrInvalid):
		return status(http.StatusUnprocessableEntity, reason.Invalid, detail(err, sites.ErrInvalid)), false
	default:
		return status(http.StatusInternalServerError, reason.Internal, "internal error; the server log has the details"), true
	}
}

func status(code int, c reason.Code, detail string) *Problem {
	return &Problem{Type: "about:blank", Code: c, Title: http.StatusText(code), Status: code, Detail: detail}
}

// detail returns err's message without the sentinel it wraps ("invalid: x" and
// "x: conflict" both become "x"), on one line.
func detail(err, sentinel error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, sentinel.Error()+": ")
	msg = strings.TrimSuffix(msg, ": "+sentinel.Error())
	return strings.ReplaceAll(msg, "\n", "; ")
}

// writeProblem sends p as application/problem+json.
func writeProblem(w http.ResponseWriter, p *Problem) {
	h := w.Header()
	h.Set("Content-Type", contentTypeProblem)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p) // the client went away: nothing to do
}
