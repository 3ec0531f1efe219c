package admin

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate-edge/tollgate/meter"
)

// UsageReader answers usage queries. *store.BoltUsage and *store.RedisUsage
// implement it.
type UsageReader interface {
	Hourly(ctx context.Context, org string, from, to time.Time) ([]meter.Point, error)
	PeriodTotals(ctx context.Context, period, after string, limit int) ([]meter.OrgTotal, string, error)
}

// UsageSeries is the answer of GET /v1/usage?org=ID (and &site=ID).
type UsageSeries struct {
	Org string `json:"org"`
	// Site is set when the series is one site's.
	Site   string        `json:"site,omitempty"`
	From   time.Time     `json:"from"`
	To     time.Time     `json:"to"`
	Step   string        `json:"step"`
	Series []meter.Point `json:"series"`
	Totals meter.Values  `json:"totals"`
}

// UsagePeriod is the answer of GET /v1/usage?period=YYYY-MM (every org).
type UsagePeriod struct {
	Period     string           `json:"period"`
	Orgs       []meter.OrgTotal `json:"orgs"`
	NextCursor string           `json:"next_cursor,omitempty"`
}

const (
	maxUsageRange     = 400 * 24 * time.Hour
	defaultUsageLimit = 100
	maxUsageLimit     = 1000
)

var usageColumns = []string{"egress_bytes", "requests", "ingress_bytes", "storage_byte_seconds"}

func usageCells(v meter.Values) []string {
	return []string{strconv.FormatInt(v.EgressBytes, 10), strconv.FormatInt(v.Requests, 10),
		strconv.FormatInt(v.IngressBytes, 10), strconv.FormatInt(v.StorageByteSeconds, 10)}
}

// usage serves GET /v1/usage. With org: the org's series between from and to
// (RFC 3339; default: the current UTC calendar month, or the month named by
// period) by step (hour, day or month; default day); with site as well, that
// site's series (usage_sites.go); with group_by=site instead, each site's
// totals. Without org: period (required) lists every org's totals for that
// month, by org id, paginated with cursor and limit. Accept: text/csv (or
// format=csv) gives CSV. Orgs are not checked against the registry: the
// usage of a deleted org stays readable for billing.
func (s *Server) usage(w http.ResponseWriter, r *http.Request) error {
	if s.usageReader == nil {
		return fmt.Errorf("%w: metering is not configured", errNotConfig)
	}
	q := r.URL.Query()
	asCSV := q.Get("format") == "csv" || strings.Contains(r.Header.Get("Accept"), "text/csv")
	org, period, site, groupBy := q.Get("org"), q.Get("period"), q.Get("site"), q.Get("group_by")
	if org == "" {
		switch {
		case site != "" || groupBy != "":
			return badRequest("site and group_by need org=ID")
		case period == "":
			return badRequest("give org=ID (one org's series) or period=YYYY-MM (every org's totals)")
		}
		return s.usagePeriod(w, r, period, asCSV)
	}
	from, to, err := usageRange(q, time.Now().UTC())
	if err != nil {
		return err
	}
	switch {
	case groupBy != "" && groupBy != groupBySite:
		return badRequest("group_by: %q must be %q", groupBy, groupBySite)
	case groupBy != "" && site != "":
		return badRequest("give site=ID (one site's series) or group_by=site (every site's totals), not both")
	case groupBy != "" && q.Has("step"):
		return badRequest("step does not apply to group_by=site, which answers one total per site")
	case groupBy != "":
		return s.usageBySite(w, r, org, from, to, asCSV)
	}
	step := q.Get("step")
	if step == "" {
		step = meter.StepDay
	}
	var hourly []meter.Point
	if site == "" {
		hourly, err = s.usageReader.Hourly(r.Context(), org, from, to)
	} else {
		hourly, err = s.siteHourly(r.Context(), org, site, from, to, tenantOf(r) != nil)
	}
	if err != nil {
		return err
	}
	series, totals, err := meter.Aggregate(hourly, step)
	if err != nil {
		return badRequest("%v", err)
	}
	if series == nil {
		series = []meter.Point{}
	}
	if asCSV {
		rows := [][]string{append([]string{"start"}, usageColumns...)}
		for _, p := range series {
			rows = append(rows, append([]string{p.Start.Format(time.RFC3339)}, usageCells(p.Values)...))
		}
		return writeCSV(w, rows)
	}
	writeJSON(w, http.StatusOK, UsageSeries{Org: org, Site: site, From: from, To: to, Step: step, Series: series, Totals: totals})
	return nil
}

// usageRange is the [from, to) of a usage query: the current UTC calendar
// month at now, or the month named by period, with from and to (RFC 3339)
// overriding either end; at most maxUsageRange.
func usageRange(q url.Values, now time.Time) (from, to time.Time, err error) {
	from, to, err = meter.PeriodBounds(meter.Period(now))
	if err != nil {
		return from, to, err
	}
	if period := q.Get("period"); period != "" {
		if from, to, err = meter.PeriodBounds(period); err != nil {
			return from, to, badRequest("%v", err)
		}
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &from}, {"to", &to}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return from, to, badRequest("%s: %q is not an RFC 3339 time (2006-01-02T15:04:05Z)", p.name, v)
			}
			*p.dst = t.UTC()
		}
	}
	if !from.Before(to) {
		return from, to, badRequest("from must be before to")
	}
	if to.Sub(from) > maxUsageRange {
		return from, to, badRequest("the range may span at most %d days", int(maxUsageRange.Hours()/24))
	}
	return from, to, nil
}

