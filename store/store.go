// Package store keeps tollgate's durable state. The embedded default is one bbolt
// file; a Redis backend for clusters arrives with cluster mode and offers the same
// two operations: scan a bucket, apply a batch of writes atomically.
package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"
)

// Config is the [store] section.
type Config struct {
	// Path is the bbolt file holding the registry (and, later, counters and
	// certificates) when no Redis is configured. Its directory is created on
	// start. Default: "tollgate.db" in the working directory.
	Path string `toml:"path"`
	// OpenTimeout bounds how long Open waits for the file lock another process
	// may hold. Default: 5s.
	OpenTimeout time.Duration `toml:"open_timeout"`
	// Redis, when set, is the URL of the Redis that several nodes share:
	// redis://[user:password@]host:port[/db] or rediss:// for TLS. May be
	// given as "env:NAME" or "file:PATH" (it can hold a password). Usage
	// counters go there (and, with cluster mode, the registry and
	// certificates); the bbolt file stays as the local spool. Default: unset,
	// everything in the bbolt file.
	Redis string `toml:"redis"`
	// RedisMode says how Redis is reached: "standalone" (default), "sentinel"
	// (the URL lists sentinels: redis://[:pw@]s1:26379?addr=s2:26379&master_name=mymaster)
	// or "cluster" (the URL lists seed nodes: redis://n1:6379?addr=n2:6379).
	// Every key tollgate writes is hash-tagged so multi-key operations stay
	// in one slot.
	RedisMode string `toml:"redis_mode"`
}

// Defaults fills unset fields.
func (c *Config) Defaults() {
	if c.Path == "" {
		c.Path = "tollgate.db"
	}
	if c.OpenTimeout == 0 {
		c.OpenTimeout = 5 * time.Second
	}
	if c.RedisMode == "" {
		c.RedisMode = "standalone"
	}
}

// Validate reports every bad key of the [store] section.
func (c Config) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("store.path: must not be empty"))
	}
	if c.OpenTimeout < 0 {
		errs = append(errs, errors.New("store.open_timeout: must not be negative"))
	}
	if c.Redis != "" {
		if rc, err := NewRedis(c); err != nil {
			errs = append(errs, err)
		} else {
			rc.Close() // only parsed: clients connect lazily
		}
	}
	return errors.Join(errs...)
}

// Op is one write of a batch: Value nil deletes Key from Bucket.
type Op struct {
	Bucket string
	Key    string
	Value  []byte
}

// Put returns an Op that stores value under key.
func Put(bucket, key string, value []byte) Op { return Op{Bucket: bucket, Key: key, Value: value} }

// Delete returns an Op that removes key.
func Delete(bucket, key string) Op { return Op{Bucket: bucket, Key: key} }

// Bolt is the bbolt-backed store. It is safe for concurrent use.
type Bolt struct {
	db *bolt.DB
}

// Open opens (creating if needed) the bbolt file named by cfg.Path.
func Open(cfg Config) (*Bolt, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if dir := filepath.Dir(cfg.Path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{Timeout: cfg.OpenTimeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("store: %s is locked by another process (is tollgate already running?)", cfg.Path)
		}
		return nil, fmt.Errorf("store: open %s: %w", cfg.Path, err)
	}
	return &Bolt{db: db}, nil
}

// Scan calls fn for every key of bucket in key order. A missing bucket is empty.
// The slices passed to fn are only valid during the call.
func (b *Bolt) Scan(ctx context.Context, bucket string, fn func(key, value []byte) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(bucket))
		if bk == nil {
			return nil
		}
		return bk.ForEach(fn)
	})
}

// Apply writes every op in one transaction: all or nothing.
func (b *Bolt) Apply(ctx context.Context, ops ...Op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		for _, op := range ops {
			bk, err := tx.CreateBucketIfNotExists([]byte(op.Bucket))
			if err != nil {
				return fmt.Errorf("store: bucket %s: %w", op.Bucket, err)
			}
			if op.Value == nil {
				err = bk.Delete([]byte(op.Key))
			} else {
				err = bk.Put([]byte(op.Key), op.Value)
			}
			if err != nil {
				return fmt.Errorf("store: %s/%s: %w", op.Bucket, op.Key, err)
			}
		}
		return nil
	})
}

// Ping reports whether the file is open and readable.
func (b *Bolt) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.View(func(*bolt.Tx) error { return nil })
}

// Close closes the file. It is safe to call on a nil *Bolt and more than once.
func (b *Bolt) Close() error {
	if b == nil || b.db == nil {
		return nil
	}
	return b.db.Close()
}

// Update runs fn in one read-write transaction, for callers that must read
// what they write (counters, idempotency marks). fn must not keep tx.
func (b *Bolt) Update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.Update(fn)
}

// View runs fn in one read-only transaction.
func (b *Bolt) View(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.View(fn)
}

// NewRedis returns a client for cfg.Redis (which must be set and valid).
// Commands time out after a few seconds so a stalled Redis never stalls a
// flush for long (serving never waits on Redis).
//
// It connects lazily: an unreachable Redis is found by the first command.
func NewRedis(cfg Config) (redis.UniversalClient, error) {
	const (
		dial  = 2 * time.Second
		read  = 10 * time.Second // one flush of 100k orgs is one pipeline of ~2 s
		write = 3 * time.Second
	)
	switch cfg.RedisMode {
	case "", "standalone":
		opt, err := redis.ParseURL(cfg.Redis)
		if err != nil {
			return nil, fmt.Errorf("store.redis: %w", err)
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.MaxRetries = dial, read, write, 1
		return redis.NewClient(opt), nil
	case "sentinel":
		opt, err := redis.ParseFailoverURL(cfg.Redis)
		if err != nil {
			return nil, fmt.Errorf("store.redis: %w", err)
		}
		if opt.MasterName == "" {
			return nil, errors.New("store.redis: sentinel mode needs master_name=… in the URL's query")
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.MaxRetries = dial, read, write, 1
		return redis.NewFailoverClient(opt), nil
	case "cluster":
		opt, err := redis.ParseClusterURL(cfg.Redis)
		if err != nil {
			return nil, fmt.Errorf("store.redis: %w", err)
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.MaxRetries = dial, read, write, 1
		return redis.NewClusterClient(opt), nil
	}
	return nil, fmt.Errorf("store.redis_mode: %q must be standalone, sentinel or cluster", cfg.RedisMode)
}
