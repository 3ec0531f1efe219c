package gitea

import (
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/clocktest"
	"github.com/tollgate-edge/tollgate/internal/giteatest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
)

// TestGiteaOutage runs against a real Gitea that hangs (frozen with
// SIGSTOP: connections are accepted, nothing answers). Known answers (a
// branch head, a cached file, a remembered missing file, "no such repo" for
// a first path segment) are served from memory in milliseconds after their
// revalidate and negative_ttl have passed; a miss waits gitea_timeout once,
// then fails fast; the breaker closes on Gitea's return.
func TestGiteaOutage(t *testing.T) {
	gs := giteatest.Start(t)
	gs.CreateUser(t, "alice")
	gs.CreateRepo(t, "alice", "pages")
	gs.PutFile(t, "alice", "pages", "main", "index.html", []byte("<h1>alice home</h1>"))
	gs.WaitRaw(t, "alice", "pages", "main", "index.html")

	const (
		ttl     = 300 * time.Millisecond // revalidate and negative_ttl
		timeout = time.Second
	)
	clk := clocktest.New(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	g := newGiteaSource(t, gs, sites.Config{Revalidate: ttl, NegativeTTL: ttl, GiteaTimeout: timeout}, Options{Now: clk.Now})
	home := g.Repo("alice", "pages", "")
	project := g.ProjectRepo("alice", "index.html") // /index.html tries {owner}/index.html first
	known := func() error {
		if ok, err := project.Exists(); ok || err != nil {
			return errors.New("project alice/index.html: exists " + strconv.FormatBool(ok) + ", " + errString(err))
		}
		if body, err := get(t, home, "/index.html"); body != "<h1>alice home</h1>" {
			return errors.New("/index.html: " + body + ", " + errString(err))
		}
		if _, err := home.Get([]byte("/missing")); !errors.Is(err, content.ErrFileNotFound) {
			return errors.New("/missing: " + errString(err))
		}
		if ok, err := g.KnownOwner("nobody"); ok || err != nil {
			return errors.New("owner nobody: " + errString(err))
		}
		return nil
	}
	if err := known(); err != nil {
		t.Fatal(err)
	}

	gs.Freeze(t)
	clk.Add(2 * ttl) // every known answer is past its revalidate or negative_ttl
	var took []time.Duration
	for i := range 50 {
		start := time.Now()
		if err := known(); err != nil {
			t.Fatalf("round %d with Gitea frozen: %v", i, err)
		}
		took = append(took, time.Since(start))
		// Spreads the rounds over a probe interval (the breaker's pace is
		// real time), with the source's clock moving alike.
		time.Sleep(10 * time.Millisecond)
		clk.Add(10 * time.Millisecond)
	}
	slices.Sort(took)
	if slowest := took[len(took)-1]; slowest > 50*time.Millisecond {
		t.Fatalf("known answers with Gitea frozen: slowest round %v (median %v); want milliseconds", slowest, took[len(took)/2])
	}
	t.Logf("Gitea frozen: 50 rounds of 4 known answers, median %v, slowest %v", took[len(took)/2], took[len(took)-1])

	// Misses: the background checks above have already met the timeout
	// and opened the breaker, so each fails fast.
	waitState(t, g.breaker, BreakerOpen)
	var slowest time.Duration
	for i := range 20 {
		start := time.Now()
		_, err := home.Get([]byte("/never-fetched-" + strconv.Itoa(i)))
		slowest = max(slowest, time.Since(start))
		if !errors.Is(err, ErrDown) {
			t.Fatalf("uncached page %d with the breaker open: %v; want ErrDown", i, err)
		}
	}
	if slowest > 50*time.Millisecond {
		t.Fatalf("uncached pages with the breaker open: slowest %v; want milliseconds", slowest)
	}
	t.Logf("Gitea frozen: 20 uncached pages failed fast, slowest %v", slowest)

	gs.Thaw(t)
	back := time.Now()
	deadline := back.Add(BreakerRetry + timeout + 5*time.Second)
	for {
		_, err := home.Get([]byte("/never-fetched-0"))
		if errors.Is(err, content.ErrFileNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("uncached page %v after Gitea's return: %v", time.Since(back), err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	t.Logf("served again %v after Gitea's return", time.Since(back).Round(time.Millisecond))
	if st := g.Breaker(); st.State != BreakerClosed || st.Trips < 1 || st.Rejected < 20 {
		t.Fatalf("breaker after recovery: %+v; want closed, at least 1 trip and 20 rejected", st)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