func (s *Server) usagePeriod(w http.ResponseWriter, r *http.Request, period string, asCSV bool) error {
	if _, _, err := meter.PeriodBounds(period); err != nil {
		return badRequest("%v", err)
	}
	limit := defaultUsageLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxUsageLimit {
			return badRequest("limit: %q must be a number from 1 to %d", v, maxUsageLimit)
		}
		limit = n
	}
	orgs, next, err := s.usageReader.PeriodTotals(r.Context(), period, r.URL.Query().Get("cursor"), limit)
	if err != nil {
		return err
	}
	if orgs == nil {
		orgs = []meter.OrgTotal{}
	}
	if asCSV {
		if next != "" {
			w.Header().Set("Link", fmt.Sprintf(`</v1/usage?period=%s&cursor=%s&limit=%d>; rel="next"`, period, url.QueryEscape(next), limit))
		}
		rows := [][]string{append([]string{"org"}, usageColumns...)}
		for _, o := range orgs {
			rows = append(rows, append([]string{o.Org}, usageCells(o.Values)...))
		}
		return writeCSV(w, rows)
	}
	writeJSON(w, http.StatusOK, UsagePeriod{Period: period, Orgs: orgs, NextCursor: next})
	return nil
}

func writeCSV(w http.ResponseWriter, rows [][]string) error {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	cw := csv.NewWriter(w)
	_ = cw.WriteAll(rows) // the client went away: nothing to do
	return nil
}

// UsageOrg fetches one org's series; zero times and "" leave the defaults.
func (c *Client) UsageOrg(ctx context.Context, org string, from, to time.Time, step, period string) (UsageSeries, error) {
	return c.Usage(ctx, UsageQuery{Org: org, From: from, To: to, Step: step, Period: period})
}

// UsagePeriod fetches every org's totals for a month, following the cursors.
func (c *Client) UsagePeriod(ctx context.Context, period string) ([]meter.OrgTotal, error) {
	var all []meter.OrgTotal
	cursor := ""
	for {
		q := url.Values{"period": {period}, "limit": {strconv.Itoa(maxUsageLimit)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page UsagePeriod
		if _, err := c.do(ctx, http.MethodGet, "/v1/usage?"+q.Encode(), nil, &page); err != nil {
			return all, err
		}
		all = append(all, page.Orgs...)
		if page.NextCursor == "" {
			return all, nil
		}
		cursor = page.NextCursor
	}
}

func usageOrgCmd(fs *flag.FlagSet) runFunc {
	from := fs.String("from", "", "start, RFC 3339 (default: the start of the period)")
	to := fs.String("to", "", "end, RFC 3339 (default: the end of the period)")
	step := fs.String("step", "", "hour, day or month (default day)")
	period := fs.String("period", "", "a month, YYYY-MM (default: the current one)")
	site := fs.String("site", "", "one site's series instead of the org's")
	bySite := fs.Bool("by-site", false, "each site's totals instead of a series")
	return func(ctx context.Context, c *Client, args []string) (output, error) {
		q := UsageQuery{Org: args[0], Site: *site, Step: *step, Period: *period}
		for _, p := range []struct {
			name, v string
			dst     *time.Time
		}{{"from", *from, &q.From}, {"to", *to, &q.To}} {
			if p.v == "" {
				continue
			}
			v, err := time.Parse(time.RFC3339, p.v)
			if err != nil {
				return output{}, usagef("--%s: %q is not an RFC 3339 time", p.name, p.v)
			}
			*p.dst = v
		}
		if *bySite {
			if *site != "" || *step != "" {
				return output{}, usagef("--by-site answers one total per site: it takes no --site or --step")
			}
			return usageBySiteOutput(c.UsageBySite(ctx, q))
		}
		u, err := c.Usage(ctx, q)
		o := output{value: u, header: append([]string{"START"}, upper(usageColumns)...)}
		for _, p := range u.Series {
			o.rows = append(o.rows, append([]string{p.Start.Format(time.RFC3339)}, usageCells(p.Values)...))
		}
		o.rows = append(o.rows, append([]string{"TOTAL"}, usageCells(u.Totals)...))
		return o, err
	}
}

func usageBySiteOutput(u UsageSites, err error) (output, error) {
	o := output{value: u, header: append([]string{"SITE"}, upper(usageColumns)...)}
	for _, st := range u.Sites {
		o.rows = append(o.rows, append([]string{st.Site}, usageCells(st.Values)...))
	}
	o.rows = append(o.rows, append([]string{"TOTAL"}, usageCells(u.Totals)...))
	return o, err
}

func usagePeriodCmd(ctx context.Context, c *Client, args []string) (output, error) {
	orgs, err := c.UsagePeriod(ctx, args[0])
	o := output{value: orgs, header: append([]string{"ORG"}, upper(usageColumns)...)}
	for _, t := range orgs {
		o.rows = append(o.rows, append([]string{t.Org}, usageCells(t.Values)...))
	}
	return o, err
}

func upper(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToUpper(s)
	}
	return out
}
