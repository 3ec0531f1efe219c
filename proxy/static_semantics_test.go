package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"html"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
	"github.com/valyala/fasthttp"
)

// absent in a want map: the response must not carry the header at all.
const absent = "<absent>"

// rawDo sends one HTTP/1.1 request for www.example with the given header
// pairs and parses the answer with net/http, so the headers are seen exactly
// as sent (fasthttp's client reports a default Content-Type when none came).
func (h *harness) rawDo(t *testing.T, method, target string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	conn := h.dialRaw(t)
	defer conn.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: www.example\r\nConnection: close\r\n", method, target)
	for i := 0; i+1 < len(headers); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", headers[i], headers[i+1])
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, target, err)
	}
	return resp, body
}

// checkHeaders compares want (absent: not sent) with what hdr holds.
func checkHeaders(t *testing.T, hdr http.Header, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got, sent := hdr[http.CanonicalHeaderKey(k)]
		switch {
		case v == absent && sent:
			t.Errorf("header %s = %q; want none", k, got)
		case v != absent && hdr.Get(k) != v:
			t.Errorf("header %s = %q; want %q", k, hdr.Get(k), v)
		}
	}
}

// redirectSource is a site directory with _redirects rules, as a Gitea
// repository is.
type redirectSource struct {
	*content.DirSource
	rules *content.Redirects
}

func (s redirectSource) Redirects() *content.Redirects { return s.rules }

// TestRedirectAnswers: a redirect (a directory without its slash, a
// _redirects rule) answers its own status with a Location and no body: not
// an error page, not no-store, no Content-Type.
func TestRedirectAnswers(t *testing.T) {
	h := newHarness(t, Config{}, Limits{})
	must(t, os.MkdirAll(filepath.Join(h.root, "my docs"), 0o755))
	must(t, os.WriteFile(filepath.Join(h.root, "my docs", "index.html"), []byte("<h1>spaced</h1>"), 0o644))

	t.Run("directory", func(t *testing.T) {
		for _, tt := range []struct{ method, target, location string }{
			{"GET", "/docs", "/docs/"},
			{"GET", "/docs?a=b&c", "/docs/?a=b&c"},
			{"HEAD", "/docs", "/docs/"},
			{"GET", "/my%20docs", "/my%20docs/"},
		} {
			t.Run(tt.method+" "+tt.target, func(t *testing.T) {
				resp, body := h.rawDo(t, tt.method, tt.target)
				if resp.StatusCode != 301 || len(body) != 0 {
					t.Fatalf("status %d, %d body bytes %.60q; want 301 and no body", resp.StatusCode, len(body), body)
				}
				checkHeaders(t, resp.Header, map[string]string{"Location": tt.location, "Cache-Control": absent, "Content-Type": absent})
				if tt.method == "GET" {
					checkHeaders(t, resp.Header, map[string]string{"Content-Length": "0"})
				}
			})
		}
	})

	rules, err := content.ParseRedirects([]byte(`
/moved     /new                      301
/found     /elsewhere                302
/see       /other                    303
/temp      /t?x=1                    307
/perm      https://docs.example.org/ 308
/blog/*    /posts/:splat             301
/app/*     /index.html               200
`))
	must(t, err)
	dir, err := content.NewCache(sites.Config{}).OpenDir(h.root)
	must(t, err)
	t.Cleanup(func() { dir.Close() })
	src := redirectSource{DirSource: dir, rules: rules}
	plain := map[string]string{"Cache-Control": absent, "Content-Type": absent, "Content-Length": "0"}
	t.Run("_redirects", func(t *testing.T) {
		for _, tt := range []struct {
			path, location string
			status         int
			body           string
		}{
			{"/moved", "/new", 301, ""},
			{"/found", "/elsewhere", 302, ""},
			{"/see", "/other", 303, ""},
			{"/temp", "/t?x=1", 307, ""},
			{"/perm", "https://docs.example.org/", 308, ""},
			{"/blog/2026/hello", "/posts/2026/hello", 301, ""},
			{"/blog/my post", "/posts/my%20post", 301, ""},
			{"/app/settings", absent, 200, "<h1>home</h1>"},
		} {
			t.Run(tt.path, func(t *testing.T) {
				ctx := newCtx("www.example", "/")
				h.proxy.serveStatic(ctx, src, []byte(tt.path))
				var buf bytes.Buffer
				w := bufio.NewWriter(&buf)
				must(t, ctx.Response.Write(w))
				must(t, w.Flush())
				resp, err := http.ReadResponse(bufio.NewReader(&buf), nil)
				must(t, err)
				body, err := io.ReadAll(resp.Body)
				must(t, err)
				if resp.StatusCode != tt.status || string(body) != tt.body {
					t.Fatalf("status %d body %.60q; want %d %q", resp.StatusCode, body, tt.status, tt.body)
				}
				checkHeaders(t, resp.Header, map[string]string{"Location": tt.location, "Cache-Control": absent})
				if tt.status != 200 {
					checkHeaders(t, resp.Header, plain)
				}
			})
		}
	})

	// HTTP/2 writes headers its own way: no invented Content-Type there either.
	th := newTLSHarness(t, "http://127.0.0.1:9")
	for _, proto := range []string{"h1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			resp, err := th.client(proto).Get("https://www.example/docs?q")
			must(t, err)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			must(t, err)
			if resp.StatusCode != 301 || len(body) != 0 {
				t.Fatalf("status %d, %d body bytes; want 301 and no body", resp.StatusCode, len(body))
			}
			checkHeaders(t, resp.Header, map[string]string{"Location": "/docs/?q", "Cache-Control": absent, "Content-Type": absent})
		})
	}
}

