package meter

import (
	"errors"
	"time"
)

// Config is the [meter] section.
type Config struct {
	// Disabled turns metering off: nothing is counted and the usage API
	// answers 503. For benchmarks and installations that bill nothing.
	// Default false.
	Disabled bool `toml:"disabled"`
	// FlushInterval is how often counted usage is written to the store (bbolt,
	// or Redis when [store] redis is set) in one batch. It is also the most a
	// kill -9 can lose. Default 1s.
	FlushInterval time.Duration `toml:"flush_interval"`
	// MaxPending is how many unflushed batches are kept in memory while the
	// store is unreachable; past it they are spilled to the local bbolt file
	// (with Redis) or, on the embedded default, the oldest are dropped and
	// counted in tollgate_meter_dropped_batches_total. Default 600.
	MaxPending int `toml:"max_pending"`
	// SpoolBytes is the disk reserved, when tollgate starts, for the spool
	// file beside the store (store.path + ".spool"): after every flush the
	// store refuses, the whole backlog is written there, so a full disk, a
	// SIGTERM or a kill -9 loses no usage counted before that flush; it is
	// sent first on the next start. Half of it holds one copy of the backlog
	// (about 110 bytes per site with usage per flush interval). Default 8 MiB.
	SpoolBytes int64 `toml:"spool_bytes"`
	// HourlyRetention is how long hourly buckets are kept in Redis (their
	// TTL). Period totals are kept twice as long. Default 400 days.
	HourlyRetention time.Duration `toml:"hourly_retention"`
	// PerOrgMetrics adds Prometheus series labelled by org (egress and
	// requests). Off by default: each org is a series.
	PerOrgMetrics bool `toml:"per_org_metrics"`
	// PerOrgMetricsMax caps how many orgs get their own series; the rest are
	// summed under org="_other". Default 1000.
	PerOrgMetricsMax int `toml:"per_org_metrics_max"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.FlushInterval == 0 {
		c.FlushInterval = time.Second
	}
	if c.MaxPending == 0 {
		c.MaxPending = 600
	}
	if c.SpoolBytes == 0 {
		c.SpoolBytes = 8 << 20
	}
	if c.HourlyRetention == 0 {
		c.HourlyRetention = 400 * 24 * time.Hour
	}
	if c.PerOrgMetricsMax == 0 {
		c.PerOrgMetricsMax = 1000
	}
}

// Validate names every bad key of [meter].
func (c Config) Validate() error {
	var errs []error
	if c.FlushInterval < 10*time.Millisecond || c.FlushInterval > time.Hour {
		errs = append(errs, errors.New("meter.flush_interval: must be between 10ms and 1h"))
	}
	if c.MaxPending < 1 {
		errs = append(errs, errors.New("meter.max_pending: must be at least 1"))
	}
	if c.SpoolBytes < 64<<10 {
		errs = append(errs, errors.New("meter.spool_bytes: must be at least 64 KiB"))
	}
	if c.HourlyRetention < 24*time.Hour {
		errs = append(errs, errors.New("meter.hourly_retention: must be at least 24h"))
	}
	if c.PerOrgMetricsMax < 0 {
		errs = append(errs, errors.New("meter.per_org_metrics_max: must not be negative"))
	}
	return errors.Join(errs...)
}
