package admin

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/tollgate-edge/tollgate/billing/stripe"
	"github.com/tollgate-edge/tollgate/internal/stripetest"
	"github.com/tollgate-edge/tollgate/reason"
)

// stripeMemory is a reverse proxy to stripe-mock that records the
// Idempotency-Key header of every call, and plays the one part of Stripe
// stripe-mock lacks (it keeps no state and answers list calls with a
// canned fixture): a memory of the invoices created through it. Each is
// stripe-mock's own answer to the creation with the metadata tollgate sent
// (which stripe-mock's answer leaves out), open once finalized, and GET
// /v1/invoices answers them, newest first, as Stripe's list does.
type stripeMemory struct {
	srv      *httptest.Server
	mu       sync.Mutex
	calls    []string         // "METHOD /path KEY"
	invoices []map[string]any // newest first
}

func newStripeMemory(t *testing.T, sm *stripetest.Mock) *stripeMemory {
	t.Helper()
	target, err := url.Parse(sm.URL())
	if err != nil {
		t.Fatal(err)
	}
	m := &stripeMemory{}
	rp := httputil.NewSingleHostReverseProxy(target)
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.calls = append(m.calls, r.Method+" "+r.URL.Path+" "+r.Header.Get("Idempotency-Key"))
		m.mu.Unlock()
		if r.Method == http.MethodGet && r.URL.Path == "/v1/invoices" {
			m.list(w)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		if r.Method == http.MethodPost && rec.Code == http.StatusOK {
			m.remember(r.URL.Path, form, rec.Body.Bytes())
		}
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(m.srv.Close)
	return m
}

// remember keeps an invoice created (stripe-mock's answer with the
// metadata of form) and marks one finalized open.
func (m *stripeMemory) remember(path string, form url.Values, answer []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, step, _ := strings.Cut(strings.TrimPrefix(path, "/v1/invoices/"), "/")
	switch {
	case path == "/v1/invoices":
		var inv map[string]any
		if json.Unmarshal(answer, &inv) != nil {
			return
		}
		meta := map[string]string{}
		for k, vs := range form {
			if name, ok := strings.CutPrefix(k, "metadata["); ok {
				meta[strings.TrimSuffix(name, "]")] = vs[0]
			}
		}
		inv["metadata"] = meta
		m.invoices = append([]map[string]any{inv}, m.invoices...)
	case step == "finalize":
		for _, inv := range m.invoices {
			if inv["id"] == id {
				inv["status"] = "open"
			}
		}
	}
}

func (m *stripeMemory) list(w http.ResponseWriter) {
	m.mu.Lock()
	b, _ := json.Marshal(map[string]any{"object": "list", "url": "/v1/invoices", "has_more": false, "data": m.invoices})
	m.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// take returns the calls recorded since the last take, ids as {id}.
func (m *stripeMemory) take() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.calls
	m.calls = nil
	for i, c := range out {
		parts := strings.Split(c, "/")
		if len(parts) > 3 && strings.HasPrefix(parts[3], "in_") {
			parts[3] = "{id}"
		}
		out[i] = strings.Join(parts, "/")
	}
	return out
}

// TestInvoiceIdempotencyKey: POST /v1/orgs/{id}/invoices with an
// Idempotency-Key through real Billing and Stripe (stripe-mock behind
// stripeMemory): every Stripe call of the creation carries a key derived
// from it; the same key again answers 200 with the same invoice and
// creates nothing; the same key with other items is a 409; a bad key is a
// 400 before any Stripe call. The CLI sends --idempotency-key, or a new
// random key per invocation.
func TestInvoiceIdempotencyKey(t *testing.T) {
	sm := stripetest.Start(t)
	mem := newStripeMemory(t, sm)
	e := newStripeEnvAt(t, sm, mem.srv.URL)
	body := `{"items":[{"description":"Setup fee","amount":5000},{"description":"Migration","amount":12000}],"due_days":14}`
	as := func(key string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "application/json", "Idempotency-Key": key}
	}

	first := e.callWith(t, "POST", "/v1/orgs/paid/invoices", body, as("retry-1"))
	var inv stripe.Invoice
	first.json(t, &inv)
	if first.status != http.StatusCreated || inv.ID == "" || !inv.Sent || inv.Replayed {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	want := []string{"GET /v1/invoices ", "POST /v1/invoices retry-1:invoice", "POST /v1/invoiceitems retry-1:item:0",
		"POST /v1/invoiceitems retry-1:item:1", "POST /v1/invoices/{id}/finalize retry-1:finalize", "POST /v1/invoices/{id}/send retry-1:send"}
	if got := mem.take(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("calls of the first creation:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The script's retry: the same invoice, nothing created or sent.
	again := e.callWith(t, "POST", "/v1/orgs/paid/invoices", body, as("retry-1"))
	var replay stripe.Invoice
	again.json(t, &replay)
	if again.status != http.StatusOK || replay.ID != inv.ID || !replay.Replayed || replay.Status != "open" {
		t.Fatalf("retry: %d %s, want 200 with %s", again.status, again.body, inv.ID)
	}
	if got := mem.take(); strings.Join(got, ",") != "GET /v1/invoices " {
		t.Fatalf("calls of the retry: %q", got)
	}

	// The same key for other items; other keys and no key create.
	other := `{"items":[{"description":"Setup fee","amount":9000}],"due_days":14}`
	if p := checkProblem(t, e.callWith(t, "POST", "/v1/orgs/paid/invoices", other, as("retry-1")), http.StatusConflict); p.Code != reason.Conflict ||
		!strings.Contains(p.Detail, "different invoice request") {
		t.Errorf("same key, other items: %+v", p)
	}
	if r := e.callWith(t, "POST", "/v1/orgs/paid/invoices", other, as("retry-2")); r.status != http.StatusCreated {
		t.Errorf("another key: %d %s", r.status, r.body)
	}
	if r := e.call(t, "POST", "/v1/orgs/paid/invoices", other); r.status != http.StatusCreated {
		t.Errorf("no key: %d %s", r.status, r.body)
	}
	mem.take()

	// (Go's client sends no control bytes and HTTP drops the spaces
	// around a value; TestCheckIdempotencyKey has those.)
	for name, keys := range map[string][]string{
		"empty": {""}, "too long": {strings.Repeat("k", 256)}, "not ASCII": {"clé"}, "twice": {"a", "b"},
	} {
		req, err := http.NewRequest("POST", e.srv.URL+"/v1/orgs/paid/invoices", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		req.Header["Idempotency-Key"] = keys
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		p := checkProblem(t, response{status: res.StatusCode, header: res.Header, body: b}, http.StatusBadRequest)
		if p.Code != reason.BadRequest || !strings.Contains(p.Detail, "Idempotency-Key") {
			t.Errorf("%s key: %+v", name, p)
		}
	}
	if got := mem.take(); len(got) != 0 {
		t.Fatalf("refused keys called Stripe: %q", got)
	}

	// The CLI: --idempotency-key twice bills once; without it each
	// invocation has its own key.
	g := []string{"--addr", e.srv.URL, "--token", testToken}
	cli := func(args ...string) string {
		t.Helper()
		code, out, errOut := runCLI(append(append([]string{"invoice", "create", "paid", "--item", "Setup fee:5000"}, args...), g...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
		}
		return out
	}
	if out := cli("--idempotency-key", "cli-run-7"); strings.Contains(out, "nothing new") {
		t.Errorf("first --idempotency-key run: %q", out)
	}
	if out := cli("--idempotency-key", "cli-run-7"); !strings.Contains(out, "nothing new was billed") {
		t.Errorf("second --idempotency-key run: %q", out)
	}
	if got := mem.take(); len(got) != 1+4 || got[1] != "POST /v1/invoices cli-run-7:invoice" || got[4] != "GET /v1/invoices " {
		t.Errorf("calls of two CLI runs with one key: %q", got)
	}
	cli()
	cli()
	var keys []string
	for _, c := range mem.take() {
		if k, ok := strings.CutPrefix(c, "POST /v1/invoices cli-"); ok {
			keys = append(keys, k)
		}
	}
	if len(keys) != 2 || keys[0] == keys[1] || !strings.HasSuffix(keys[0], ":invoice") {
		t.Errorf("keys of two CLI runs without --idempotency-key: %q", keys)
	}
}