// TestErrorPages: every 4xx and 5xx status net/http names has a page of its
// own, answered with that status; a 1xx, 2xx or 3xx is not an error and has
// none (writeError answers 500 for it).
func TestErrorPages(t *testing.T) {
	for code := 100; code < 600; code++ {
		name := http.StatusText(code)
		if name == "" {
			continue
		}
		_, hasPage := defaultPages().status[code]
		isError := code >= 400
		if hasPage != isError {
			t.Errorf("status %d (%q): has a page %v; want %v", code, name, hasPage, isError)
			continue
		}
		ctx := newCtx("www.example", "/")
		defaultPages().writeError(ctx, code)
		want, title := code, fmt.Sprintf("<title>%d %s</title>", code, html.EscapeString(name))
		if !isError {
			want, title = 500, "<title>500 Internal Server Error</title>"
		}
		resp := &ctx.Response
		if resp.StatusCode() != want || !bytes.Contains(resp.Body(), []byte(title)) {
			t.Errorf("writeError(%d): status %d, page %q; want %d and %s", code, resp.StatusCode(), pageTitle(resp.Body()), want, title)
		}
		if cc := string(resp.Header.Peek("Cache-Control")); cc != "no-store" {
			t.Errorf("writeError(%d): Cache-Control %q; want no-store", code, cc)
		}
	}
}

// pageTitle is the <title> element of an HTML page.
func pageTitle(page []byte) []byte {
	_, rest, _ := bytes.Cut(page, []byte("<title>"))
	title, _, _ := bytes.Cut(rest, []byte("</title>"))
	return title
}

// errorStatusNames maps the names of fasthttp's 4xx and 5xx constants to
// their codes; TestWriteErrorStatuses accepts no other name.
var errorStatusNames = map[string]int{
	"StatusBadRequest": fasthttp.StatusBadRequest, "StatusUnauthorized": fasthttp.StatusUnauthorized,
	"StatusPaymentRequired": fasthttp.StatusPaymentRequired, "StatusForbidden": fasthttp.StatusForbidden,
	"StatusNotFound": fasthttp.StatusNotFound, "StatusMethodNotAllowed": fasthttp.StatusMethodNotAllowed,
	"StatusNotAcceptable": fasthttp.StatusNotAcceptable, "StatusProxyAuthRequired": fasthttp.StatusProxyAuthRequired,
	"StatusRequestTimeout": fasthttp.StatusRequestTimeout, "StatusConflict": fasthttp.StatusConflict,
	"StatusGone": fasthttp.StatusGone, "StatusLengthRequired": fasthttp.StatusLengthRequired,
	"StatusPreconditionFailed": fasthttp.StatusPreconditionFailed, "StatusRequestEntityTooLarge": fasthttp.StatusRequestEntityTooLarge,
	"StatusRequestURITooLong": fasthttp.StatusRequestURITooLong, "StatusUnsupportedMediaType": fasthttp.StatusUnsupportedMediaType,
	"StatusRequestedRangeNotSatisfiable": fasthttp.StatusRequestedRangeNotSatisfiable, "StatusExpectationFailed": fasthttp.StatusExpectationFailed,
	"StatusTeapot": fasthttp.StatusTeapot, "StatusMisdirectedRequest": fasthttp.StatusMisdirectedRequest,
	"StatusUnprocessableEntity": fasthttp.StatusUnprocessableEntity, "StatusLocked": fasthttp.StatusLocked,
	"StatusFailedDependency": fasthttp.StatusFailedDependency, "StatusUpgradeRequired": fasthttp.StatusUpgradeRequired,
	"StatusPreconditionRequired": fasthttp.StatusPreconditionRequired, "StatusTooManyRequests": fasthttp.StatusTooManyRequests,
	"StatusRequestHeaderFieldsTooLarge": fasthttp.StatusRequestHeaderFieldsTooLarge, "StatusUnavailableForLegalReasons": fasthttp.StatusUnavailableForLegalReasons,
	"StatusInternalServerError": fasthttp.StatusInternalServerError, "StatusNotImplemented": fasthttp.StatusNotImplemented,
	"StatusBadGateway": fasthttp.StatusBadGateway, "StatusServiceUnavailable": fasthttp.StatusServiceUnavailable,
	"StatusGatewayTimeout": fasthttp.StatusGatewayTimeout, "StatusHTTPVersionNotSupported": fasthttp.StatusHTTPVersionNotSupported,
	"StatusVariantAlsoNegotiates": fasthttp.StatusVariantAlsoNegotiates, "StatusInsufficientStorage": fasthttp.StatusInsufficientStorage,
	"StatusLoopDetected": fasthttp.StatusLoopDetected, "StatusNotExtended": fasthttp.StatusNotExtended,
	"StatusNetworkAuthenticationRequired": fasthttp.StatusNetworkAuthenticationRequired,
}

