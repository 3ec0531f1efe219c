package admin

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	rpprof "runtime/pprof"
)

// pprofProfile handles GET /debug/pprof/{name}: the Go runtime's profiles
// (heap, goroutine, allocs, block, mutex, threadcreate; "profile" is a CPU
// profile over ?seconds=N, "trace" an execution trace), for operators
// finding where a node's memory or CPU goes. Behind the admin token like
// /v1: a profile shows internals.
func (s *Server) pprofProfile(w http.ResponseWriter, r *http.Request) error {
	switch name := r.PathValue("name"); name {
	case "profile":
		pprof.Profile(w, r)
	case "trace":
		pprof.Trace(w, r)
	default:
		if rpprof.Lookup(name) == nil {
			return fmt.Errorf("%w: no profile %q (heap, goroutine, allocs, block, mutex, threadcreate, profile, trace)", errNoRoute, name)
		}
		pprof.Handler(name).ServeHTTP(w, r)
	}
	return nil
}
