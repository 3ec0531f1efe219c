// Package store keeps tollgate's durable state: in one bbolt file by default,
// on a shared Redis (standalone, Sentinel or Cluster) for a cluster of nodes.
// It implements the storage other packages declare in their own terms: the
// registry's sites.Store (Bolt, RedisKV: scan a bucket, apply a batch of
// writes atomically), the meter's Sink and Reader (BoltUsage, RedisUsage)
// and Spool (UsageSpool), and the outboxes' outbox.Store (Bolt).
package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"
)

// Config is the [store] section.
type Config struct {
	// Path is the bbolt file holding the registry, usage counters and
	// certificates when no Redis is configured. Its directory is created on
	// start. Default: "tollgate.db" in the working directory.
	Path string `toml:"path"`
	// OpenTimeout bounds how long Open waits for the file lock another process
	// may hold. Default: 5s.
	OpenTimeout time.Duration `toml:"open_timeout"`
	// Redis, when set, is the URL of the Redis that several nodes share:
	// redis://[user:password@]host:port[/db] or rediss:// for TLS. May be
	// given as "env:NAME" or "file:PATH" (it can hold a password). The
	// registry, account history, usage counters, certificates and locks go
	// there; the bbolt file stays, as the spool of usage while Redis is away
	// and for each node's outboxes (docs/cluster.md). Default: unset,
	// everything in the bbolt file.
	Redis string `toml:"redis"`
	// RedisMode says how Redis is reached: "standalone" (default),
	// "sentinel" or "cluster". Sentinel: the URL lists the sentinels and
	// names the master, redis://:PW@s1:26379?addr=s2:26379&addr=s3:26379&master_name=tollgate,
	// where PW is the master's password when the sentinels need none; when
	// they need one, it goes in the URL and the master's in the query:
	// redis://:SENTINEL_PW@s1:26379?addr=…&master_name=tollgate&password=MASTER_PW.
	// Cluster: the URL lists seed nodes, redis://:PW@n1:6379?addr=n2:6379;
	// the client reloads the slot map every second and after any failed
	// connection, so a promoted replica is used within about a second. A
	// registry write that meets a failover waits (up to 15 s) for the new
	// master and is tried once more. Every key tollgate writes is hash-tagged
	// so multi-key operations stay in one slot.
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
//
// It is an alias of an unnamed struct type, as the registry's sites.Change
// is: the two name one type, so *Bolt and *RedisKV implement sites.Store
// without either package importing the other.
type Op = struct {
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
	// The hashmap freelist allocates pages in O(1) (the array one scans
	// the freelist, which grows with the file: a million-site registry's
	// imports slowed batch after batch), and the freelist is rebuilt at open
	// instead of written at every commit, as etcd runs bbolt.
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{Timeout: cfg.OpenTimeout,
		FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
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

// RedisClient is a client of [store] redis (standalone, Sentinel or
// Cluster), as NewRedis makes it. A process shares one: NewRedisKV,
// NewRedisUsage and acme.NewRedisStorage take it, so the code that opens,
// passes and closes it names no Redis driver.
type RedisClient = redis.UniversalClient

// NewRedis returns a client for cfg.Redis (which must be set and valid).
// Commands time out after a few seconds so a stalled Redis never stalls a
// flush for long (serving never waits on Redis).
//
// In cluster mode the client reloads its slot map every ClusterReload and at
// once after a connection error, so it finds a replica promoted after its
// master died within about ClusterReload of the promotion (go-redis' own
// default is 60 s and a refused connection alone never reloads). In sentinel
// mode the URL's user and password are the sentinels'; the master's are the
// query's username= and password=, or, when password= is absent, the URL's
// user and password, which then go to the master only (see Config.RedisMode).
//
// It connects lazily: an unreachable Redis is found by the first command.
func NewRedis(cfg Config) (RedisClient, error) {
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
		if opt.Password == "" && opt.Username == "" && (opt.SentinelPassword != "" || opt.SentinelUsername != "") {
			// redis://:pw@sentinel?master_name=… without password=: the
			// credentials are the master's (as in the other modes), and
			// the sentinels have none.
			opt.Username, opt.Password = opt.SentinelUsername, opt.SentinelPassword
			opt.SentinelUsername, opt.SentinelPassword = "", ""
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.MaxRetries = dial, read, write, 1
		return redis.NewFailoverClient(opt), nil
	case "cluster":
		opt, err := redis.ParseClusterURL(cfg.Redis)
		if err != nil {
			return nil, fmt.Errorf("store.redis: %w", err)
		}
		// One dial per attempt (go-redis' default is 5): a refused
		// connection means a dead node, and the attempt moves on.
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout, opt.DialerRetries = dial, read, write, 1
		// Retries walk to another node after a failed one; with the reload
		// below, a retry after the promotion reaches the new master.
		opt.MaxRetries, opt.MinRetryBackoff, opt.MaxRetryBackoff = 3, 50*time.Millisecond, 500*time.Millisecond
		opt.ClusterStateReloadInterval = ClusterReload
		c := redis.NewClusterClient(opt)
		c.OnNewNode(func(node *redis.Client) { node.AddHook(reloadOnFailure{c}) })
		return c, nil
	}
	return nil, fmt.Errorf("store.redis_mode: %q must be standalone, sentinel or cluster", cfg.RedisMode)
}

// ClusterReload is how often a cluster client used at least that often asks
// a node for the slot map. A reload is one CLUSTER SLOTS to one node.
const ClusterReload = time.Second

// reloadOnFailure makes a cluster client reload its slot map when a node
// fails to answer (refused, reset, timed out) or answers that the cluster
// is down: the slots of a dead master move to its replica without the MOVED
// or READONLY reply that go-redis waits for. Reloads are asynchronous and
// go-redis runs at most one per 200 ms.
type reloadOnFailure struct{ c *redis.ClusterClient }

func (h reloadOnFailure) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h reloadOnFailure) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if IsFailover(err) {
			h.c.ReloadState(ctx)
		}
		return err
	}
}