// reviewedStatuses are the call sites, by enclosing function, whose status
// variable the scan cannot follow by itself, with the values a reader
// checked it can hold there.
var reviewedStatuses = map[string][]int{}

// TestWriteErrorStatuses reads the package's source and follows every status
// that reaches writeError, also through functions that pass their status
// parameter on to it (reject) and through variables assigned constants or
// the results of the package's own functions (checkFraming): each must be a
// named 4xx or 5xx constant with a page. A redirect or any other status sent
// to writeError fails here instead of answering 500.
func TestWriteErrorStatuses(t *testing.T) {
	for name, code := range errorStatusNames {
		if _, ok := defaultPages().status[code]; !ok {
			t.Errorf("%s (%d) has no page", name, code)
		}
	}
	calls, problems := checkErrorStatuses(t, ".", reviewedStatuses)
	for _, p := range problems {
		t.Error(p)
	}
	if calls < 10 {
		t.Fatalf("found %d calls answering an error status: the scan is broken", calls)
	}
}

// TestWriteErrorStatusesCatches runs the scan of TestWriteErrorStatuses on a
// package with mistakes: each is reported, and nothing else.
func TestWriteErrorStatusesCatches(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "bad.go"), []byte(`package bad

func writeError(ctx *fasthttp.RequestCtx, status int) {}

func reject(ctx *fasthttp.RequestCtx, status int) { writeError(ctx, status) }

func deny(ctx *fasthttp.RequestCtx, code int) { reject(ctx, code) }

func pick(n int) int {
	switch n {
	case 0:
		return 0
	case 1:
		return fasthttp.StatusFound
	}
	return fasthttp.StatusBadGateway
}

func handle(ctx *fasthttp.RequestCtx, n int) {
	writeError(ctx, fasthttp.StatusNotFound)
	writeError(ctx, fasthttp.StatusMovedPermanently)
	deny(ctx, http.StatusPermanentRedirect)
	status := 0
	if n > 1 {
		status = fasthttp.StatusForbidden
	} else {
		status = fasthttp.StatusOK
	}
	reject(ctx, status)
	if s := pick(n); s != 0 {
		reject(ctx, s)
	}
	reject(ctx, n+400)
	reject(ctx, unknown(ctx))
}

func reviewed(ctx *fasthttp.RequestCtx, status int) {
	s := status * 2
	reject(ctx, s)
}
`), 0o644))
	calls, problems := checkErrorStatuses(t, dir, map[string][]int{"reviewed": {404}, "gone": {404}})
	want := []string{
		"writeError in handle: fasthttp.StatusMovedPermanently is not",
		"deny in handle: http.StatusPermanentRedirect is not",
		"reject in handle: fasthttp.StatusOK is not",
		"reject in handle: fasthttp.StatusFound is not",
		"reject in handle: cannot follow the status n + 400",
		"reject in handle: cannot follow the status from unknown(ctx)",
		"list gone, which",
	}
	all := strings.Join(problems, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("no problem mentions %q; got:\n%s", w, all)
		}
	}
	if calls != 8 || len(problems) != 7 {
		t.Errorf("%d calls, %d problems; want 8 and 7:\n%s", calls, len(problems), all)
	}
}

