package sites

import (
	"errors"
	"fmt"
	"net"
	"net/url"
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

	// PagesDomain turns on Gitea pages: {owner}.{pages_domain} serves the
	// owner's repositories. Empty: off. Requires GiteaURL.
	PagesDomain string `toml:"pages_domain"`
	// GiteaURL is the base URL of the Gitea instance, e.g.
	// "https://git.example.org".
	GiteaURL string `toml:"gitea_url"`
	// GiteaToken is an access token with read access to the repositories
	// served ("env:NAME" or "file:PATH" keep it out of the file). Empty: public
	// repositories only.
	GiteaToken string `toml:"gitea_token"`
	// GiteaWebhookSecret verifies Gitea push webhooks sent to POST
	// /hooks/gitea on the admin listener ("env:NAME" or "file:PATH" keep it
	// out of the file). Empty: the route refuses every call, and freshness
	// relies on Revalidate.
	GiteaWebhookSecret string `toml:"gitea_webhook_secret"`
	// DNSResolver is the DNS server (host:port) asked to prove the custom
	// domains that repositories declare in .domains. Empty: the system's.
	DNSResolver string `toml:"dns_resolver"`
	// DNSCache is how long a DNS answer is trusted, so an unproven domain is
	// asked again after it. Default 5m.
	DNSCache time.Duration `toml:"dns_cache"`
	// PagesBranch is the branch a repository publishes. Default "pages".
	PagesBranch string `toml:"pages_branch"`
	// Revalidate is how often a repository's branch head is checked again
	// without a webhook; a push webhook makes new content visible at once.
	// Visitors never wait for the check: it runs in the background while the
	// known commit keeps being served. Default 60s.
	Revalidate time.Duration `toml:"revalidate"`
	// GiteaTimeout bounds one Gitea call; an uncached page whose fetch fails
	// or times out gets 502 within it. Such a failure opens the circuit
	// breaker: until Gitea answers again (a background probe every second)
	// uncached pages get 503 with Retry-After at once, without waiting.
	// Default 10s.
	GiteaTimeout time.Duration `toml:"gitea_timeout"`
	// NegativeTTL is how long "no such owner, repository, branch or file" is
	// remembered, so crawlers cannot turn every request into a Gitea call.
	// After it the answer is checked again in the background while the
	// remembered one keeps being served. Default 30s.
	NegativeTTL time.Duration `toml:"negative_ttl"`
	// OwnerLookupRate bounds the Gitea look-ups of owners not seen before
	// ({owner}.{pages_domain} hosts), per second across all owners, after a
	// burst of as many: a crawler inventing owners costs Gitea at most this
	// many calls a second, and the process as many remembered answers (about
	// 100 bytes each, for negative_ttl). Past it such a host is answered 503
	// with Retry-After: 1. Owners already known, and those an org in the
	// registry pays for, are not limited. Default 20; a negative value
	// removes the limit.
	OwnerLookupRate int `toml:"owner_lookup_rate"`
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
	if c.PagesBranch == "" {
		c.PagesBranch = "pages"
	}
	if c.Revalidate == 0 {
		c.Revalidate = 60 * time.Second
	}
	if c.GiteaTimeout == 0 {
		c.GiteaTimeout = 10 * time.Second
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = 30 * time.Second
	}
	if c.DNSCache == 0 {
		c.DNSCache = 5 * time.Minute
	}
	if c.OwnerLookupRate == 0 {
		c.OwnerLookupRate = 20
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
	if c.PagesDomain != "" {
		if _, err := NormalizeDomain(c.PagesDomain); err != nil {
			errs = append(errs, fmt.Errorf("sites.pages_domain: %v", err))
		}
		if c.GiteaURL == "" {
			errs = append(errs, errors.New("sites.gitea_url: required when sites.pages_domain is set"))
		}
	}
	if c.GiteaURL != "" {
		if u, err := url.Parse(c.GiteaURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("sites.gitea_url: %q must be an http(s) URL", c.GiteaURL))
		}
	}
	if !validBranch(c.PagesBranch) {
		errs = append(errs, fmt.Errorf("sites.pages_branch: %q is not a valid branch name", c.PagesBranch))
	}
	if c.DNSResolver != "" {
		if _, _, err := net.SplitHostPort(c.DNSResolver); err != nil {
			errs = append(errs, fmt.Errorf("sites.dns_resolver: %q is not host:port", c.DNSResolver))
		}
	}
	for key, d := range map[string]time.Duration{"revalidate": c.Revalidate, "gitea_timeout": c.GiteaTimeout, "negative_ttl": c.NegativeTTL, "dns_cache": c.DNSCache} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("sites.%s: must not be negative", key))
		}
	}
	return errors.Join(errs...)
}
