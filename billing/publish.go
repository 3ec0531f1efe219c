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
// Its state is this node's: in a cluster each node decides with the storage
// it measured (Options.Storage) and shows its own refusals, as each node
// serves the commits its own Gitea source published. The refused heads are
// kept in memory and in the node's own store (Options.Store, bucket
// billing_publish_blocked), read once at start: a restart shows them and
// does not record a refusal of the same commit again. A site's record goes
// when it publishes a commit or the site is deleted.
type PublishGuard struct {
	b *Billing

	mu      sync.Mutex              // guards blocked and refusing, orders blocked's writes to the store
	blocked map[string]PublishBlock // site → its refused head
	// refusing is site → the head whose refusal is being recorded: its
	// event is written before its block shows, so whoever sees the block
	// finds the event.
	refusing map[string]string
}

// bucketPublishBlocked keeps each site's PublishBlock on this node (site →
// JSON).
const bucketPublishBlocked = "billing_publish_blocked"

// NewPublishGuard returns the publish guard of b's orgs: it reads their
// plans and stored bytes through b, records refusals in their events and
// emits the hooks through b's Emitter. It reads the refused heads this node
// recorded, and follows the registry to drop those of deleted sites.
func NewPublishGuard(ctx context.Context, b *Billing) (*PublishGuard, error) {
	g := &PublishGuard{b: b, blocked: map[string]PublishBlock{}, refusing: map[string]string{}}
	err := b.opts.Store.Scan(ctx, bucketPublishBlocked, func(k, v []byte) error {
		var blk PublishBlock
		if err := json.Unmarshal(v, &blk); err != nil {
			b.log.Warn("unreadable publish block ignored", slog.String("site", string(k)), slog.Any("err", err))
			return nil
		}
		g.blocked[string(k)] = blk
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("billing: reading the publish blocks: %w", err)
	}
	b.opts.Sites.OnChange(g.sitesChanged)
	return g, nil
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

// refuse records the refusal of c.Commit for c.Site, once per commit: the
// org event first, then the block (a reader that sees the block finds the
// event), then the hook. The registry write is made without g.mu: it calls
// sitesChanged, which takes it.
func (g *PublishGuard) refuse(ctx context.Context, c PublishCheck, reason string, data map[string]any) {
	now := g.b.now()
	g.mu.Lock()
	if g.blocked[c.Site].Commit == c.Commit || g.refusing[c.Site] == c.Commit {
		g.mu.Unlock()
		return
	}
	g.refusing[c.Site] = c.Commit
	g.mu.Unlock()

	_, _, err := modify(ctx, g.b.opts.Sites, Event{At: now, Org: c.Org, Actor: ActorBilling, Ref: c.Site},
		func(_ *sites.Org, _ *sites.Snapshot, record recordFunc) error {
			record("publish", c.Published, c.Commit, "site "+c.Site+" not published: "+reason)
			return nil
		})
	if err != nil {
		g.b.log.Error("publish refusal not recorded", slog.String("org", c.Org), slog.String("site", c.Site), slog.Any("err", err))
	}
	blk := PublishBlock{Commit: c.Commit, Reason: reason, At: now}
	g.mu.Lock()
	if g.refusing[c.Site] == c.Commit { // else the site published meanwhile (Published)
		delete(g.refusing, c.Site)
		g.blocked[c.Site] = blk
		g.writeLocked(ctx, c.Site, &blk)
	}
	g.mu.Unlock()
	g.b.emit(ctx, HookEvent{ID: fmt.Sprintf("quota.storage_exceeded:%s:%s:%s", c.Org, c.Site, c.Commit),
		Type: "quota.storage_exceeded", Org: c.Org, At: now, Data: data})
}

// Published drops the site's PublishBlock: it published a commit.
func (g *PublishGuard) Published(ctx context.Context, site string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.refusing, site)
	if _, ok := g.blocked[site]; ok {
		delete(g.blocked, site)
		g.writeLocked(ctx, site, nil)
	}
}

// sitesChanged is a registry subscriber: it drops the blocks of registry
// sites that are gone (those in d, or, on a full load, every block of a site
// id). A pages repository without a registry site is blocked under its name
// ("owner/repo"), which is no site id: Published drops it. Called with the
// registry's write lock held; it writes only when a blocked site went.
func (g *PublishGuard) sitesChanged(s *sites.Snapshot, d *sites.Delta) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gone := func(id string) bool {
		_, ok := g.blocked[id]
		return ok && sites.ValidID(id) && s.Sites.Get(id) == nil
	}
	var ids []string
	if d == nil {
		for id := range g.blocked {
			ids = append(ids, id)
		}
	} else {
		ids = d.Sites
	}
	for _, id := range ids {
		if gone(id) {
			delete(g.blocked, id)
			g.writeLocked(context.Background(), id, nil)
		}
	}
}

// writeLocked stores the site's block (nil: deletes it) in this node's
// store; g.mu is held, so writes reach the store in the order of the
// changes. A failed write is logged: memory stays right until a restart.
func (g *PublishGuard) writeLocked(ctx context.Context, site string, blk *PublishBlock) {
	op := store.Delete(bucketPublishBlocked, site)
	if blk != nil {
		v, err := json.Marshal(blk)
		if err != nil {
			g.b.log.Error("publish block not stored", slog.String("site", site), slog.Any("err", err))
			return
		}
		op = store.Put(bucketPublishBlocked, site, v)
	}
	if err := g.b.opts.Store.Apply(context.WithoutCancel(ctx), op); err != nil {
		g.b.log.Error("publish block not stored", slog.String("site", site), slog.Any("err", err))
	}
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
