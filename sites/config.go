package sites

import (
	"errors"
	"fmt"
	"time"
)

// Config is the [sites] section.
type Config struct {
	// CacheBytes is the memory budget of the content cache shared by all sites
	// (file bodies and their compressed variants). Default 64 MiB.
	CacheBytes int64 `toml:"cache_bytes"`
	// MaxCachedFile is the largest file kept in memory; larger files are
	// streamed from their source on each request (no compression). Default 1 MiB.
	MaxCachedFile int64 `toml:"max_cached_file"`
	// DirRevalidate is how long a cached file of a "dir" site is served before
	// its size and modification time are checked again (one stat, not a read).
	// Default 2s; edits on disk show up within this delay.
	DirRevalidate time.Duration `toml:"dir_revalidate"`
	// StorageInterval is how often the storage of each site is measured (a
	// walk of a dir site's files) for the meter's storage_byte_seconds.
	// Default 5m.
	StorageInterval time.Duration `toml:"storage_interval"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.CacheBytes == 0 {
		c.CacheBytes = 64 << 20
	}
	if c.MaxCachedFile == 0 {
		c.MaxCachedFile = 1 << 20
	}
	if c.DirRevalidate == 0 {
		c.DirRevalidate = 2 * time.Second
	}
	if c.StorageInterval == 0 {
		c.StorageInterval = 5 * time.Minute
	}
}

// Validate names every bad key of [sites].
func (c Config) Validate() error {
	var errs []error
	if c.CacheBytes < 0 {
		errs = append(errs, errors.New("sites.cache_bytes: must not be negative"))
	}
	if c.MaxCachedFile < 0 {
		errs = append(errs, errors.New("sites.max_cached_file: must not be negative"))
	}
	if c.CacheBytes > 0 && c.MaxCachedFile > c.CacheBytes {
		errs = append(errs, fmt.Errorf("sites.max_cached_file: %d exceeds sites.cache_bytes %d", c.MaxCachedFile, c.CacheBytes))
	}
	if c.DirRevalidate < 0 {
		errs = append(errs, errors.New("sites.dir_revalidate: must not be negative"))
	}
	if c.StorageInterval < time.Second {
		errs = append(errs, errors.New("sites.storage_interval: must be at least 1s"))
	}
	return errors.Join(errs...)
}
