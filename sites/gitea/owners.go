package gitea

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// ErrOwnerLookupLimited is returned by KnownOwner for an owner it does not
// remember when the owner look-ups of the process are over
// sites.owner_lookup_rate: nothing was asked and nothing is remembered.
var ErrOwnerLookupLimited = errors.New("gitea owner look-ups over sites.owner_lookup_rate")

// maxOwnerAnswers bounds the remembered owners; past it the expired "does
// not exist" answers are dropped, then all.
const maxOwnerAnswers = 100_000

// ownerAnswer is what is known of one owner. Immutable but for refreshing;
// replaced whole.
type ownerAnswer struct {
	exists     bool
	checked    time.Time
	refreshing atomic.Bool // a background recheck of "exists" runs
}

// owners remembers whether Gitea owners exist, for KnownOwner.
type owners struct {
	lim *rate.Limiter // look-ups of owners not remembered

	mu    sync.RWMutex
	m     map[string]*ownerAnswer
	swept time.Time // when expired "does not exist" answers were last dropped
}

func newOwners(perSecond int, now time.Time) *owners {
	lim := rate.NewLimiter(rate.Inf, 0)
	if perSecond > 0 {
		lim = rate.NewLimiter(rate.Limit(perSecond), perSecond)
	}
	return &owners{lim: lim, m: map[string]*ownerAnswer{}, swept: now}
}

// KnownOwner reports whether a Gitea user or organization named owner
// exists, for the request path. A remembered answer is served from memory,
// with no I/O and no allocation, and checked again in the background once
// older than Revalidate ("exists") or NegativeTTL ("does not exist"); while
// Gitea cannot answer, the remembered answer stays. An owner not remembered
// is looked up now, with one API call shared by concurrent callers (bounded
// by gitea_timeout); across all owners at most owner_lookup_rate such
// look-ups, and background checks of "does not exist", start per second,
// after a burst of as many. Past the rate an owner not remembered gets
// ErrOwnerLookupLimited, so invented owners cost Gitea a bounded number of
// calls and this process a bounded number of remembered answers, however
// many are asked.
func (g *Source) KnownOwner(owner string) (bool, error) {
	if a := g.owners.get(owner); a != nil {
		ttl := g.cfg.Revalidate
		if !a.exists {
			ttl = g.cfg.NegativeTTL
		}
		// Rechecks of owners that exist are not rate limited: there are
		// only as many as Gitea has owners, whoever asks.
		if g.now().Sub(a.checked) >= ttl && a.refreshing.CompareAndSwap(false, true) {
			if a.exists || g.owners.lim.Allow() {
				go g.recheckOwner(owner, a)
			} else {
				a.refreshing.Store(false)
			}
		}
		return a.exists, nil
	}
	v, err, _ := g.sf.Do("owner:"+owner, func() (any, error) {
		// A flight that just ended may have answered it.
		if a := g.owners.get(owner); a != nil {
			return a.exists, nil
		}
		// While Gitea is down the look-up would fail fast anyway: it
		// spends no token of the rate.
		if err := g.breaker.allow(); err != nil {
			return false, err
		}
		if !g.owners.lim.Allow() {
			return false, ErrOwnerLookupLimited
		}
		ctx, cancel := context.WithTimeout(context.Background(), g.cfg.GiteaTimeout)
		defer cancel()
		ok, err := g.OwnerExists(ctx, owner)
		if err != nil {
			return false, err
		}
		g.owners.put(owner, ok, g.now(), g.cfg.NegativeTTL)
		return ok, nil
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

// recheckOwner asks again whether an owner exists; on error the known
// answer stays (stale-if-error).
// The next check is no sooner than BreakerRetry.
func (g *Source) recheckOwner(name string, a *ownerAnswer) {
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.GiteaTimeout)
	defer cancel()
	ok, err := g.OwnerExists(ctx, name)
	if err != nil {
		time.AfterFunc(BreakerRetry, func() { a.refreshing.Store(false) })
		return
	}
	g.owners.put(name, ok, g.now(), g.cfg.NegativeTTL) // a new answer, not refreshing
}

func (o *owners) get(owner string) *ownerAnswer {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.m[owner]
}

// put remembers an answer checked at now. At most once per negativeTTL, and
// whenever the map is full, it drops the expired "does not exist" answers;
// if it is still full, it starts over.
func (o *owners) put(name string, exists bool, now time.Time, negativeTTL time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if now.Sub(o.swept) >= negativeTTL || len(o.m) >= maxOwnerAnswers {
		for k, a := range o.m {
			if !a.exists && now.Sub(a.checked) >= negativeTTL {
				delete(o.m, k)
			}
		}
		if len(o.m) >= maxOwnerAnswers {
			clear(o.m)
		}
		o.swept = now
	}
	o.m[name] = &ownerAnswer{exists: exists, checked: now}
}
