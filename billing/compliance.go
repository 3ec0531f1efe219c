package billing

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/billing/access"
	"github.com/tollgate-edge/tollgate/sites"
)

// Entitlements beyond egress: the storage quota and the plan's site and
// domain limits bind after a grace.
//
// Each pass (Evaluate) compares every org with its plan. An org that stores
// more than storage_bytes gets Org.StorageOverSince, one that owns more
// sites or domains than its plan allows gets Org.OverPlanSince, each
// written once with an event in the org's history (field "storage_quota" or
// "plan_limits", actor billing), and cleared, with an event, when the org is
// back within. The request path follows from the gate:
//
//   - storage: past [billing] storage_grace, while the org still stores more
//     than its plan allows, its decision is BlockStorage (429,
//     STORAGE_QUOTA_EXCEEDED). Files removed or a larger plan serve it
//     again: at the next pass, or at once for a plan change (decide runs on
//     every registry change of the org).
//   - sites and domains: past [billing] downgrade_grace, the excess is put
//     on the gate (access.Excluded) and answers a "not included in this
//     plan" page. Which sites are the excess: deactivated sites (active:
//     false) are never served and do not count; of the others, those
//     marked active: true are kept first, then the oldest; the rest are the
//     excess. Of the kept sites' domains, the oldest are kept. Nothing is
//     deleted.
//
// The storage an org stores is what this node measures (StorageReader),
// read once per pass for the orgs that need it (storageNeeded): in a
// cluster each node decides from its own measure, and the first node to
// see the org over the quota writes StorageOverSince for all. Until the node has measured storage once since start, marks
// wait and the records decide.

// OverPlan is what an org owns beyond its plan's limits (GET /v1/orgs/{id}:
// over_plan).
type OverPlan struct {
	// Sites and Domains are the excess: not served once Enforced.
	Sites   []string `json:"sites,omitempty"`
	Domains []string `json:"domains,omitempty"`
	// Since is when billing first saw the excess: zero until its next pass.
	Since time.Time `json:"since,omitzero"`
	// EnforcedAt is when the excess stops being served: Since plus
	// [billing] downgrade_grace.
	EnforcedAt time.Time `json:"enforced_at,omitzero"`
	// Enforced: the excess is not served now.
	Enforced bool `json:"enforced"`
}

// OverPlan reports what org owns beyond its plan; nil when nothing (or no
// such org).
func (b *Billing) OverPlan(org string) *OverPlan {
	s := b.opts.Sites.Snapshot()
	o := s.Orgs.Get(org)
	if o == nil {
		return nil
	}
	siteIDs, domains := excess(s, org, s.Plans.Get(o.Plan))
	if len(siteIDs) == 0 && len(domains) == 0 {
		return nil
	}
	out := &OverPlan{Sites: siteIDs, Domains: domains, Since: o.OverPlanSince.Time()}
	if !o.OverPlanSince.IsZero() {
		out.EnforcedAt = o.OverPlanSince.Add(b.cfg.DowngradeGrace)
		out.Enforced = !b.now().Before(out.EnforcedAt)
	}
	return out
}

// excess returns the ids of the sites and the names of the domains org owns
// beyond plan p, each sorted; nil, nil when within (the common case costs
// two counts and no allocation).
func excess(s *sites.Snapshot, org string, p *sites.Plan) (siteIDs, domains []string) {
	if p == nil || (p.Sites == 0 || s.SiteCount(org) <= p.Sites) && (p.Domains == 0 || s.DomainCount(org) <= p.Domains) {
		return nil, nil
	}
	var served []*sites.Site
	for _, id := range s.SitesOf(org) {
		if st := s.Sites.Get(id); st != nil && (st.Active == nil || *st.Active) {
			served = append(served, st)
		}
	}
	slices.SortStableFunc(served, keepFirst)
	if p.Sites > 0 && len(served) > p.Sites {
		for _, st := range served[p.Sites:] {
			siteIDs = append(siteIDs, st.ID)
		}
		served = served[:p.Sites]
	}
	if p.Domains > 0 {
		var ds []*sites.Domain
		for _, st := range served {
			for _, name := range s.DomainsOf(st.ID) {
				if d := s.Domains.Get(name); d != nil {
					ds = append(ds, d)
				}
			}
		}
		if len(ds) > p.Domains {
			slices.SortStableFunc(ds, func(a, b *sites.Domain) int {
				return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.Name, b.Name))
			})
			for _, d := range ds[p.Domains:] {
				domains = append(domains, d.Name)
			}
		}
	}
	slices.Sort(siteIDs)
	slices.Sort(domains)
	return siteIDs, domains
}

// keepFirst orders an org's served sites by which its plan keeps first:
// marked active: true, then the oldest.
func keepFirst(a, b *sites.Site) int {
	marked := func(s *sites.Site) int {
		if s.Active != nil && *s.Active {
			return 0
		}
		return 1
	}
	return cmp.Or(cmp.Compare(marked(a), marked(b)), a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.ID, b.ID))
}

