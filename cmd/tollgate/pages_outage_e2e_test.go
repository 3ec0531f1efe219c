package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/giteatest"
)

// TestPagesGiteaOutage: Gitea hangs (frozen with SIGSTOP, so every call
// waits gitea_timeout), then is killed, then comes back, under the built
// binary. Known answers keep being served in milliseconds long after
// revalidate and negative_ttl: a cached page, /index.html (whose first
// segment is a remembered "no such repo"), a project site, a remembered
// 404. Uncached misses fail fast with 503 and Retry-After once the first
// call timed out. Service recovers on Gitea's return.
func TestPagesGiteaOutage(t *testing.T) {
	gs := giteatest.Start(t)
	gs.CreateUser(t, "alice")
	gs.CreateRepo(t, "alice", "pages")
	gs.PutFile(t, "alice", "pages", "main", "index.html", []byte("<h1>alice home</h1>"))
	gs.PutFile(t, "alice", "pages", "main", "404.html", []byte("alice's own 404"))
	gs.CreateRepo(t, "alice", "blog")
	gs.CreateBranch(t, "alice", "blog", "pages", "main")
	gs.PutFile(t, "alice", "blog", "pages", "index.html", []byte("blog v1"))
	gs.WaitRaw(t, "alice", "pages", "main", "index.html")
	gs.WaitRaw(t, "alice", "blog", "pages", "index.html")

	const (
		ttl     = time.Second     // revalidate and negative_ttl
		timeout = 2 * time.Second // gitea_timeout
		fast    = 250 * time.Millisecond
	)
	t.Setenv("E2E_GITEA_TOKEN", gs.Token())
	in := startTollgateConf(t, t.TempDir(), "", fmt.Sprintf(`[sites]
pages_domain = "pages.test"
gitea_url = %q
gitea_token = "env:E2E_GITEA_TOKEN"
revalidate = %q
negative_ttl = %q
gitea_timeout = %q
`, gs.URL(), ttl, ttl, timeout))
	defer in.stop(t)

	const host = "alice.pages.test"
	known := []struct {
		path   string
		status int
		body   string
	}{
		{"/", 200, "alice home"},
		{"/index.html", 200, "alice home"}, // alice/index.html: no such repo
		{"/blog/", 200, "blog v1"},         // alice/blog: a project site
		{"/nothing-here", 404, "alice's own 404"},
	}
	round := func(phase string) time.Duration {
		t.Helper()
		var slowest time.Duration
		for _, k := range known {
			start := time.Now()
			resp, body := in.get(t, host, k.path)
			slowest = max(slowest, time.Since(start))
			if resp.StatusCode != k.status || !strings.Contains(body, k.body) {
				t.Fatalf("%s: GET %s = %d %q; want %d %q", phase, k.path, resp.StatusCode, body, k.status, k.body)
			}
		}
		return slowest
	}
	round("Gitea up")

	// Frozen: the 10 s case of issue 14 (every call waits gitea_timeout).
	gs.Freeze(t)
	time.Sleep(ttl + ttl/2) // every known answer is past revalidate and negative_ttl
	var took []time.Duration
	for i := range 30 {
		took = append(took, round("Gitea frozen, round "+strconv.Itoa(i)))
		time.Sleep(50 * time.Millisecond) // spreads the rounds over probe intervals
	}
	slices.Sort(took)
	if took[len(took)-1] > fast {
		t.Fatalf("known pages with Gitea frozen: slowest round %v, median %v; want under %v (gitea_timeout is %v)",
			took[len(took)-1], took[len(took)/2], fast, timeout)
	}
	t.Logf("Gitea frozen: 30 rounds of %d known pages, slowest request per round: median %v, max %v",
		len(known), took[len(took)/2], took[len(took)-1])

	// Uncached misses: at most the first waits gitea_timeout; then 503 with
	// Retry-After in milliseconds. Concurrent, as visitors come.
	misses := func(phase string, n int) {
		t.Helper()
		var mu sync.Mutex
		var slow []time.Duration
		var fastest, slowestFast time.Duration = time.Hour, 0
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				req, _ := http.NewRequest("GET", "http://"+in.http+"/never-fetched-"+phase+strconv.Itoa(i)+".html", nil)
				req.Host = host
				resp, err := http.DefaultClient.Do(req)
				d := time.Since(start)
				if err != nil {
					t.Errorf("%s miss %d: %v", phase, i, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				defer mu.Unlock()
				switch {
				case d > fast && resp.StatusCode == 502 && d < timeout+time.Second:
					slow = append(slow, d) // the call that met the timeout
				case resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "1" && d <= fast:
					fastest, slowestFast = min(fastest, d), max(slowestFast, d)
				default:
					t.Errorf("%s miss %d: %d (Retry-After %q) after %v; want 503 with Retry-After: 1 within %v",
						phase, i, resp.StatusCode, resp.Header.Get("Retry-After"), d, fast)
				}
			}()
		}
		wg.Wait()
		if len(slow) > 1 {
			t.Fatalf("%s: %d uncached misses waited for Gitea (%v); want at most the first", phase, len(slow), slow)
		}
		if len(slow) < n {
			t.Logf("%s: %d uncached misses: %d waited %v; the others 503 in %v..%v", phase, n, len(slow), slow, fastest, slowestFast)
		} else {
			t.Logf("%s: %d uncached misses: %d waited %v", phase, n, len(slow), slow)
		}
	}
	misses("frozen", 1)
	misses("frozen-after", 20)
	if v := metricValue(t, in, "tollgate_gitea_breaker_state"); v == 0 {
		t.Fatalf("tollgate_gitea_breaker_state = %v with Gitea frozen; want 1 or 2", v)
	}

	// Killed: connections refused; nothing changes for visitors.
	gs.Stop()
	round("Gitea killed")
	misses("killed", 20)

	// Back: served again within a probe interval.
	gs.Restart()
	back := time.Now()
	waitFor(t, func() bool {
		resp, body := in.get(t, host, "/never-fetched-frozen-after0.html")
		return resp.StatusCode == 404 && strings.Contains(body, "alice's own 404")
	})
	t.Logf("uncached pages served again %v after Gitea's return", time.Since(back).Round(time.Millisecond))
	round("Gitea back")
	if v := metricValue(t, in, "tollgate_gitea_breaker_state"); v != 0 {
		t.Fatalf("tollgate_gitea_breaker_state = %v after recovery; want 0", v)
	}
	if v := metricValue(t, in, "tollgate_gitea_breaker_trips_total"); v < 1 {
		t.Fatalf("tollgate_gitea_breaker_trips_total = %v; want at least 1", v)
	}
}

// metricValue reads one series without labels from the admin /metrics.
func metricValue(t *testing.T, in *instance, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + in.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("%s not in /metrics", name)
	return 0
}
