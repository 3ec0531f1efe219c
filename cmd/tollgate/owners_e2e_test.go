package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/giteatest"
)

// adminCall sends one admin API request with the e2e token and returns the
// status and body.
func (in *instance) adminCall(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+in.admin+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReservedNamesE2E: with [sites] pages_domain and [billing.stripe]
// webhook_host set, the built binary refuses to attach those names (and any
// name under the pages domain) to a site: 409 with a problem document. A
// name attached before it became reserved is reported at start.
func TestReservedNamesE2E(t *testing.T) {
	dir := t.TempDir()
	in := startTollgate(t, dir)
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/orgs", `{"id":"acme","plan":"free"}`},
		{"POST", "/v1/orgs/acme/sites", `{"id":"www","source":{"type":"upstream","url":"http://127.0.0.1:9"}}`},
		{"POST", "/v1/sites/www/domains", `{"domain":"squat.pages.test"}`}, // not reserved yet
		{"PUT", "/v1/plans/free", `{"sites":1,"domains":0}`},               // no domain limit from here on
	} {
		if code, body := in.adminCall(t, c.method, c.path, c.body); code >= 300 {
			t.Fatalf("%s %s: %d %s", c.method, c.path, code, body)
		}
	}
	in.stop(t)

	in = startTollgateConf(t, dir, "", `[sites]
pages_domain = "Pages.Test"
gitea_url = "http://127.0.0.1:9"
[billing.stripe]
webhook_secret = "whsec_e2e0123456789"
webhook_host = "billing.test"
api_base = "http://127.0.0.1:9"
`)
	defer in.stop(t)
	if log := in.stderr.String(); !strings.Contains(log, "one of tollgate's own hostnames") || !strings.Contains(log, "squat.pages.test") {
		t.Errorf("the start log does not report squat.pages.test, attached before it was reserved:\n%s", log)
	}
	tests := []struct {
		domain string
		status int
	}{
		{"pages.test", http.StatusConflict},
		{"alice.pages.test", http.StatusConflict},
		{"Blog.Alice.Pages.Test", http.StatusConflict},
		{"billing.test", http.StatusConflict},
		{"www.example", http.StatusCreated},
		{"pages.test.example", http.StatusCreated},
	}
	for _, tt := range tests {
		t.Run(tt.domain, func(t *testing.T) {
			code, body := in.adminCall(t, "POST", "/v1/sites/www/domains", `{"domain":"`+tt.domain+`"}`)
			if code != tt.status {
				t.Fatalf("status %d, want %d: %s", code, tt.status, body)
			}
			if tt.status != http.StatusConflict {
				return
			}
			var p struct{ Type, Detail string }
			if err := json.Unmarshal([]byte(body), &p); err != nil || p.Type != "urn:tollgate:problem:reserved" {
				t.Fatalf("problem %s (%v); want type urn:tollgate:problem:reserved", body, err)
			}
		})
	}
}

const (
	// e2eInventedHosts is how many random {owner}.pages.test hosts the
	// binary is asked for.
	e2eInventedHosts = 100_000
	// e2eOwnerLookupRate is the run's [sites] owner_lookup_rate.
	e2eOwnerLookupRate = 20
	// e2eRevalidate is the run's [sites] revalidate: how often alice's
	// branch head is checked again.
	e2eRevalidate = 60 * time.Second
	// e2eInventedRSSBound is how much the binary's resident set may grow
	// over the whole run.
	e2eInventedRSSBound = 16 << 20
)

