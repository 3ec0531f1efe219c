package admin

import (
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/gitea"
)

const openAPIPath = "../docs/openapi.json"

// openAPIDoc is the part of an OpenAPI 3 document the tests read.
type openAPIDoc struct {
	OpenAPI string                                `json:"openapi"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
}

type openAPIOp struct {
	Security  *[]map[string][]string    `json:"security"`
	Responses map[string]map[string]any `json:"responses"`
	// Scope is x-tollgate-scope: the scope an org token needs, "none" on
	// a public route, "" on the operator's.
	Scope string `json:"x-tollgate-scope"`
}

// hasScheme reports whether op's security accepts the named scheme.
func (op openAPIOp) hasScheme(name string) bool {
	return op.Security != nil && slices.ContainsFunc(*op.Security, func(req map[string][]string) bool {
		_, ok := req[name]
		return ok
	})
}

// anonymous reports whether op's security has the empty requirement (no
// token needed).
func (op openAPIOp) anonymous() bool {
	return op.Security != nil && slices.ContainsFunc(*op.Security, func(req map[string][]string) bool { return len(req) == 0 })
}

var openAPIMethods = []string{"get", "put", "post", "delete", "patch", "head", "options", "trace"}

// documentedRoutes reads docs/openapi.json and returns its operations by
// "METHOD /path" (the pattern syntax of http.ServeMux).
func documentedRoutes(t *testing.T) map[string]openAPIOp {
	t.Helper()
	b, err := os.ReadFile(openAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc openAPIDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", openAPIPath, err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("%s: openapi is %q, want 3.x", openAPIPath, doc.OpenAPI)
	}
	out := map[string]openAPIOp{}
	for path, item := range doc.Paths {
		for method, raw := range item {
			if !slices.Contains(openAPIMethods, method) {
				continue // parameters, summary, …
			}
			var op openAPIOp
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			out[strings.ToUpper(method)+" "+path] = op
		}
	}
	return out
}

// registeredRoutes reads the patterns the admin package registers on its mux
// from its source: the string literal of every s.v1(…), s.mux.HandleFunc(…)
// and s.mux.Handle(…) call. The value says whether it went through s.v1.
// Registrations with a non-literal pattern (other than inside v1 itself) are
// reported, since this test could not see them.
func registeredRoutes(t *testing.T) map[string]bool {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok || len(call.Args) == 0 {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				var v1 bool
				switch {
				case sel.Sel.Name == "v1" && isIdent(sel.X, "s"):
					v1 = true
				case (sel.Sel.Name == "HandleFunc" || sel.Sel.Name == "Handle") && isMux(sel.X):
				default:
					return true
				}
				lit, ok := call.Args[0].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					if fn.Name.Name != "v1" {
						t.Errorf("%s: a route is registered with a non-literal pattern; this test cannot see it", fset.Position(call.Pos()))
					}
					return true
				}
				pattern, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				out[pattern] = v1
				return true
			})
		}
	}
	if len(out) == 0 {
		t.Fatal("found no route registrations in the admin package's source")
	}
	return out
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// isMux matches s.mux and s.api (the tenant API listener's mux).
func isMux(e ast.Expr) bool {
	sel, ok := e.(*ast.SelectorExpr)
	return ok && (sel.Sel.Name == "mux" || sel.Sel.Name == "api") && isIdent(sel.X, "s")
}

// TestOpenAPIMatchesRoutes checks docs/openapi.json against the routes the
// server registers: the same set both ways, the admin token exactly on the
// /v1 routes.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	documented := documentedRoutes(t)
	registered := registeredRoutes(t)
	var missing, extra []string
	for r := range registered {
		if _, ok := documented[r]; !ok {
			missing = append(missing, r)
		}
	}
	for r := range documented {
		if _, ok := registered[r]; !ok {
			extra = append(extra, r)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	if len(missing) > 0 {
		t.Errorf("routes registered but not in docs/openapi.json:\n  %s", strings.Join(missing, "\n  "))
	}
	if len(extra) > 0 {
		t.Errorf("operations in docs/openapi.json that the server does not register:\n  %s", strings.Join(extra, "\n  "))
	}
	for r, v1 := range registered {
		op, ok := documented[r]
		if !ok {
			continue
		}
		if bearer := op.hasScheme("adminToken"); bearer != v1 {
			t.Errorf("%s: adminToken in the document is %v, but the route is registered with s.v1: %v", r, bearer, v1)
		}
		if v1 && op.Responses["401"] == nil {
			t.Errorf("%s: no 401 response documented", r)
		}
	}
}

// TestOpenAPIOperationsAreServed asks a real Server for every documented
// operation and checks the mux matched it with that very pattern (the route
// label of tollgate_admin_requests_total is the matched pattern; an unknown
// route or method is counted as "unmatched"), and that /v1 operations refuse
// a request without the token.
func TestOpenAPIOperationsAreServed(t *testing.T) {
	documented := documentedRoutes(t)
	reg, err := sites.New(context.Background(), storetest.Open(t))
	if err != nil {
		t.Fatal(err)
	}
	metrics := prometheus.NewRegistry()
	s, err := New(Config{Token: testToken}, reg, Options{
		Metrics:            metrics,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
		Gitea:              nopInvalidator{},
		GiteaWebhookSecret: "hook-secret-0123456789",
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	routes := slices.Sorted(func(yield func(string) bool) {
		for r := range documented {
			if !yield(r) {
				return
			}
		}
	})
	for _, route := range routes {
		t.Run(route, func(t *testing.T) {
			method, path, _ := strings.Cut(route, " ")
			// Fill {param} segments with a value.
			for {
				i := strings.IndexByte(path, '{')
				if i < 0 {
					break
				}
				j := strings.IndexByte(path[i:], '}')
				path = path[:i] + "x" + path[i+j+1:]
			}
			for _, auth := range []bool{false, true} {
				before := routeCount(t, metrics, route)
				req, err := http.NewRequest(method, srv.URL+path, strings.NewReader("{}"))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				if auth {
					req.Header.Set("Authorization", "Bearer "+testToken)
				}
				res, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if got := routeCount(t, metrics, route); got != before+1 {
					t.Fatalf("%s %s was not matched by the pattern %q (status %d: %s)", method, path, route, res.StatusCode, body)
				}
				if strings.HasPrefix(path, "/v1/") && !auth && !documented[route].anonymous() && res.StatusCode != http.StatusUnauthorized {
					t.Errorf("without a token: status %d, want 401", res.StatusCode)
				}
				if res.StatusCode >= 400 && res.Header.Get("Content-Type") != contentTypeProblem {
					t.Errorf("status %d with Content-Type %q, want %s", res.StatusCode, res.Header.Get("Content-Type"), contentTypeProblem)
				}
			}
		})
	}
}

// routeCount sums tollgate_admin_requests_total for one route pattern.
func routeCount(t *testing.T, reg *prometheus.Registry, route string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "tollgate_admin_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && l.GetValue() == route {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

type nopInvalidator struct{}

func (nopInvalidator) Pushed(context.Context, gitea.Push) error { return nil }

// TestOpenAPIRefsResolve checks that every $ref of docs/openapi.json names a
// component the document defines, and that every error response is a
// problem.
func TestOpenAPIRefsResolve(t *testing.T) {
	b, err := os.ReadFile(openAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				target := any(doc)
				for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
					m, _ := target.(map[string]any)
					target = m[part]
				}
				if !strings.HasPrefix(ref, "#/") || target == nil {
					t.Errorf("%s: $ref %q does not resolve", where, ref)
				}
			}
			for k, c := range v {
				walk(where+"/"+k, c)
			}
		case []any:
			for i, c := range v {
				walk(where+"/"+strconv.Itoa(i), c)
			}
		}
	}
	walk("#", doc)

	responses := doc["components"].(map[string]any)["responses"].(map[string]any)
	for route, op := range documentedRoutes(t) {
		for code, r := range op.Responses {
			if code < "400" {
				continue
			}
			if ref, ok := r["$ref"].(string); ok {
				r, _ = responses[strings.TrimPrefix(ref, "#/components/responses/")].(map[string]any)
			}
			content, _ := r["content"].(map[string]any)
			if _, ok := content[contentTypeProblem]; !ok {
				t.Errorf("%s: response %s is not %s", route, code, contentTypeProblem)
			}
		}
	}
}