// checkErrorStatuses scans the package in dir (test files aside) for calls
// answering an error status and returns how many it checked and what is
// wrong with them. reviewed gives, by enclosing function, the values of a
// status variable the scan is not to follow.
func checkErrorStatuses(t *testing.T, dir string, reviewed map[string][]int) (calls int, problems []string) {
	sc := newStatusScan(t, dir)
	// The functions that answer their status parameter with writeError's
	// page: writeError, and whatever passes a parameter on to one of them.
	wrappers := map[string]int{"writeError": 1}
	for changed := true; changed; {
		changed = false
		sc.calls(wrappers, func(fn *ast.FuncDecl, _ *ast.CallExpr, arg ast.Expr) {
			if i := paramIndex(fn, arg); i >= 0 {
				if _, ok := wrappers[fn.Name.Name]; !ok {
					wrappers[fn.Name.Name] = i
					changed = true
				}
			}
		})
	}
	used := map[string]bool{}
	sc.calls(wrappers, func(fn *ast.FuncDecl, call *ast.CallExpr, arg ast.Expr) {
		if paramIndex(fn, arg) >= 0 {
			return // a wrapper passing its parameter on: its callers are checked
		}
		calls++
		at := fmt.Sprintf("%s: %s in %s", sc.fset.Position(call.Pos()), exprString(call.Fun), fn.Name.Name)
		var codes []int
		if vals, ok := reviewed[fn.Name.Name]; ok {
			if _, isVar := arg.(*ast.Ident); isVar {
				used[fn.Name.Name] = true
				codes = vals
			}
		}
		if codes == nil {
			var ps []string
			codes, ps = sc.resolve(fn, arg, 0)
			for _, p := range ps {
				problems = append(problems, at+": "+p)
			}
		}
		for _, code := range codes {
			if _, ok := defaultPages().status[code]; !ok {
				problems = append(problems, fmt.Sprintf("%s: status %d has no page", at, code))
			}
		}
	})
	for name := range reviewed {
		if !used[name] {
			problems = append(problems, fmt.Sprintf("the reviewed statuses list %s, which passes no status variable any more", name))
		}
	}
	return calls, problems
}

// statusScan is the parsed, non-test source of a package.
type statusScan struct {
	fset  *token.FileSet
	decls []*ast.FuncDecl
	funcs map[string][]*ast.FuncDecl // functions and methods by name
}

func newStatusScan(t *testing.T, dir string) *statusScan {
	entries, err := os.ReadDir(dir)
	must(t, err)
	sc := &statusScan{fset: token.NewFileSet(), funcs: map[string][]*ast.FuncDecl{}}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(sc.fset, filepath.Join(dir, e.Name()), nil, 0)
		must(t, err)
		for _, decl := range f.Decls {
			if fn, ok := decl.(*ast.FuncDecl); ok && fn.Body != nil {
				sc.decls = append(sc.decls, fn)
				sc.funcs[fn.Name.Name] = append(sc.funcs[fn.Name.Name], fn)
			}
		}
	}
	return sc
}

// calls visits every call of a function in targets (name → index of its
// status argument) with the function it appears in and that argument.
func (sc *statusScan) calls(targets map[string]int, visit func(fn *ast.FuncDecl, call *ast.CallExpr, arg ast.Expr)) {
	for _, fn := range sc.decls {
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			i, ok := targets[calleeName(call)]
			if ok && i < len(call.Args) {
				visit(fn, call, call.Args[i])
			}
			return true
		})
	}
}

// resolve returns the status codes expr can hold in fn: a constant, a
// variable's assignments, a call's return values (0 means "no answer" and is
// left out). What it cannot follow is a problem to review.
func (sc *statusScan) resolve(fn *ast.FuncDecl, expr ast.Expr, depth int) (codes []int, problems []string) {
	if depth > 8 {
		return nil, []string{fmt.Sprintf("%s: followed too deep", exprString(expr))}
	}
	switch e := expr.(type) {
	case *ast.SelectorExpr:
		code, ok := errorStatusNames[e.Sel.Name]
		if !ok {
			return nil, []string{fmt.Sprintf("%s is not a 4xx or 5xx status (a redirect is writeRedirect's)", exprString(e))}
		}
		return []int{code}, nil
	case *ast.BasicLit:
		if e.Value == "0" {
			return nil, nil
		}
	case *ast.Ident:
		if paramIndex(fn, e) >= 0 {
			break
		}
		found := false
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			as, ok := n.(*ast.AssignStmt)
			if !ok {
				return true
			}
			for i, lhs := range as.Lhs {
				if id, ok := lhs.(*ast.Ident); !ok || id.Name != e.Name {
					continue
				}
				found = true
				var c []int
				var p []string
				switch {
				case len(as.Lhs) == len(as.Rhs):
					c, p = sc.resolve(fn, as.Rhs[i], depth+1)
				case len(as.Rhs) == 1:
					c, p = sc.results(as.Rhs[0], i, depth+1)
				}
				codes, problems = append(codes, c...), append(problems, p...)
			}
			return true
		})
		if found {
			return codes, problems
		}
	case *ast.CallExpr:
		return sc.results(e, 0, depth+1)
	}
	return nil, []string{fmt.Sprintf("cannot follow the status %s: list its values in reviewedStatuses", exprString(expr))}
}

