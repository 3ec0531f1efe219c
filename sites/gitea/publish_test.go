package gitea

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/giteatest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
)

var errOverLimit = errors.New("over the test limit")

// limitGate refuses commits whose tree is over limit bytes and records
// what it is asked and told.
type limitGate struct {
	limit atomic.Int64

	mu        sync.Mutex
	asked     []Publish
	published []Publish
}

func (g *limitGate) AllowPublish(_ context.Context, p Publish) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.asked = append(g.asked, p)
	if p.Bytes > g.limit.Load() {
		return errOverLimit
	}
	return nil
}

func (g *limitGate) Published(_ context.Context, p Publish) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.published = append(g.published, p)
}

func (g *limitGate) counts() (asked, published int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.asked), len(g.published)
}

func (g *limitGate) last() Publish {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.asked[len(g.asked)-1]
}

// treeFaults is a reverse proxy in front of a real Gitea that answers 503
// to tree listings while failing is set: the head can be read, its size
// cannot.
func treeFaults(t *testing.T, gs *giteatest.Server) (string, *atomic.Bool) {
	t.Helper()
	u, err := url.Parse(gs.URL())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() && strings.Contains(r.URL.Path, "/git/trees/") {
			http.Error(w, "trees unavailable", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &failing
}

// TestPublishGate runs against a real Gitea: a first publish is not asked;
// a push whose tree the gate refuses is not published (the served commit's
// files stay, byte for byte, and its size); the head is asked again at each
// check, so a push back under the limit, or a larger limit found by the
// background recheck, publishes and tells the gate; a tree that cannot be
// measured keeps the served commit until it can.
func TestPublishGate(t *testing.T) {
	gs := giteatest.Start(t)
	ctx := context.Background()
	gs.CreateUser(t, "alice")
	gs.CreateRepo(t, "alice", "site")
	gs.CreateBranch(t, "alice", "site", "pages", "main")
	c1 := gs.PutFile(t, "alice", "site", "pages", "index.html", []byte("<p>v1</p>"))
	gs.WaitRaw(t, "alice", "site", "pages", "index.html")

	base, failTrees := treeFaults(t, gs)
	gate := &limitGate{}
	gate.limit.Store(10_000)
	clk := clocktest.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	cfg := sites.Config{GiteaURL: base, GiteaToken: gs.Token(), Revalidate: time.Minute, NegativeTTL: time.Hour}
	g, err := New(content.NewCache(cfg), cfg, Options{Now: clk.Now, Gate: gate})
	if err != nil {
		t.Fatal(err)
	}
	r := g.Repo("alice", "site", "pages")
	serves := func(want string) {
		t.Helper()
		if body, err := get(t, r, "/"); body != want {
			t.Fatalf("GET / = %q, %v; want %q", body, err, want)
		}
	}
	push := func(commit string) error {
		return g.Pushed(ctx, Push{Owner: "alice", Repo: "site", Branch: "pages", After: commit})
	}

	serves("<p>v1</p>")
	if asked, _ := gate.counts(); asked != 0 {
		t.Fatalf("a first publish asked the gate %d times; want 0", asked)
	}
	size1, err := r.TreeSize(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Over the limit: refused, the served commit stays.
	big := strings.Repeat("x", 20_000)
	gs.PutFile(t, "alice", "site", "pages", "big.bin", []byte(big))
	c3 := gs.PutFile(t, "alice", "site", "pages", "index.html", []byte("<p>v2, with big.bin</p>"))
	for i := range 2 { // the first push, then a replay: asked again each time
		if err := push(c3); err != nil {
			t.Fatalf("push %d: %v", i, err)
		}
		serves("<p>v1</p>")
		if _, err := r.Get([]byte("/big.bin")); !errors.Is(err, content.ErrFileNotFound) {
			t.Fatalf("big.bin of the refused commit: %v; want not found", err)
		}
		if asked, _ := gate.counts(); asked != i+1 {
			t.Fatalf("push %d: gate asked %d times; want %d", i, asked, i+1)
		}
	}
	if p := gate.last(); p.Commit != c3 || p.Published != c1 || p.PublishedBytes != size1 || p.Bytes < int64(len(big)) ||
		p.Name != "alice/site" || p.Branch != "pages" {
		t.Fatalf("gate asked %+v; want commit %s over published %s (%d bytes)", p, c3, c1, size1)
	}
	if n, err := r.TreeSize(ctx); n != size1 || err != nil {
		t.Fatalf("TreeSize while refused = %d, %v; want the served commit's %d", n, err, size1)
	}

	// Back under the limit: published, and the gate is told.
	gs.DeleteFile(t, "alice", "site", "pages", "big.bin")
	mustNoErr(t, push("")) // After is only a hint
	serves("<p>v2, with big.bin</p>")
	if _, published := gate.counts(); published != 1 {
		t.Fatalf("gate told of %d publishes; want 1", published)
	}

	// Refused again, then the limit grows: the background recheck after
	// Revalidate publishes without a push.
	c5 := gs.PutFile(t, "alice", "site", "pages", "big.bin", []byte(big))
	mustNoErr(t, push(c5))
	serves("<p>v2, with big.bin</p>")
	gate.limit.Store(100_000)
	waitServed(t, clk, r, "/big.bin", big)

	// The size cannot be read: the served commit stays, the gate is not
	// asked; once it can, the next check publishes. (The breaker opens on
	// the 503: what is served must be cached.)
	serves("<p>v2, with big.bin</p>")
	failTrees.Store(true)
	gs.PutFile(t, "alice", "site", "pages", "index.html", []byte("<p>v3</p>"))
	asked, _ := gate.counts()
	if err := push(""); !errors.Is(err, ErrUpstream) {
		t.Fatalf("push with trees failing: %v; want ErrUpstream", err)
	}
	serves("<p>v2, with big.bin</p>")
	if n, _ := gate.counts(); n != asked {
		t.Fatalf("the gate was asked without the sizes (%d → %d)", asked, n)
	}
	failTrees.Store(false)
	deadline := time.Now().Add(BreakerRetry + 10*time.Second)
	for push("") != nil { // until the breaker lets calls through again
		if time.Now().After(deadline) {
			t.Fatal("push still failing after the trees came back")
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	serves("<p>v3</p>")
}

// waitServed advances clk a Revalidate at a time until r serves want at
// path (the background recheck runs after a request past Revalidate).
func waitServed(t *testing.T, clk *clocktest.Clock, r *Repo, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		clk.Add(time.Minute)
		if body, _ := get(t, r, path); body == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not served after the background recheck", path)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// TestPublishRefusalSurvivesRestart runs against a real Gitea and a real
// bbolt store: a head the gate refused stays unpublished when the Source is
// built again on the same store (a restart): the recorded commit is served
// byte for byte and the head is asked of the gate, not published as a
// first publish. A push back under the limit publishes and drops the
// record, so the next start is a first publish again.
func TestPublishRefusalSurvivesRestart(t *testing.T) {
	gs := giteatest.Start(t)
	ctx := context.Background()
	gs.CreateUser(t, "alice")
	gs.CreateRepo(t, "alice", "site")
	gs.CreateBranch(t, "alice", "site", "pages", "main")
	c1 := gs.PutFile(t, "alice", "site", "pages", "index.html", []byte("<p>v1</p>"))
	gs.WaitRaw(t, "alice", "site", "pages", "index.html")
	st := storetest.Open(t)

	// start builds a Source on st, as a process start does, with a gate of
	// its own (its memory starts empty too).
	start := func() (*Source, *Repo, *limitGate) {
		t.Helper()
		gate := &limitGate{}
		gate.limit.Store(10_000)
		cfg := sites.Config{GiteaURL: gs.URL(), GiteaToken: gs.Token(), Revalidate: time.Hour, NegativeTTL: time.Hour}
		g, err := New(content.NewCache(cfg), cfg, Options{Gate: gate, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		return g, g.Repo("alice", "site", "pages"), gate
	}
	serves := func(r *Repo, path, want string) {
		t.Helper()
		if body, err := get(t, r, path); body != want || err != nil {
			t.Fatalf("GET %s = %q, %v; want %q", path, body, err, want)
		}
	}
	record := func() *publishedRecord {
		t.Helper()
		v, err := st.Get(ctx, bucketPublished, "alice/site@pages")
		if err != nil || v == nil {
			return nil
		}
		var rec publishedRecord
		mustNoErr(t, json.Unmarshal(v, &rec))
		return &rec
	}

	g, r, _ := start()
	serves(r, "/", "<p>v1</p>")
	if rec := record(); rec != nil {
		t.Fatalf("a publish without a refusal recorded %+v", rec)
	}
	big := strings.Repeat("x", 20_000)
	gs.PutFile(t, "alice", "site", "pages", "big.bin", []byte(big))
	c3 := gs.PutFile(t, "alice", "site", "pages", "index.html", []byte("<p>v2</p>"))
	mustNoErr(t, g.Pushed(ctx, Push{Owner: "alice", Repo: "site", Branch: "pages", After: c3}))
	serves(r, "/", "<p>v1</p>")
	if rec := record(); rec == nil || rec.Commit != c1 || rec.Refused != c3 || rec.Branch != "pages" {
		t.Fatalf("record after the refusal: %+v; want %s served, %s refused", rec, c1, c3)
	}

	// Restarted: the recorded commit is served, the head asked and refused.
	_, r, gate := start()
	serves(r, "/", "<p>v1</p>")
	if _, err := r.Get([]byte("/big.bin")); !errors.Is(err, content.ErrFileNotFound) {
		t.Fatalf("big.bin of the refused commit after a restart: %v; want not found", err)
	}
	if asked, _ := gate.counts(); asked != 1 {
		t.Fatalf("gate asked %d times after the restart; want 1", asked)
	}
	if p := gate.last(); p.Commit != c3 || p.Published != c1 || p.PublishedBytes == 0 || p.Bytes < int64(len(big)) {
		t.Fatalf("gate asked %+v; want %s over the recorded %s", p, c3, c1)
	}

	// Restarted again, then back under the limit: published, the gate is
	// told, the record dropped.
	g, r, gate = start()
	serves(r, "/", "<p>v1</p>")
	gs.DeleteFile(t, "alice", "site", "pages", "big.bin")
	mustNoErr(t, g.Pushed(ctx, Push{Owner: "alice", Repo: "site", Branch: "pages"}))
	serves(r, "/", "<p>v2</p>")
	if _, published := gate.counts(); published != 1 {
		t.Fatalf("gate told of %d publishes; want 1", published)
	}
	if rec := record(); rec != nil {
		t.Fatalf("record after a publish: %+v", rec)
	}

	// No record: the next start is a first publish, not asked.
	_, r, gate = start()
	serves(r, "/", "<p>v2</p>")
	if asked, _ := gate.counts(); asked != 0 {
		t.Fatalf("a first publish asked the gate %d times; want 0", asked)
	}
}
