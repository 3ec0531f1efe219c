package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tollgate-edge/tollgate/meter"
)

// The read side of RedisUsage: usage queries.

// Hourly returns the org's hour buckets in [from, to), oldest first; hours
// without usage are absent. The range may span at most 400 days.
func (r *RedisUsage) Hourly(ctx context.Context, org string, from, to time.Time) ([]meter.Point, error) {
	return r.hours(ctx, func(hour string) string { return orgHourKey(org, hour) }, from, to)
}

// SiteHourly returns one site's hour buckets in [from, to), oldest first;
// hours without usage are absent. Their sum over the org's sites is the
// org's Hourly: one script writes both. The range may span at most 400 days.
func (r *RedisUsage) SiteHourly(ctx context.Context, org, site string, from, to time.Time) ([]meter.Point, error) {
	return r.hours(ctx, func(hour string) string { return siteHourKey(org, site, hour) }, from, to)
}

// hourRange is the hour buckets a query of [from, to) reads: from's hour up
// to the end of the hour holding `to` (excluded when `to` starts an hour).
func hourRange(from, to time.Time) (start time.Time, n int, err error) {
	if to.Sub(from) > maxHourlyRange {
		return time.Time{}, 0, fmt.Errorf("store: hourly range %s to %s is longer than %d days", from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339), int(maxHourlyRange.Hours()/24))
	}
	start, end := meter.Hour(from), meter.Hour(to)
	if end.Before(to) {
		end = end.Add(time.Hour)
	}
	if !start.Before(end) {
		return start, 0, nil
	}
	return start, int(end.Sub(start) / time.Hour), nil
}

// hours reads the hash key(hour) of every hour of [from, to) in one
// pipeline.
func (r *RedisUsage) hours(ctx context.Context, key func(hour string) string, from, to time.Time) ([]meter.Point, error) {
	start, n, err := hourRange(from, to)
	if err != nil || n == 0 {
		return nil, err
	}
	cmds := make([]*redis.MapStringStringCmd, n)
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range cmds {
			cmds[i] = p.HGetAll(ctx, key(hourKey(start.Add(time.Duration(i)*time.Hour))))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: redis usage: hourly usage %s: %w", key("*"), err)
	}
	var out []meter.Point
	for i, cmd := range cmds {
		if len(cmd.Val()) == 0 {
			continue
		}
		v, err := parseValues(cmd.Val())
		if err != nil {
			return nil, fmt.Errorf("store: redis usage: %s: %w", key(hourKey(start.Add(time.Duration(i)*time.Hour))), err)
		}
		out = append(out, meter.Point{Start: start.Add(time.Duration(i) * time.Hour), Values: v})
	}
	return out, nil
}

// sitesPipeline bounds the commands of one pipeline of SiteTotals.
const sitesPipeline = 10_000

// SiteTotals returns the totals in [from, to) of each of the org's sites
// with usage then, by site id. They sum to the org's totals of the same
// range exactly. It reads the site sets of the periods the range touches,
// then one HGETALL per site and hour, in pipelines of at most 10,000
// commands. The range may span at most 400 days.
func (r *RedisUsage) SiteTotals(ctx context.Context, org string, from, to time.Time) ([]meter.SiteTotal, error) {
	start, n, err := hourRange(from, to)
	if err != nil || n == 0 {
		return nil, err
	}
	var setKeys []string
	last := meter.Period(start.Add(time.Duration(n-1) * time.Hour))
	for p := start; ; p = p.AddDate(0, 1, 0) {
		setKeys = append(setKeys, periodSitesKey(org, meter.Period(p)))
		if meter.Period(p) == last {
			break
		}
	}
	siteIDs, err := r.c.SUnion(ctx, setKeys...).Result()
	if err != nil {
		return nil, fmt.Errorf("store: redis usage: sites of %s: %w", org, err)
	}
	slices.Sort(siteIDs)
	totals := make([]meter.Values, len(siteIDs))
	seen := make([]bool, len(siteIDs))
	type read struct {
		site int // index in siteIDs
		key  string
	}
	reads := make([]read, 0, min(sitesPipeline, n*len(siteIDs)))
	flush := func() error {
		cmds := make([]*redis.MapStringStringCmd, len(reads))
		_, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, rd := range reads {
				cmds[i] = p.HGetAll(ctx, rd.key)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: redis usage: site usage of %s: %w", org, err)
		}
		for i, cmd := range cmds {
			if len(cmd.Val()) == 0 {
				continue
			}
			v, err := parseValues(cmd.Val())
			if err != nil {
				return fmt.Errorf("store: redis usage: %s: %w", reads[i].key, err)
			}
			totals[reads[i].site].Add(v)
			seen[reads[i].site] = true
		}
		reads = reads[:0]
		return nil
	}
	for si, site := range siteIDs {
		for h := range n {
			reads = append(reads, read{si, siteHourKey(org, site, hourKey(start.Add(time.Duration(h)*time.Hour)))})
			if len(reads) == sitesPipeline {
				if err := flush(); err != nil {
					return nil, err
				}
			}
		}
	}
	if len(reads) > 0 {
		if err := flush(); err != nil {
			return nil, err
		}
	}
	var out []meter.SiteTotal
	for i, site := range siteIDs {
		if seen[i] {
			out = append(out, meter.SiteTotal{Site: site, Values: totals[i]})
		}
	}
	return out, nil
}

// PeriodTotals lists every org's totals for a period ("YYYY-MM"), by org id,
// starting after the org id `after`, at most limit (at least 1); next is the
// cursor of the following page, "" on the last.
func (r *RedisUsage) PeriodTotals(ctx context.Context, period, after string, limit int) ([]meter.OrgTotal, string, error) {
	if limit < 1 {
		return nil, "", fmt.Errorf("store: period totals: limit %d must be at least 1", limit)
	}
	start := "-"
	if after != "" {
		start = "(" + after
	}
	orgs, err := r.c.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: periodIndexKey(period), Start: start, Stop: "+", ByLex: true, Count: int64(limit) + 1,
	}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("store: redis usage: orgs of period %s: %w", period, err)
	}
	next := ""
	if len(orgs) > limit {
		orgs = orgs[:limit]
		next = orgs[limit-1]
	}
	if len(orgs) == 0 {
		return nil, "", nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(orgs))
	_, err = r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, org := range orgs {
			cmds[i] = p.HGetAll(ctx, periodKey(org, period))
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("store: redis usage: totals of period %s: %w", period, err)
	}
	var out []meter.OrgTotal
	for i, cmd := range cmds {
		if len(cmd.Val()) == 0 {
			continue // indexed, but the script did not run (yet): no usage
		}
		v, err := parseValues(cmd.Val())
		if err != nil {
			return nil, "", fmt.Errorf("store: redis usage: %s: %w", periodKey(orgs[i], period), err)
		}
		out = append(out, meter.OrgTotal{Org: orgs[i], Values: v})
	}
	return out, next, nil
}

func parseValues(h map[string]string) (meter.Values, error) {
	var v meter.Values
	dst := [4]*int64{&v.EgressBytes, &v.Requests, &v.IngressBytes, &v.StorageByteSeconds}
	for i, f := range usageFields {
		s, ok := h[f]
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return meter.Values{}, fmt.Errorf("field %s: %w", f, err)
		}
		*dst[i] = n
	}
	return v, nil
}
