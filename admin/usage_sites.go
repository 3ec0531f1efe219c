package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
)

// SiteUsageReader answers per-site usage queries. *store.BoltUsage and
// *store.RedisUsage implement it.
type SiteUsageReader interface {
	// SiteHourly returns one site's hour buckets in [from, to), oldest
	// first, without the hours that had no usage.
	SiteHourly(ctx context.Context, org, site string, from, to time.Time) ([]meter.Point, error)
	// SiteTotals returns the totals in [from, to) of each of the org's sites
	// that had usage then, by site id. They sum to the org's totals exactly.
	SiteTotals(ctx context.Context, org string, from, to time.Time) ([]meter.SiteTotal, error)
}

// groupBySite is the one value group_by takes.
const groupBySite = "site"

// UsageSites is the answer of GET /v1/usage?org=ID&group_by=site.
type UsageSites struct {
	Org  string    `json:"org"`
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// Sites are the sites with usage in the range, by id; deleted sites
	// included.
	Sites []meter.SiteTotal `json:"sites"`
	// Totals is the sum of Sites: the org's totals over the range.
	Totals meter.Values `json:"totals"`
}

// siteHourly reads one site's hourly usage. A site with usage under org in
// the range is answered whether or not the registry still has it (billing
// reads the usage of deleted sites); without usage, the registry explains:
// a site of another org is 422 (404, as one that does not exist, when
// confined to org: a tenant's request), one that does not exist 404, and
// one of org an empty series.
func (s *Server) siteHourly(ctx context.Context, org, site string, from, to time.Time, confined bool) ([]meter.Point, error) {
	if s.siteUsage == nil {
		return nil, fmt.Errorf("%w: per-site usage is not configured", errNotConfig)
	}
	hourly, err := s.siteUsage.SiteHourly(ctx, org, site, from, to)
	if err != nil || len(hourly) > 0 {
		return hourly, err
	}
	switch st := s.reg.Snapshot().Sites.Get(site); {
	case st == nil, confined && st.Org != org:
		return nil, fmt.Errorf("site %q (no usage in org %q in this range, and not in the registry): %w", site, org, sites.ErrNotFound)
	case st.Org != org:
		return nil, fmt.Errorf("%w: site %q belongs to org %q, not %q", errSiteNotInOrg, site, st.Org, org)
	}
	return nil, nil
}

// usageBySite answers group_by=site: each site's totals over [from, to).
func (s *Server) usageBySite(w http.ResponseWriter, r *http.Request, org string, from, to time.Time, asCSV bool) error {
	if s.siteUsage == nil {
		return fmt.Errorf("%w: per-site usage is not configured", errNotConfig)
	}
	totals, err := s.siteUsage.SiteTotals(r.Context(), org, from, to)
	if err != nil {
		return err
	}
	out := UsageSites{Org: org, From: from, To: to, Sites: totals}
	if out.Sites == nil {
		out.Sites = []meter.SiteTotal{}
	}
	for _, st := range out.Sites {
		out.Totals.Add(st.Values)
	}
	if asCSV {
		rows := [][]string{append([]string{"site"}, usageColumns...)}
		for _, st := range out.Sites {
			rows = append(rows, append([]string{st.Site}, usageCells(st.Values)...))
		}
		return writeCSV(w, rows)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// UsageQuery names the usage the Client asks for: Org's (Site's, when
// set). Zero times and "" leave the server's defaults.
type UsageQuery struct {
	Org, Site string
	From, To  time.Time
	// Step is hour, day or month (default day); not sent by UsageBySite.
	Step string
	// Period is a month, YYYY-MM; From and To override its ends.
	Period string
}

func (q UsageQuery) values() url.Values {
	v := url.Values{"org": {q.Org}}
	for name, val := range map[string]string{"site": q.Site, "step": q.Step, "period": q.Period} {
		if val != "" {
			v.Set(name, val)
		}
	}
	if !q.From.IsZero() {
		v.Set("from", q.From.Format(time.RFC3339))
	}
	if !q.To.IsZero() {
		v.Set("to", q.To.Format(time.RFC3339))
	}
	return v
}

// Usage fetches an org's series, or one site's when q.Site is set.
func (c *Client) Usage(ctx context.Context, q UsageQuery) (UsageSeries, error) {
	var out UsageSeries
	_, err := c.do(ctx, http.MethodGet, "/v1/usage?"+q.values().Encode(), nil, &out)
	return out, err
}

// UsageBySite fetches each of an org's sites' totals (group_by=site); q.Site
// and q.Step are not sent.
func (c *Client) UsageBySite(ctx context.Context, q UsageQuery) (UsageSites, error) {
	q.Site, q.Step = "", ""
	v := q.values()
	v.Set("group_by", groupBySite)
	var out UsageSites
	_, err := c.do(ctx, http.MethodGet, "/v1/usage?"+v.Encode(), nil, &out)
	return out, err
}
