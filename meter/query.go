package meter

import (
	"context"
	"fmt"
	"time"
)

// Point is the usage of one time bucket starting at Start.
type Point struct {
	Start time.Time `json:"start"`
	Values
}

// OrgTotal is one org's usage over a period.
type OrgTotal struct {
	Org string `json:"org"`
	Values
}

// SiteTotal is one site's usage over a range.
type SiteTotal struct {
	Site string `json:"site"`
	Values
}

// Reader answers usage queries. *store.BoltUsage and *store.RedisUsage
// implement it.
type Reader interface {
	Hourly(ctx context.Context, org string, from, to time.Time) ([]Point, error)
	PeriodTotals(ctx context.Context, period, after string, limit int) ([]OrgTotal, string, error)
}

// Steps of a usage series.
const (
	StepHour  = "hour"
	StepDay   = "day"
	StepMonth = "month"
)

// bucketStart is the start of t's bucket for step, in UTC.
func bucketStart(t time.Time, step string) time.Time {
	t = t.UTC()
	switch step {
	case StepDay:
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	case StepMonth:
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	}
	return t.Truncate(time.Hour)
}

// Aggregate sums hourly points into buckets of step and returns the series
// (only buckets with usage, oldest first) and the totals.
func Aggregate(hourly []Point, step string) ([]Point, Values, error) {
	if step != StepHour && step != StepDay && step != StepMonth {
		return nil, Values{}, fmt.Errorf("step: %q must be hour, day or month", step)
	}
	var series []Point
	var total Values
	for _, p := range hourly {
		total.Add(p.Values)
		s := bucketStart(p.Start, step)
		if n := len(series); n > 0 && series[n-1].Start.Equal(s) {
			series[n-1].Add(p.Values)
			continue
		}
		series = append(series, Point{Start: s, Values: p.Values})
	}
	return series, total, nil
}

// PeriodBounds returns the start and end of the UTC calendar month "YYYY-MM".
func PeriodBounds(period string) (time.Time, time.Time, error) {
	t, err := time.Parse("2006-01", period)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("period: %q must be YYYY-MM", period)
	}
	return t, t.AddDate(0, 1, 0), nil
}