// results resolves result i of a call to one of the package's functions.
func (sc *statusScan) results(expr ast.Expr, i, depth int) (codes []int, problems []string) {
	call, ok := expr.(*ast.CallExpr)
	if !ok || len(sc.funcs[calleeName(call)]) == 0 {
		return nil, []string{fmt.Sprintf("cannot follow the status from %s: list its values in reviewedStatuses", exprString(expr))}
	}
	for _, fn := range sc.funcs[calleeName(call)] {
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncLit:
				return false // its returns are not fn's
			case *ast.ReturnStmt:
				if i < len(n.Results) {
					c, p := sc.resolve(fn, n.Results[i], depth)
					codes, problems = append(codes, c...), append(problems, p...)
				}
			}
			return true
		})
	}
	return codes, problems
}

// calleeName is the name of the function or method a call calls.
func calleeName(call *ast.CallExpr) string {
	switch f := call.Fun.(type) {
	case *ast.Ident:
		return f.Name
	case *ast.SelectorExpr:
		return f.Sel.Name
	}
	return ""
}

// paramIndex is the position of expr among fn's parameters, -1 when it is
// not one of them.
func paramIndex(fn *ast.FuncDecl, expr ast.Expr) int {
	id, ok := expr.(*ast.Ident)
	if !ok {
		return -1
	}
	i := 0
	for _, field := range fn.Type.Params.List {
		for _, name := range field.Names {
			if name.Name == id.Name {
				return i
			}
			i++
		}
		if len(field.Names) == 0 {
			i++
		}
	}
	return -1
}

func exprString(expr ast.Expr) string {
	var b strings.Builder
	_ = printer.Fprint(&b, token.NewFileSet(), expr) // a strings.Builder does not fail
	return b.String()
}

