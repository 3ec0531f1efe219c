package billing

// The storage quota at publish time: a new commit of a Gitea repository that
// would take its org over storage_bytes is not published.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// ErrStorageQuota is returned by PublishGuard.AllowPublish for a commit
// that would take its org over its plan's storage_bytes.
var ErrStorageQuota = errors.New("over the storage quota")

// PublishCheck is a commit a site would publish instead of the one it
// serves, with the bytes of both trees.
type PublishCheck struct {
	// Org pays for the site. Site is the registry site's id, or, for a
	// pages repository without one, the name the meter counts it under
	// ("owner/repo", "owner/repo@branch").
	Org, Site string
	// Commit is the new head, Published the commit served now.
	Commit, Published string
	// Bytes and PublishedBytes are the sizes of their trees.
	Bytes, PublishedBytes int64
}

// PublishBlock is a site's head commit that is not published: GET
// /v1/sites/{id} shows it as publish_blocked until the site publishes a
// commit.
type PublishBlock struct {
	Commit string    `json:"commit"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// PublishGuard holds new commits of Gitea sites to their org's storage
// quota, and keeps each site's refused head. It is safe for concurrent use.
//
// Its state is this node's, in memory: in a cluster each node decides with
// the storage it measured (Options.Storage) and shows its own refusals, and
// a restart forgets them (a site's first publish after it is not held: its
// org's measured storage then shows it over the quota).
type PublishGuard struct {
	b *Billing

	mu      sync.Mutex
	blocked map[string]PublishBlock // site → its refused head
}

// NewPublishGuard returns the publish guard of b's orgs: it reads their
// plans and stored bytes through b, records refusals in their events and
// emits the hooks through b's Emitter.
func NewPublishGuard(b *Billing) *PublishGuard {
	return &PublishGuard{b: b, blocked: map[string]PublishBlock{}}
}

// AllowPublish returns nil when the org may store c.Commit instead of
// c.Published: its plan has no storage_bytes, or the org's stored bytes
// (as measured on this node) minus the published tree plus the new one stay
// within it. An org not in the registry is not held.
//
// Otherwise it returns an error matching ErrStorageQuota and, the first
// time it refuses c.Commit for c.Site, records the refusal: an org event
// (field "publish", from the published commit to the refused one, actor
// billing, the sizes in its cause, the site in its ref), the hook
// quota.storage_exceeded (id quota.storage_exceeded:{org}:{site}:{commit},
// the same on every node) and the site's PublishBlock.
func (g *PublishGuard) AllowPublish(ctx context.Context, c PublishCheck) error {
	snap := g.b.opts.Sites.Snapshot()
	o := snap.Orgs.Get(c.Org)
	if o == nil {
		return nil
	}
	p := snap.Plans.Get(o.Plan)
	if p == nil || p.StorageBytes <= 0 {
		return nil
	}
	var stored int64
	if g.b.opts.Storage != nil {
		stored = g.b.opts.Storage.OrgStorage(c.Org)
	}
	total := max(stored-c.PublishedBytes, 0) + c.Bytes
	if total <= p.StorageBytes {
		return nil
	}
	reason := fmt.Sprintf("commit %s stores %d bytes (the published %s stores %d): org %s would store %d bytes, over the %d of plan %s",
		shortCommit(c.Commit), c.Bytes, shortCommit(c.Published), c.PublishedBytes, c.Org, total, p.StorageBytes, p.Name)
	g.refuse(ctx, c, reason, map[string]any{"quota": "storage", "used": total, "limit": p.StorageBytes, "site": c.Site,
		"commit": c.Commit, "commit_bytes": c.Bytes, "published_commit": c.Published, "published_bytes": c.PublishedBytes})
	return fmt.Errorf("%w: %s", ErrStorageQuota, reason)
}

// refuse records the refusal of c.Commit for c.Site, once per commit.
func (g *PublishGuard) refuse(ctx context.Context, c PublishCheck, reason string, data map[string]any) {
	now := g.b.now()
	g.mu.Lock()
	if g.blocked[c.Site].Commit == c.Commit {
		g.mu.Unlock()
		return
	}
	g.blocked[c.Site] = PublishBlock{Commit: c.Commit, Reason: reason, At: now}
	g.mu.Unlock()

	e := Event{At: now, Org: c.Org, Field: "publish", From: c.Published, To: c.Commit,
		Cause: "site " + c.Site + " not published: " + reason, Actor: ActorBilling, Ref: c.Site}
	_, err := g.b.opts.Sites.ModifyOrg(ctx, c.Org, func(*sites.Org, *sites.Snapshot) ([]store.Op, error) {
		v, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		return []store.Op{store.Put(bucketEvents, eventKey(c.Org, now), v)}, nil
	})
	if err != nil {
		g.b.log.Error("publish refusal not recorded", slog.String("org", c.Org), slog.String("site", c.Site), slog.Any("err", err))
	}
	g.b.emit(ctx, HookEvent{ID: fmt.Sprintf("quota.storage_exceeded:%s:%s:%s", c.Org, c.Site, c.Commit),
		Type: "quota.storage_exceeded", Org: c.Org, At: now, Data: data})
}

// Published drops the site's PublishBlock: it published a commit.
func (g *PublishGuard) Published(site string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.blocked, site)
}

// PublishBlocked returns the site's refused head, if it has one.
func (g *PublishGuard) PublishBlocked(site string) (PublishBlock, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	b, ok := g.blocked[site]
	return b, ok
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