func (h reloadOnFailure) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if IsFailover(err) {
			h.c.ReloadState(ctx)
		}
		return err
	}
}

// IsFailover reports whether err is what a Redis command meets while a
// master is lost or being replaced: no connection (refused, reset, timed out,
// closed) or a reply saying the cluster or the master is not serving writes
// yet (CLUSTERDOWN, TRYAGAIN, READONLY, MASTERDOWN, LOADING). A command that
// failed so may succeed on the new master; a reply to the command itself
// (a wrong type, a script error) or redis.Nil is not a failover.
func IsFailover(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) {
		return false
	}
	for _, p := range []string{"CLUSTERDOWN", "TRYAGAIN", "READONLY", "MASTERDOWN", "LOADING"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	var rerr redis.Error
	return !errors.As(err, &rerr) // not a reply: the connection failed
}

// PingRedis reports whether rc can serve tollgate: PING on a standalone or
// sentinel-managed master; in cluster mode a read of the registry's slot and
// PING on every master that the slot map (CLUSTER SLOTS) names, since usage
// counters are spread over all slots. The error names each shard that fails,
// the registry's too. The probes run at once, each within probeTimeout: the
// read of the registry's slot retries a dead master until its timeout, and
// the slot map read after it could already name the promoted replica, so
// that a check asked while a shard had no master would not say which. A
// cluster's answer takes at most twice probeTimeout (the slot map, then the
// pings).
func PingRedis(ctx context.Context, rc RedisClient) error {
	c, ok := rc.(*redis.ClusterClient)
	if !ok {
		return rc.Ping(ctx).Err()
	}
	registry := make(chan error, 1)
	go func() { registry <- pingRegistrySlot(ctx, c) }()
	shards := pingShards(ctx, c)
	return errors.Join(<-registry, shards)
}

// pingRegistrySlot reads the registry's slot through the cluster client, as
// the registry does, within probeTimeout. Its error names the shard the
// client sent it to.
func pingRegistrySlot(ctx context.Context, c *redis.ClusterClient) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	where := "registry slot"
	if m, err := c.MasterForKey(ctx, kvVersion); err == nil {
		where += " on shard " + m.Options().Addr
	}
	if err := c.Exists(ctx, kvVersion).Err(); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	return nil
}

// pingShards sends PING to every master the slot map names, at once, each
// within probeTimeout on a connection of its own. The errors come in the
// order of the slot map.
func pingShards(ctx context.Context, c *redis.ClusterClient) error {
	slots, err := clusterSlots(ctx, c)
	if err != nil {
		return fmt.Errorf("slot map: %w", err)
	}
	var masters []string
	for _, r := range slots {
		if len(r.Nodes) > 0 && !slices.Contains(masters, r.Nodes[0].Addr) {
			masters = append(masters, r.Nodes[0].Addr)
		}
	}
	opt := c.Options()
	errs := make([]error, len(masters))
	var wg sync.WaitGroup
	for i, addr := range masters {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, probeTimeout)
			defer cancel()
			n := redis.NewClient(&redis.Options{Addr: addr, Username: opt.Username, Password: opt.Password, TLSConfig: opt.TLSConfig,
				DialTimeout: probeTimeout, ReadTimeout: probeTimeout, MaxRetries: -1, DialerRetries: 1, PoolSize: 1})
			defer n.Close()
			if err := n.Ping(pctx).Err(); err != nil {
				errs[i] = fmt.Errorf("shard %s: %w", addr, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// clusterSlots asks every shard for the slot map at once and returns the
// first answer (CLUSTER SLOTS alone goes to one node picked round-robin,
// which may be the one that is down), within probeTimeout.
func clusterSlots(ctx context.Context, c *redis.ClusterClient) ([]redis.ClusterSlot, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	got := make(chan []redis.ClusterSlot, 1)
	done := make(chan error, 1)
	go func() {
		done <- c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
			slots, err := n.ClusterSlots(ctx).Result()
			if err == nil {
				select {
				case got <- slots:
				default:
				}
			}
			return err
		})
	}()
	select {
	case slots := <-got:
		return slots, nil
	case err := <-done:
		select {
		case slots := <-got:
			return slots, nil
		default:
		}
		if err == nil {
			err = errors.New("no shard answered")
		}
		return nil, err
	}
}

// probeTimeout bounds each readiness probe of PingRedis.
const probeTimeout = time.Second
