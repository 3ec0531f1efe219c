package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisKV is the registry's store on Redis, shared by the nodes of a
// cluster: the same two operations as Bolt (scan a bucket, apply a batch
// atomically), plus a change log and change notification.
//
// Key schema (one hash slot, so the apply script runs on Redis Cluster too):
//
//	{tollgate:reg}:b:<bucket>  hash: key → JSON record
//	{tollgate:reg}:version     integer, incremented by every Apply
//	{tollgate:reg}:log         stream: every Apply's changes, id "<version>-0" (rediskv_log.go)
//	{tollgate:reg}:mark:NS:ID  string with a TTL (Mark): processed Stripe event ids
type RedisKV struct {
	rc  redis.UniversalClient
	log *slog.Logger
}

const (
	kvPrefix  = "{tollgate:reg}:"
	kvVersion = kvPrefix + "version"
)

// NewRedisKV returns the registry store on rc.
func NewRedisKV(rc RedisClient, log *slog.Logger) *RedisKV {
	if log == nil {
		log = slog.Default()
	}
	return &RedisKV{rc: rc, log: log}
}

// scanPage is how many fields one HSCAN of a bucket asks for: a bucket of
// a million records is a hundred replies of a few MB, each answered
// without holding Redis up for the others (one HGETALL of it was one
// 170 MB reply, which stalled Redis for everyone and outlasted the
// client's read timeout on a busy one).
const scanPage = 10_000

// Scan calls fn for every key of bucket in key order. It reads the bucket
// in pages (HSCAN): a record written meanwhile may be read in its old or
// new state, or not at all when created or deleted meanwhile, which is
// what the registry expects of a load, as every write after the version
// it read first comes again from the change log.
func (s *RedisKV) Scan(ctx context.Context, bucket string, fn func(key, value []byte) error) error {
	key := kvPrefix + "b:" + bucket
	m := map[string]string{}
	for cursor := uint64(0); ; {
		page, next, err := s.rc.HScan(ctx, key, cursor, "*", scanPage).Result()
		if err != nil {
			return fmt.Errorf("store: redis scan %s: %w", bucket, err)
		}
		for i := 0; i+1 < len(page); i += 2 {
			m[page[i]] = page[i+1] // a field HSCAN returns twice is the same record
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := fn([]byte(k), []byte(m[k])); err != nil {
			return err
		}
	}
	return nil
}

// FailoverWait bounds how long Apply waits for a new master after a write
// met a failover (IsFailover) before it tries the write once more. It covers
// a Sentinel or Cluster promotion (a few seconds with the usual
// down-after-milliseconds / cluster-node-timeout of 5 s); a Redis that is
// simply down fails the write after it.
const FailoverWait = 15 * time.Second

// Apply writes every op atomically (all or nothing), bumps the version,
// and logs the change (rediskv_log.go), where the other nodes read it.
func (s *RedisKV) Apply(ctx context.Context, ops ...Op) error {
	_, err := s.ApplyVersion(ctx, ops...)
	return err
}

// ApplyVersion is Apply, returning the version the write produced (0 when
// there was nothing to write). A write that meets a failover (IsFailover)
// is tried once more as soon as the registry's master answers again,
// within FailoverWait and ctx: the script only sets and deletes fields, so
// running it twice (when the first run happened but its reply was lost)
// leaves the same records, one more version and one more log entry.
func (s *RedisKV) ApplyVersion(ctx context.Context, ops ...Op) (int64, error) {
	if len(ops) == 0 {
		return 0, nil
	}
	v, err := s.applyLogged(ctx, ops)
	if IsFailover(err) && s.awaitMaster(ctx) {
		s.log.Warn("registry write met a redis failover; trying it once more", slog.Any("err", err))
		v, err = s.applyLogged(ctx, ops)
	}
	if err != nil {
		return 0, fmt.Errorf("store: redis apply: %w", err)
	}
	return v, nil
}

// awaitMaster polls the master of the registry's slot until it takes a
// write (false after FailoverWait or when ctx ends).
func (s *RedisKV) awaitMaster(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, FailoverWait)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		// A write (refused by a replica with READONLY, and while the
		// cluster is down) that changes nothing: the version has no TTL.
		err := s.rc.Persist(ctx, kvVersion).Err()
		if err == nil || !IsFailover(err) {
			return err == nil
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// Version is the number of Applies so far (0 on an empty Redis).
func (s *RedisKV) Version(ctx context.Context) (int64, error) {
	v, err := s.rc.Get(ctx, kvVersion).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, err
}

// Ping reports whether Redis answers: in cluster mode, every shard's master
// and the registry's slot (PingRedis).
func (s *RedisKV) Ping(ctx context.Context) error { return PingRedis(ctx, s.rc) }

// Count returns how many records bucket holds.
func (s *RedisKV) Count(ctx context.Context, bucket string) (int64, error) {
	return s.rc.HLen(ctx, kvPrefix+"b:"+bucket).Result()
}

// Marked reports whether Mark recorded id in namespace ns (and it has not
// expired): {tollgate:reg}:mark:NS:ID.
func (s *RedisKV) Marked(ctx context.Context, ns, id string) (bool, error) {
	n, err := s.rc.Exists(ctx, kvPrefix+"mark:"+ns+":"+id).Result()
	return n > 0, err
}

// Mark records id in namespace ns with value, for ttl (Stripe event ids).
func (s *RedisKV) Mark(ctx context.Context, ns, id string, value []byte, ttl time.Duration) error {
	return s.rc.Set(ctx, kvPrefix+"mark:"+ns+":"+id, value, ttl).Err()
}

// Get returns the value of key in bucket, nil when either is missing (the
// org tokens read one record per request with it).
func (s *RedisKV) Get(ctx context.Context, bucket, key string) ([]byte, error) {
	b, err := s.rc.HGet(ctx, kvPrefix+"b:"+bucket, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store: redis get %s/%s: %w", bucket, key, err)
	}
	return b, nil
}