// TestConditionalRequests: RFC 9110 §13.2.2's order (If-Match, else
// If-Unmodified-Since → 412; If-None-Match, else If-Modified-Since → 304),
// a 304 with validators only, and byte ranges for GET with If-Range.
func TestConditionalRequests(t *testing.T) {
	h := newHarness(t, Config{}, Limits{})
	must(t, os.WriteFile(filepath.Join(h.root, "empty.txt"), nil, 0o644))
	first, _ := h.rawDo(t, "GET", "/4k.bin")
	etag, lastMod := first.Header.Get("ETag"), first.Header.Get("Last-Modified")
	gz, _ := h.rawDo(t, "GET", "/app.js", "Accept-Encoding", "gzip")
	gzTag := gz.Header.Get("ETag")
	js, _ := h.rawDo(t, "GET", "/app.js")
	jsTag := js.Header.Get("ETag")
	large, _ := h.rawDo(t, "GET", "/large.bin")
	largeTag := large.Header.Get("ETag")
	if etag == "" || lastMod == "" || gzTag == "" || jsTag == "" || gzTag == jsTag || largeTag == "" {
		t.Fatalf("validators: %q %q %q %q %q", etag, lastMod, gzTag, jsTag, largeTag)
	}
	const before, after = "Mon, 01 Jan 2001 00:00:00 GMT", "Fri, 01 Jan 2100 00:00:00 GMT"

	// The headers of a 304: validators and Vary, nothing of the body.
	notModified := map[string]string{"Content-Type": absent, "Accept-Ranges": absent, "Content-Encoding": absent,
		"Content-Length": absent, "Content-Range": absent}
	full := map[string]string{"Content-Length": "4096", "Content-Range": absent, "Accept-Ranges": "bytes"}
	tests := []struct {
		name, method, target string
		headers              []string
		status               int
		header               map[string]string
		body                 string // prefix of the body
	}{
		// If-Match: strong comparison, 412 when it fails.
		{name: "if-match same", target: "/4k.bin", headers: []string{"If-Match", etag}, status: 200, header: full},
		{name: "if-match star", target: "/4k.bin", headers: []string{"If-Match", "*"}, status: 200},
		{name: "if-match list", target: "/4k.bin", headers: []string{"If-Match", `"a", ` + etag}, status: 200},
		{name: "if-match other", target: "/4k.bin", headers: []string{"If-Match", `"other"`}, status: 412, body: "<!doctype html>"},
		{name: "if-match weak", target: "/4k.bin", headers: []string{"If-Match", "W/" + etag}, status: 412},
		{name: "if-match head", method: "HEAD", target: "/4k.bin", headers: []string{"If-Match", `"other"`}, status: 412},
		{name: "if-match other representation", target: "/app.js", headers: []string{"If-Match", jsTag, "Accept-Encoding", "gzip"}, status: 412},
		{name: "if-match gzip", target: "/app.js", headers: []string{"If-Match", gzTag, "Accept-Encoding", "gzip"}, status: 200,
			header: map[string]string{"Content-Encoding": "gzip"}},
		// If-Unmodified-Since: only without If-Match; an invalid date is ignored.
		{name: "if-unmodified-since same", target: "/4k.bin", headers: []string{"If-Unmodified-Since", lastMod}, status: 200},
		{name: "if-unmodified-since later", target: "/4k.bin", headers: []string{"If-Unmodified-Since", after}, status: 200},
		{name: "if-unmodified-since earlier", target: "/4k.bin", headers: []string{"If-Unmodified-Since", before}, status: 412},
		{name: "if-unmodified-since invalid", target: "/4k.bin", headers: []string{"If-Unmodified-Since", "yesterday"}, status: 200},
		{name: "if-match wins over if-unmodified-since", target: "/4k.bin", headers: []string{"If-Match", etag, "If-Unmodified-Since", before}, status: 200},
		// Then If-None-Match, else If-Modified-Since.
		{name: "if-match fails before if-none-match", target: "/4k.bin", headers: []string{"If-Match", `"other"`, "If-None-Match", etag}, status: 412},
		{name: "if-unmodified-since fails before if-none-match", target: "/4k.bin", headers: []string{"If-Unmodified-Since", before, "If-None-Match", etag}, status: 412},
		{name: "if-match holds then if-none-match", target: "/4k.bin", headers: []string{"If-Match", etag, "If-None-Match", etag}, status: 304, header: notModified},
		{name: "if-none-match star", target: "/4k.bin", headers: []string{"If-None-Match", "*"}, status: 304, header: notModified},
		{name: "if-none-match wins over if-modified-since", target: "/4k.bin", headers: []string{"If-None-Match", `"other"`, "If-Modified-Since", after}, status: 200, header: full},
		{name: "if-none-match with old if-modified-since", target: "/4k.bin", headers: []string{"If-None-Match", etag, "If-Modified-Since", before}, status: 304},
		{name: "if-modified-since", target: "/4k.bin", headers: []string{"If-Modified-Since", lastMod}, status: 304,
			header: map[string]string{"ETag": etag, "Last-Modified": lastMod, "Content-Type": absent, "Accept-Ranges": absent}},
		{name: "304 of a compressed variant", target: "/app.js", headers: []string{"Accept-Encoding", "gzip", "If-None-Match", gzTag}, status: 304,
			header: map[string]string{"ETag": gzTag, "Vary": "Accept-Encoding", "Content-Encoding": absent, "Content-Type": absent, "Accept-Ranges": absent}},
		{name: "304 head", method: "HEAD", target: "/4k.bin", headers: []string{"If-None-Match", etag}, status: 304, header: notModified},
		// Preconditions do not apply to what would not be a 2xx (§13.2.1).
		{name: "404 ignores if-match", target: "/nope", headers: []string{"If-Match", `"other"`}, status: 404, body: "<h1>custom not found</h1>"},
		{name: "404 ignores if-none-match", target: "/nope", headers: []string{"If-None-Match", "*"}, status: 404},
		// Preconditions come before Range.
		{name: "range after if-match", target: "/4k.bin", headers: []string{"Range", "bytes=0-1", "If-Match", `"other"`}, status: 412},
		{name: "range after if-none-match", target: "/4k.bin", headers: []string{"Range", "bytes=-0", "If-None-Match", etag}, status: 304},
		// Range.
		{name: "range", target: "/4k.bin", headers: []string{"Range", "bytes=0-1"}, status: 206,
			header: map[string]string{"Content-Range": "bytes 0-1/4096", "Content-Length": "2", "ETag": etag}, body: "\x01\x01"},
		{name: "range open end", target: "/4k.bin", headers: []string{"Range", "bytes=4090-"}, status: 206, header: map[string]string{"Content-Range": "bytes 4090-4095/4096"}},
		{name: "range end past size", target: "/4k.bin", headers: []string{"Range", "bytes=4000-99999999999999999999999"}, status: 206,
			header: map[string]string{"Content-Range": "bytes 4000-4095/4096", "Content-Length": "96"}},
		{name: "range suffix longer than file", target: "/4k.bin", headers: []string{"Range", "bytes=-5000"}, status: 206, header: map[string]string{"Content-Range": "bytes 0-4095/4096"}},
		{name: "range unit case", target: "/4k.bin", headers: []string{"Range", "Bytes=2-3"}, status: 206, header: map[string]string{"Content-Range": "bytes 2-3/4096"}},
		{name: "range empty suffix", target: "/4k.bin", headers: []string{"Range", "bytes=-0"}, status: 416, header: map[string]string{"Content-Range": "bytes */4096"}},
		{name: "range start at size", target: "/4k.bin", headers: []string{"Range", "bytes=4096-"}, status: 416, header: map[string]string{"Content-Range": "bytes */4096"}},
		{name: "range reversed", target: "/4k.bin", headers: []string{"Range", "bytes=10-5"}, status: 416, header: map[string]string{"Content-Range": "bytes */4096"}},
		{name: "range garbage", target: "/4k.bin", headers: []string{"Range", "bytes=x-y"}, status: 416},
		{name: "range empty set", target: "/4k.bin", headers: []string{"Range", "bytes="}, status: 416},
		{name: "range of an empty file", target: "/empty.txt", headers: []string{"Range", "bytes=0-"}, status: 416, header: map[string]string{"Content-Range": "bytes */0"}},
		{name: "suffix range of an empty file", target: "/empty.txt", headers: []string{"Range", "bytes=-5"}, status: 416, header: map[string]string{"Content-Range": "bytes */0"}},
		{name: "range several", target: "/4k.bin", headers: []string{"Range", "bytes=0-1,5-6"}, status: 200, header: full},
		{name: "range other unit", target: "/4k.bin", headers: []string{"Range", "items=0-1"}, status: 200, header: full},
		{name: "range head ignored", method: "HEAD", target: "/4k.bin", headers: []string{"Range", "bytes=0-1"}, status: 200, header: full},
		{name: "range is identity", target: "/app.js", headers: []string{"Range", "bytes=0-6", "Accept-Encoding", "gzip, br"}, status: 206,
			header: map[string]string{"Content-Encoding": absent, "ETag": jsTag, "Vary": "Accept-Encoding"}, body: "console"},
		{name: "other unit keeps compression", target: "/app.js", headers: []string{"Range", "items=0-1", "Accept-Encoding", "gzip"}, status: 200,
			header: map[string]string{"Content-Encoding": "gzip", "ETag": gzTag}},
		// If-Range: an exact, strong match of the identity validators.
		{name: "if-range etag", target: "/4k.bin", headers: []string{"Range", "bytes=0-1", "If-Range", etag}, status: 206},
		{name: "if-range date", target: "/4k.bin", headers: []string{"Range", "bytes=0-1", "If-Range", lastMod}, status: 206},
		{name: "if-range weak", target: "/4k.bin", headers: []string{"Range", "bytes=0-1", "If-Range", "W/" + etag}, status: 200, header: full},
		{name: "if-range other date", target: "/4k.bin", headers: []string{"Range", "bytes=0-1", "If-Range", before}, status: 200, header: full},
		{name: "if-range compressed tag", target: "/app.js", headers: []string{"Range", "bytes=0-1", "If-Range", gzTag, "Accept-Encoding", "gzip"}, status: 200,
			header: map[string]string{"Content-Encoding": "gzip"}},
		{name: "if-range stale does not 416", target: "/4k.bin", headers: []string{"Range", "bytes=-0", "If-Range", `"old"`}, status: 200, header: full},
		{name: "if-range streamed", target: "/large.bin", headers: []string{"Range", "bytes=16-31", "If-Range", largeTag}, status: 206,
			header: map[string]string{"Content-Range": "bytes 16-31/131072"}, body: "0123456789abcdef"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = "GET"
			}
			resp, body := h.rawDo(t, method, tt.target, tt.headers...)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d; want %d (body %.80q)", resp.StatusCode, tt.status, body)
			}
			if !bytes.HasPrefix(body, []byte(tt.body)) {
				t.Fatalf("body %.80q; want it to start with %q", body, tt.body)
			}
			if (method == "HEAD" || tt.status == 304) && len(body) != 0 {
				t.Fatalf("%d body bytes; want none", len(body))
			}
			checkHeaders(t, resp.Header, tt.header)
		})
	}

	// The same 304 over HTTP/2, whose path writes headers its own way.
	th := newTLSHarness(t, "http://127.0.0.1:9")
	for _, proto := range []string{"h1", "h2"} {
		t.Run("304 over "+proto, func(t *testing.T) {
			c := th.client(proto)
			resp, err := c.Get("https://www.example/about")
			must(t, err)
			resp.Body.Close()
			req, err := http.NewRequest("GET", "https://www.example/about", nil)
			must(t, err)
			req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
			resp, err = c.Do(req)
			must(t, err)
			resp.Body.Close()
			if resp.StatusCode != 304 {
				t.Fatalf("status %d; want 304", resp.StatusCode)
			}
			checkHeaders(t, resp.Header, map[string]string{"Content-Type": absent, "Accept-Ranges": absent})
		})
	}
}

