package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/gitea"
)

// Problem is an RFC 7807 problem detail: the body of every error response of
// the admin API, and the error the Client returns for one.
type Problem struct {
	// Type is "about:blank" (the status says it all) or a tollgate URN such as
	// "urn:tollgate:problem:limit".
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
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
	errBadRequest   = errors.New("bad request")
	errMediaType    = errors.New("unsupported media type")
)

// badRequest wraps err as a 400.
func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// problemFor is the one place that maps an error to a status and a problem.
// It never puts the text of an unknown (internal) error in the problem:
// internal reports whether the caller should log err.
func problemFor(err error) (p *Problem, internal bool) {
	var limit *sites.LimitError
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &limit):
		return &Problem{
			Type:   ProblemTypeLimit,
			Title:  "Plan limit reached: " + limit.Limit,
			Status: http.StatusConflict,
			Detail: limit.Error(),
			Limit:  limit.Limit,
			Max:    limit.Max,
		}, false
	case errors.Is(err, sites.ErrReserved):
		return &Problem{
			Type:   ProblemTypeReserved,
			Title:  "Domain reserved",
			Status: http.StatusConflict,
			Detail: detail(err, sites.ErrReserved),
		}, false
	case errors.As(err, &tooBig):
		return status(http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body exceeds %d bytes", tooBig.Limit)), false
	case errors.Is(err, errBadRequest):
		return status(http.StatusBadRequest, detail(err, errBadRequest)), false
	case errors.Is(err, errMediaType):
		return status(http.StatusUnsupportedMediaType, detail(err, errMediaType)), false
	case errors.Is(err, errUnauthorized):
		return status(http.StatusUnauthorized, errUnauthorized.Error()), false
	case errors.Is(err, errNoRoute):
		return status(http.StatusNotFound, errNoRoute.Error()), false
	case errors.Is(err, errMethod):
		return status(http.StatusMethodNotAllowed, "see the Allow header for the methods of this path"), false
	case errors.Is(err, gitea.ErrUpstream):
		// Logged: the detail would show internal addresses.
		return status(http.StatusBadGateway, "Gitea could not be asked; the branch is rechecked on its next request"), true
	case errors.Is(err, errNotReady):
		d := detail(err, errNotReady)
		if d == errNotReady.Error() {
			d = "the server is not ready yet"
		}
		return status(http.StatusServiceUnavailable, d), false
	case errors.Is(err, sites.ErrRegistryLost):
		return status(http.StatusServiceUnavailable, detail(err, sites.ErrRegistryLost)), false
	case errors.Is(err, sites.ErrNotFound):
		return status(http.StatusNotFound, detail(err, sites.ErrNotFound)+" does not exist"), false
	case errors.Is(err, sites.ErrConflict):
		return status(http.StatusConflict, detail(err, sites.ErrConflict)), false
	case errors.Is(err, sites.ErrInvalid):
		return status(http.StatusUnprocessableEntity, detail(err, sites.ErrInvalid)), false
	default:
		return status(http.StatusInternalServerError, "internal error; the server log has the details"), true
	}
}

func status(code int, detail string) *Problem {
	return &Problem{Type: "about:blank", Title: http.StatusText(code), Status: code, Detail: detail}
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
