package console

import (
	"encoding/csv"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tollgate-edge/tollgate/meter"
)

// Chart geometry, in SVG user units.
const (
	chartW, chartH   = 720, 220
	chartLeft        = 8
	chartTop         = 12
	chartBottom      = 24 // room for the day labels
	chartPlotH       = chartH - chartTop - chartBottom
	chartBarGapRatio = 0.2
)

// day is one day of a month's usage.
type day struct {
	Start time.Time
	meter.Values
}

// bar is one day's bar of the chart.
type bar struct {
	X, Y, W, H float64
	Label      string // its <title>
	Tick       string // the day number under every fifth bar, else ""
	TickX      float64
}

// chart is the month's egress per day as an inline SVG.
type chart struct {
	W, H, BaseY   float64
	Title, Desc   string
	Bars          []bar
	Max           string
	HasUsage      bool
	Width, Height int
}

// daysOf sums hourly points into every day of [from, to), days without
// usage included.
func daysOf(hourly []meter.Point, from, to time.Time) []day {
	var days []day
	index := map[time.Time]int{}
	for d := from; d.Before(to); d = d.AddDate(0, 0, 1) {
		index[d] = len(days)
		days = append(days, day{Start: d})
	}
	for _, p := range hourly {
		start := p.Start.UTC().Truncate(24 * time.Hour)
		if i, ok := index[start]; ok {
			days[i].Add(p.Values)
		}
	}
	return days
}

// chartOf draws days' egress: one bar per day, scaled to the largest.
func chartOf(period string, days []day) chart {
	c := chart{W: chartW, H: chartH, BaseY: chartH - chartBottom, Width: chartW, Height: chartH,
		Title: "Egress per day, " + period}
	var peak, total int64
	for _, d := range days {
		peak = max(peak, d.EgressBytes)
		total += d.EgressBytes
	}
	c.HasUsage, c.Max = peak > 0, humanBytes(peak)
	c.Desc = fmt.Sprintf("%d bars, one per day of %s. Total egress %s; the busiest day %s.", len(days), period, humanBytes(total), humanBytes(peak))
	slot := float64(chartW-chartLeft) / float64(max(len(days), 1))
	for i, d := range days {
		h := 0.0
		if peak > 0 {
			h = float64(chartPlotH) * float64(d.EgressBytes) / float64(peak)
		}
		b := bar{X: chartLeft + float64(i)*slot + slot*chartBarGapRatio/2, W: slot * (1 - chartBarGapRatio), H: h,
			Y: c.BaseY - h, TickX: chartLeft + float64(i)*slot + slot/2,
			Label: fmt.Sprintf("%s: %s egress, %d requests", d.Start.Format("2006-01-02"), humanBytes(d.EgressBytes), d.Requests)}
		if n := d.Start.Day(); n == 1 || n%5 == 0 {
			b.Tick = strconv.Itoa(n)
		}
		c.Bars = append(c.Bars, b)
	}
	return c
}

// usageMonth is the month r asks for (monthOf), when usage is metered here.
func (c *Console) usageMonth(r *http.Request) (period string, from, to time.Time, err error) {
	if c.opts.Usage == nil {
		return "", from, to, &pageError{status: http.StatusNotFound, msg: "Usage is not metered here."}
	}
	return c.monthOf(r)
}

// usage: the month's chart, the per-day and per-site tables, and the CSV
// links.
func (c *Console) usage(w http.ResponseWriter, r *http.Request, s *session) error {
	period, from, to, err := c.usageMonth(r)
	if err != nil {
		return err
	}
	org := s.tenant.Org
	hourly, err := c.opts.Usage.Hourly(r.Context(), org, from, to)
	if err != nil {
		return err
	}
	bySite, err := c.opts.Usage.SiteTotals(r.Context(), org, from, to)
	if err != nil {
		return err
	}
	days := daysOf(hourly, from, to)
	var total meter.Values
	for _, d := range days {
		total.Add(d.Values)
	}
	c.render(w, s, http.StatusOK, "usage", "Usage", map[string]any{
		"Period": period, "Prev": meter.Period(from.AddDate(0, -1, 0)), "Next": meter.Period(to),
		"Chart": chartOf(period, days), "Days": days, "Sites": siteBarsOf(bySite), "Total": total})
	return nil
}

// siteBar is a site's row of the per-site table: its totals and the width
// of its bar, in percent of the site with the most egress.
type siteBar struct {
	meter.SiteTotal
	Percent int
}

func siteBarsOf(totals []meter.SiteTotal) []siteBar {
	var peak int64
	for _, t := range totals {
		peak = max(peak, t.EgressBytes)
	}
	out := make([]siteBar, len(totals))
	for i, t := range totals {
		out[i].SiteTotal = t
		if peak > 0 {
			out[i].Percent = int(t.EgressBytes * 100 / peak)
		}
	}
	return out
}

// usageCSV downloads the month per day (default) or per site (by=site).
func (c *Console) usageCSV(w http.ResponseWriter, r *http.Request, s *session) error {
	period, from, to, err := c.usageMonth(r)
	if err != nil {
		return err
	}
	org := s.tenant.Org
	header := []string{"egress_bytes", "requests", "ingress_bytes", "storage_byte_seconds"}
	var rows [][]string
	name := fmt.Sprintf("usage-%s-%s", org, period)
	if r.URL.Query().Get("by") == "site" {
		totals, err := c.opts.Usage.SiteTotals(r.Context(), org, from, to)
		if err != nil {
			return err
		}
		rows = append(rows, append([]string{"site"}, header...))
		for _, t := range totals {
			rows = append(rows, append([]string{t.Site}, cells(t.Values)...))
		}
		name += "-sites"
	} else {
		hourly, err := c.opts.Usage.Hourly(r.Context(), org, from, to)
		if err != nil {
			return err
		}
		rows = append(rows, append([]string{"day"}, header...))
		for _, d := range daysOf(hourly, from, to) {
			rows = append(rows, append([]string{d.Start.Format("2006-01-02")}, cells(d.Values)...))
		}
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.csv"`)
	_ = csv.NewWriter(w).WriteAll(rows) // the client went away: nothing to do
	return nil
}

func cells(v meter.Values) []string {
	return []string{strconv.FormatInt(v.EgressBytes, 10), strconv.FormatInt(v.Requests, 10),
		strconv.FormatInt(v.IngressBytes, 10), strconv.FormatInt(v.StorageByteSeconds, 10)}
}
