package sites

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

func newOwners(perSecond int) *owners {
	lim := rate.NewLimiter(rate.Inf, 0)
	if perSecond > 0 {
		lim = rate.NewLimiter(rate.Limit(perSecond), perSecond)
	}
	return &owners{lim: lim, m: map[string]*ownerAnswer{}, swept: time.Now()}
}

// KnownOwner reports whether a Gitea user or organization named owner
// exists, for the request path. A remembered answer costs no I/O and no
// allocation: "exists" is served from memory and rechecked in the
// background once older than Revalidate; "does not exist" is trusted for
// NegativeTTL. An owner not remembered is looked up now, with one API call
// shared by concurrent callers (bounded by gitea_timeout); across all
// owners at most owner_lookup_rate such look-ups start per second, after a
// burst of as many. Past the rate it returns ErrOwnerLookupLimited, so
// invented owners cost Gitea a bounded number of calls and this process a
// bounded number of remembered answers, however many are asked. A
// remembered answer costs no allocation.
func (g *Gitea) KnownOwner(owner string) (bool, error) {
	if a := g.owners.get(owner); a != nil {
		age := time.Since(a.checked)
		if a.exists {
			// Rechecks of owners that exist are not rate limited: there are
			// only as many as Gitea has owners, whoever asks.
			if age >= g.cfg.Revalidate && a.refreshing.CompareAndSwap(false, true) {
				go g.recheckOwner(owner, a)
			}
			return true, nil
		}
		if age < g.cfg.NegativeTTL {
			return false, nil
		}
	}
	v, err, _ := g.sf.Do("owner:"+owner, func() (any, error) {
		// A flight that just ended may have answered it.
		if a := g.owners.get(owner); a != nil && (a.exists || time.Since(a.checked) < g.cfg.NegativeTTL) {
			return a.exists, nil
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
		g.owners.put(owner, ok, g.cfg.NegativeTTL)
		return ok, nil
	})
	if err != nil {
		return false, err
	}
	return v.(bool), nil
}

// recheckOwner asks again whether an owner that existed still does; on
// error the known answer stays (stale-if-error).
func (g *Gitea) recheckOwner(name string, a *ownerAnswer) {
	defer a.refreshing.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.GiteaTimeout)
	defer cancel()
	if ok, err := g.OwnerExists(ctx, name); err == nil {
		g.owners.put(name, ok, g.cfg.NegativeTTL)
	}
}

func (o *owners) get(owner string) *ownerAnswer {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.m[owner]
}

// put remembers an answer. At most once per negativeTTL, and whenever the
// map is full, it drops the expired "does not exist" answers; if it is
// still full, it starts over.
func (o *owners) put(name string, exists bool, negativeTTL time.Duration) {
	now := time.Now()
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