// TestByteRange: the range-spec forms of RFC 9110 §14.1.1 against a
// 100-byte representation and an empty one.
func TestByteRange(t *testing.T) {
	for _, tt := range []struct {
		spec        string
		size        int64
		first, last int64
		ok          bool
	}{
		{"0-0", 100, 0, 0, true},
		{"0-99", 100, 0, 99, true},
		{"10-", 100, 10, 99, true},
		{"99-", 100, 99, 99, true},
		{"50-500", 100, 50, 99, true},
		{"0-99999999999999999999999999", 100, 0, 99, true},
		{"-1", 100, 99, 99, true},
		{"-100", 100, 0, 99, true},
		{"-99999999999999999999999999", 100, 0, 99, true},
		{" 5-6 ", 100, 5, 6, true},
		{"-0", 100, 0, 0, false},
		{"100-", 100, 0, 0, false},
		{"99999999999999999999999999-", 100, 0, 0, false},
		{"7-6", 100, 0, 0, false},
		{"-", 100, 0, 0, false},
		{"", 100, 0, 0, false},
		{"5", 100, 0, 0, false},
		{"a-b", 100, 0, 0, false},
		{"1-2-3", 100, 0, 0, false},
		{"+1-2", 100, 0, 0, false},
		{"0-", 0, 0, 0, false},
		{"-1", 0, 0, 0, false},
	} {
		first, last, ok := byteRange([]byte(tt.spec), tt.size)
		if first != tt.first || last != tt.last || ok != tt.ok {
			t.Errorf("byteRange(%q, %d) = %d, %d, %v; want %d, %d, %v", tt.spec, tt.size, first, last, ok, tt.first, tt.last, tt.ok)
		}
	}
}

