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
// atomically), plus change notification.
//
// Key schema (one hash slot, so MULTI works on Redis Cluster too):
//
//	{tollgate:reg}:b:<bucket>  hash: key → JSON record
//	{tollgate:reg}:version     integer, incremented by every Apply
//	{tollgate:reg}:mark:NS:ID  string with a TTL (Mark): processed Stripe event ids
//	tollgate:reg:changed       pub/sub channel; every Apply publishes the new version
type RedisKV struct {
	rc  redis.UniversalClient
	log *slog.Logger
}

const (
	kvPrefix  = "{tollgate:reg}:"
	kvVersion = kvPrefix + "version"
	// KVChannel is where every Apply publishes the new version.
	KVChannel = "tollgate:reg:changed"
)

// NewRedisKV returns the registry store on rc.
func NewRedisKV(rc RedisClient, log *slog.Logger) *RedisKV {
	if log == nil {
		log = slog.Default()
	}
	return &RedisKV{rc: rc, log: log}
}

// Scan calls fn for every key of bucket in key order.
func (s *RedisKV) Scan(ctx context.Context, bucket string, fn func(key, value []byte) error) error {
	m, err := s.rc.HGetAll(ctx, kvPrefix+"b:"+bucket).Result()
	if err != nil {
		return fmt.Errorf("store: redis scan %s: %w", bucket, err)
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

// Apply writes every op in one MULTI/EXEC (all or nothing), bumps the
// version and publishes it. A write that meets a failover (IsFailover) is
// tried once more as soon as the registry's master answers again, within
// FailoverWait and ctx: the transaction only sets and deletes fields, so
// running it twice (when the first EXEC ran but its reply was lost) leaves
// the same records and one more version bump.
func (s *RedisKV) Apply(ctx context.Context, ops ...Op) error {
	if len(ops) == 0 {
		return nil
	}
	err := s.apply(ctx, ops)
	if IsFailover(err) && s.awaitMaster(ctx) {
		s.log.Warn("registry write met a redis failover; trying it once more", slog.Any("err", err))
		err = s.apply(ctx, ops)
	}
	if err != nil {
		return fmt.Errorf("store: redis apply: %w", err)
	}
	// Outside the transaction: a lost publish is healed by Watch's
	// periodic version check.
	if v, err := s.rc.Get(ctx, kvVersion).Result(); err == nil {
		s.rc.Publish(ctx, KVChannel, v)
	}
	return nil
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

func (s *RedisKV) apply(ctx context.Context, ops []Op) error {
	_, err := s.rc.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, op := range ops {
			key := kvPrefix + "b:" + op.Bucket
			if op.Value == nil {
				p.HDel(ctx, key, op.Key)
			} else {
				p.HSet(ctx, key, op.Key, op.Value)
			}
		}
		p.Incr(ctx, kvVersion)
		return nil
	})
	return err
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

// Watch calls changed whenever another write may have happened: once at
// start, on every published version, and when a check every reconcile finds
// the version moved (a message missed while disconnected). It returns when
// ctx ends.
func (s *RedisKV) Watch(ctx context.Context, reconcile time.Duration, changed func()) {
	sub := s.rc.Subscribe(ctx, KVChannel)
	defer sub.Close()
	msgs := sub.Channel(redis.WithChannelHealthCheckInterval(10 * time.Second))
	tick := time.NewTicker(reconcile)
	defer tick.Stop()
	var last int64 = -1
	check := func() {
		v, err := s.Version(ctx)
		if err != nil {
			return // Redis down: the snapshot keeps serving
		}
		if v != last {
			last = v
			changed()
		}
	}
	check()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-msgs:
			if !ok {
				return
			}
			check()
		case <-tick.C:
			check()
		}
	}
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