// excluded is what of org o its gate must not serve now: its excess once
// downgrade_grace has passed since OverPlanSince; nil otherwise.
func (b *Billing) excluded(s *sites.Snapshot, o *sites.Org, p *sites.Plan, now time.Time) *access.Excluded {
	if o.OverPlanSince.IsZero() || now.Before(o.OverPlanSince.Add(b.cfg.DowngradeGrace)) {
		return nil
	}
	siteIDs, domains := excess(s, o.ID, p)
	if len(siteIDs) == 0 && len(domains) == 0 {
		return nil
	}
	ex := &access.Excluded{Sites: make(map[string]struct{}, len(siteIDs)), Domains: make(map[string]struct{}, len(domains))}
	for _, id := range siteIDs {
		ex.Sites[id] = struct{}{}
	}
	for _, d := range domains {
		ex.Domains[d] = struct{}{}
	}
	return ex
}

// readStorage reads the storage of the orgs of s that need it for a pass
// (storageNeeded); measured is false while the node has not measured storage since start
// (b.storage then stays nil). The pass holds the map until the next one:
// at a million sites, keeping the orgs without a storage quota out of it
// keeps it small (empty when no plan limits storage).
func (b *Billing) readStorage(s *sites.Snapshot) (byOrg map[string]int64, measured bool) {
	if b.opts.Storage == nil {
		return nil, false
	}
	return b.opts.Storage.StorageByOrgOf(func(org string) bool { return storageNeeded(s, org) })
}

// storageNeeded reports whether a pass over s reads org's storage: its plan
// has a storage quota, or its record says it was over one (the mark to
// clear, whose event names the bytes). For any other org, storageBlocked,
// marksFor and quotaHooks decide without b.storage, so it is left out (a
// missing org reads 0). A registry change between two passes that gives
// an org a quota decides it from its record (StorageOverSince, set by a
// pass only) until the next pass reads its storage.
func storageNeeded(s *sites.Snapshot, org string) bool {
	o := s.Orgs.Get(org)
	if o == nil {
		return false
	}
	if !o.StorageOverSince.IsZero() {
		return true
	}
	p := s.Plans.Get(o.Plan)
	return p != nil && p.StorageBytes > 0
}

// storageBlocked reports whether org o is blocked for its storage: over
// its plan's quota since longer than storage_grace and, as last measured,
// still over it. Before the first measurement since start the record
// decides (a restart does not lift a block).
func (b *Billing) storageBlocked(o *sites.Org, p *sites.Plan, now time.Time) bool {
	if p == nil || p.StorageBytes <= 0 || o.StorageOverSince.IsZero() || now.Before(o.StorageOverSince.Add(b.cfg.StorageGrace)) {
		return false
	}
	return b.storage == nil || b.storage[o.ID] > p.StorageBytes
}

// mark is a change of an org's StorageOverSince or OverPlanSince that a
// pass found due.
type mark struct {
	org    string
	field  string // "storage_quota" or "plan_limits"
	over   bool   // set (true) or clear (false)
	detail string // the event's cause
}

// marksFor returns the marks org o needs: where being over its plan now
// differs from what its record says.
func (b *Billing) marksFor(s *sites.Snapshot, o *sites.Org, p *sites.Plan) []mark {
	var out []mark
	if p != nil && b.storage != nil {
		used := b.storage[o.ID]
		if over := p.StorageBytes > 0 && used > p.StorageBytes; over == o.StorageOverSince.IsZero() {
			out = append(out, mark{org: o.ID, field: "storage_quota", over: over,
				detail: fmt.Sprintf("storing %d bytes, plan %q allows %d", used, p.Name, p.StorageBytes)})
		}
	}
	siteIDs, domains := excess(s, o.ID, p)
	if over := len(siteIDs)+len(domains) > 0; over == o.OverPlanSince.IsZero() {
		detail := "within the plan's sites and domains"
		if over {
			detail = fmt.Sprintf("plan %q allows %d sites and %d domains; in excess: sites %v, domains %v",
				p.Name, p.Sites, p.Domains, siteIDs, domains)
		}
		out = append(out, mark{org: o.ID, field: "plan_limits", over: over, detail: detail})
	}
	return out
}

// applyMark writes a mark on the org with its event. The record is
// re-checked in the write: a mark another node (or an earlier pass) wrote
// already changes nothing.
func (b *Billing) applyMark(ctx context.Context, m mark, now time.Time) {
	_, _, err := b.changeAsBilling(ctx, m.org, now, func(o *sites.Org, _ *sites.Snapshot, record recordFunc) error {
		since := &o.StorageOverSince
		if m.field == "plan_limits" {
			since = &o.OverPlanSince
		}
		if m.over != since.IsZero() {
			return errUnchanged
		}
		from, to := "over", "within"
		*since = sites.Instant{}
		if m.over {
			from, to = "within", "over"
			*since = sites.At(now)
		}
		record(m.field, from, to, m.detail)
		return nil
	})
	if err != nil {
		b.log.Warn("plan compliance not recorded", slog.String("org", m.org), slog.String("field", m.field), slog.Any("err", err))
	}
}