// TestInventedPagesHostsE2E: the built binary, in front of a real Gitea,
// answers 100,000 requests for random {owner}.pages.test hosts with 404 or
// 503, creates no org for them, calls Gitea (counted by a proxy in front of
// it) no more than its owner look-ups allow (owner_lookup_rate a second)
// and alice's repository needs, keeps its resident set within
// e2eInventedRSSBound of where it started, and serves a real owner's page
// within 100 ms throughout.
func TestInventedPagesHostsE2E(t *testing.T) {
	gs := giteatest.Start(t)
	gs.CreateUser(t, "alice")
	gs.CreateRepo(t, "alice", "pages")
	gs.PutFile(t, "alice", "pages", "main", "index.html", []byte("alice home"))
	gs.WaitRaw(t, "alice", "pages", "main", "index.html")

	// Counts tollgate's calls on their way to Gitea: owner look-ups, calls
	// for alice's repository, and all.
	var ownerCalls, aliceCalls, apiCalls atomic.Int64
	target, _ := url.Parse(gs.URL())
	rp := httputil.NewSingleHostReverseProxy(target)
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		apiCalls.Add(1)
		switch {
		case strings.HasPrefix(r.URL.Path, "/api/v1/users/"):
			ownerCalls.Add(1)
		case r.URL.Path == "/api/v1/repos/alice/pages", strings.HasPrefix(r.URL.Path, "/api/v1/repos/alice/pages/"):
			aliceCalls.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(counting.Close)

	t.Setenv("E2E_GITEA_TOKEN", gs.Token())
	in := startTollgateConf(t, t.TempDir(), "", fmt.Sprintf(`[sites]
pages_domain = "pages.test"
gitea_url = %q
gitea_token = "env:E2E_GITEA_TOKEN"
owner_lookup_rate = %d
revalidate = %q
`, counting.URL, e2eOwnerLookupRate, e2eRevalidate))
	defer in.stop(t)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 10 * time.Second}
	get := func(host string) (int, time.Duration) {
		req, _ := http.NewRequest("GET", "http://"+in.http+"/", nil)
		req.Host = host
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("GET %s/: %v", host, err)
			return 0, 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, time.Since(start)
	}
	if code, _ := get("alice.pages.test"); code != http.StatusOK {
		t.Fatalf("alice.pages.test/: %d; want 200", code)
	}
	orgCount := func() int {
		code, body := in.adminCall(t, "GET", "/v1/orgs", "")
		var list struct{ Orgs []json.RawMessage }
		if code != http.StatusOK || json.Unmarshal([]byte(body), &list) != nil {
			t.Fatalf("GET /v1/orgs: %d %s", code, body)
		}
		return len(list.Orgs)
	}
	waitFor(t, func() bool {
		code, _ := in.adminCall(t, "GET", "/v1/orgs/gitea-alice", "")
		return code == http.StatusOK
	})
	orgs0 := orgCount()
	rss0 := in.rss(t)
	owners0, alice0, api0 := ownerCalls.Load(), aliceCalls.Load(), apiCalls.Load()

	// The Gitea calls a run of d may cost, and no others:
	//   - owner look-ups: the burst, then owner_lookup_rate a second;
	//   - alice's repository, served throughout: the site tender measures
	//     her commit once, about 2 s after her first page, so usually within
	//     the run (its tree and its .domains: 2 calls), and her branch head
	//     is checked again every e2eRevalidate, the first time up to one
	//     e2eRevalidate into the run (3 calls: her pages branch, which she
	//     does not have, the repository for its default branch, that
	//     branch). A run on a loaded machine can last past e2eRevalidate.
	ownerBound := func(d time.Duration) int64 {
		return e2eOwnerLookupRate + int64(d.Seconds()*e2eOwnerLookupRate)
	}
	aliceBound := func(d time.Duration) int64 { return 2 + 3*(1+int64(d/e2eRevalidate)) }
	var start time.Time
	// checkCalls reports the calls of the run so far over their bounds.
	checkCalls := func(after string) {
		owners, alice, calls := ownerCalls.Load()-owners0, aliceCalls.Load()-alice0, apiCalls.Load()-api0
		d := time.Since(start) // after the counts: every call counted is within d
		if owners > ownerBound(d) {
			t.Errorf("%s in %v: %d owner look-ups; want at most %d", after, d, owners, ownerBound(d))
		}
		if alice > aliceBound(d) {
			t.Errorf("%s in %v: %d calls for alice's repository; want at most %d", after, d, alice, aliceBound(d))
		}
		if other := calls - owners - alice; other > 0 {
			t.Errorf("%s in %v: %d other Gitea API calls; want none", after, d, other)
		}
	}
	const workers = 8
	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		slowest  time.Duration
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	start = time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[int]int{}
			for {
				i := next.Add(1)
				if i > e2eInventedHosts || t.Failed() {
					break
				}
				code, _ := get(fmt.Sprintf("x%016x.pages.test", rand.Uint64()))
				local[code]++
				if i%1000 == 0 {
					code, took := get("alice.pages.test")
					mu.Lock()
					slowest = max(slowest, took)
					mu.Unlock()
					if code != http.StatusOK {
						t.Errorf("alice.pages.test/ after %d invented hosts: %d; want 200", i, code)
					}
					// Checked as it goes, so that a regression fails fast.
					checkCalls(fmt.Sprintf("after %d invented hosts", i))
				}
			}
			mu.Lock()
			for k, v := range local {
				statuses[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	rss1 := in.rss(t)
	owners, alice, calls := ownerCalls.Load()-owners0, aliceCalls.Load()-alice0, apiCalls.Load()-api0

	for code, n := range statuses {
		if code != http.StatusNotFound && code != http.StatusServiceUnavailable {
			t.Errorf("%d invented hosts answered %d; want only 404 and 503", n, code)
		}
	}
	checkCalls("the whole run")
	if n := orgCount() - orgs0; n != 0 {
		t.Errorf("%d orgs created for invented owners; want 0", n)
	}
	if growth := rss1 - rss0; growth > e2eInventedRSSBound {
		t.Errorf("RSS grew by %d bytes (%d -> %d) over %d invented hosts; want at most %d", growth, rss0, rss1, e2eInventedHosts, e2eInventedRSSBound)
	}
	if slowest > 100*time.Millisecond {
		t.Errorf("alice.pages.test/ took up to %v during the run; want within 100ms", slowest)
	}
	done := 0
	for _, n := range statuses {
		done += n
	}
	t.Logf("%d invented hosts in %v (%.0f/s): statuses %v; Gitea API calls %d (owner look-ups %d, bound %d; alice's repository %d, bound %d); RSS %.1f -> %.1f MiB; alice slowest %v",
		done, elapsed.Round(time.Millisecond), float64(done)/elapsed.Seconds(), statuses, calls, owners, ownerBound(elapsed), alice, aliceBound(elapsed),
		float64(rss0)/(1<<20), float64(rss1)/(1<<20), slowest)
}