// FuzzByteRange: whatever a client puts in a Range header, a satisfiable
// answer lies inside the representation.
func FuzzByteRange(f *testing.F) {
	for _, s := range []string{"0-0", "-1", "5-", "-0", "1-2-3", " 3-4", "99999999999999999999-", "-99999999999999999999", "9-1"} {
		f.Add(s, int64(100))
		f.Add(s, int64(0))
	}
	f.Fuzz(func(t *testing.T, spec string, size int64) {
		if size < 0 {
			return
		}
		first, last, ok := byteRange([]byte(spec), size)
		if ok && (first < 0 || first > last || last >= size) {
			t.Fatalf("byteRange(%q, %d) = %d-%d: outside the representation", spec, size, first, last)
		}
	})
}

// base64Text is a base64 file as base64(1) writes it (76-column lines) of n
// pseudo-random bytes: text that only Huffman coding compresses, by about a
// quarter.
func base64Text(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	raw := make([]byte, n)
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	enc := base64.StdEncoding.EncodeToString(raw)
	var b bytes.Buffer
	for len(enc) > 0 {
		line := enc[:min(76, len(enc))]
		enc = enc[len(line):]
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// gzip6 is the file as compress/gzip's level 6 ("gzip -6") compresses it.
func gzip6(t testing.TB, body []byte) []byte {
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, 6)
	must(t, err)
	_, err = w.Write(body)
	must(t, err)
	must(t, w.Close())
	return buf.Bytes()
}

// TestCompressionChoice: a base64 text file, which gzip -6 shrinks by about
// a quarter, is sent gzipped to a gzip-only client (no larger than gzip -6
// makes it) and as brotli to a client offering both.
func TestCompressionChoice(t *testing.T) {
	h := newHarness(t, Config{}, Limits{})
	for _, n := range []int{300, 3000, 12000} {
		file := base64Text(n)
		name := fmt.Sprintf("/b64-%d.txt", n)
		must(t, os.WriteFile(filepath.Join(h.root, name), file, 0o644))
		ref := gzip6(t, file)
		if saved := 1 - float64(len(ref))/float64(len(file)); saved < 0.11 {
			t.Fatalf("%s: gzip -6 saves %.0f%%: not the case under test", name, 100*saved)
		}
		for _, tt := range []struct{ accept, encoding string }{
			{"gzip", "gzip"},
			{"deflate, gzip", "gzip"},
			{"gzip, br", "br"},
			{"br", "br"},
			{"", absent},
		} {
			t.Run(fmt.Sprintf("%s %q", name, tt.accept), func(t *testing.T) {
				var hdr []string
				if tt.accept != "" {
					hdr = []string{"Accept-Encoding", tt.accept}
				}
				resp, body := h.rawDo(t, "GET", name, hdr...)
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				checkHeaders(t, resp.Header, map[string]string{"Content-Encoding": tt.encoding, "Vary": "Accept-Encoding"})
				var plain []byte
				switch tt.encoding {
				case "gzip":
					if len(body) > len(ref) {
						t.Errorf("gzip body %d bytes; gzip -6 makes %d", len(body), len(ref))
					}
					zr, err := gzip.NewReader(bytes.NewReader(body))
					must(t, err)
					plain, err = io.ReadAll(zr)
					must(t, err)
				case "br":
					var r fasthttp.Response
					r.Header.SetContentEncoding("br")
					r.SetBody(body)
					var err error
					plain, err = r.BodyUnbrotli()
					must(t, err)
				default:
					plain = body
				}
				if !bytes.Equal(plain, file) {
					t.Fatalf("decoded body (%d bytes) differs from the file (%d)", len(plain), len(file))
				}
			})
		}
	}
}
