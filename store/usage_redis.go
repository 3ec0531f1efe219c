package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tollgate-edge/tollgate/meter"
)

// RedisUsage stores usage in Redis (standalone, Sentinel failover or Cluster)
// for a fleet of nodes: the meter's sink and the usage queries' reader. It is
// safe for concurrent use.
//
// # Key schema
//
// Billing jobs may read these keys directly (the admin API's GET /v1/usage
// answers every question they answer, per site included): renaming a key or
// a field is a breaking change. ORG and SITE are sites ids (1-63 of a-z, 0-9 and '-').
// Every key of one org carries the hash tag {ORG}, so in Redis Cluster they
// all live in one slot and one Lua script per org updates them atomically.
//
//	tg:usage:{ORG}:h:YYYYMMDDHH          hash  the org's hour bucket (UTC)           TTL Retention
//	tg:usage:{ORG}:s:SITE:h:YYYYMMDDHH   hash  one site's hour bucket                TTL Retention
//	tg:usage:{ORG}:p:YYYY-MM             hash  the org's totals of a billing period  TTL 2×Retention
//	tg:usage:{ORG}:p:YYYY-MM:sites       set   the sites with usage in the period    TTL 2×Retention
//	tg:usage:{ORG}:applied               hash  field NODE -> last applied Seq        TTL 2×Retention
//	tg:usage:period:YYYY-MM:orgs         zset  orgs with usage in the period         TTL 2×Retention
//
// The usage hashes have the fields egress_bytes, requests, ingress_bytes and
// storage_byte_seconds: decimal int64 as HINCRBY writes them; an absent field
// means 0, and a bucket that exists had usage (as in the bbolt store) even if
// all its fields are 0. Applied Seqs are uint64 written as 20 zero-padded
// decimal digits. TTLs are set again on every write, so a key lives its TTL
// after its last write. The period index (all scores 0, members are org ids)
// is the only key outside the org's slot: page through it with ZRANGE BYLEX;
// an org may be listed in it a moment before its period hash exists. The
// period's site set lists every site with a site hour bucket in the period
// (written with it, by the same script), so per-site queries know which
// site keys to read without SCAN; site hours flushed by versions that
// did not write the set are not in it.
type RedisUsage struct {
	c         redis.UniversalClient
	retention time.Duration
}

var (
	_ meter.Sink   = (*RedisUsage)(nil)
	_ meter.Reader = (*RedisUsage)(nil)
)

// RedisUsageOptions tune the Redis usage store.
type RedisUsageOptions struct {
	// Retention is the TTL of hourly buckets; period totals, the period index
	// and the applied Seqs live 2×Retention. meter.hourly_retention; default
	// (when 0) 400 days.
	Retention time.Duration
}

// NewRedisUsage uses c for usage. The caller owns c and closes it.
func NewRedisUsage(c RedisClient, opts RedisUsageOptions) *RedisUsage {
	if opts.Retention <= 0 {
		opts.Retention = 400 * 24 * time.Hour
	}
	return &RedisUsage{c: c, retention: opts.Retention}
}

// maxHourlyRange bounds one Hourly query (one HGETALL per hour).
const maxHourlyRange = 400 * 24 * time.Hour

// indexChunk is how many org ids one ZADD of the period index carries.
const indexChunk = 1000

// Field names of the usage hashes, in the order of valueArgs.
var usageFields = [4]string{"egress_bytes", "requests", "ingress_bytes", "storage_byte_seconds"}

func orgPrefix(org string) string        { return "tg:usage:{" + org + "}:" }
func orgHourKey(org, hour string) string { return orgPrefix(org) + "h:" + hour }
func siteHourKey(org, site, hour string) string {
	return orgPrefix(org) + "s:" + site + ":h:" + hour
}
func periodKey(org, period string) string { return orgPrefix(org) + "p:" + period }
func periodSitesKey(org, period string) string {
	return orgPrefix(org) + "p:" + period + ":sites"
}
func appliedKey(org string) string        { return orgPrefix(org) + "applied" }
func periodIndexKey(period string) string { return "tg:usage:period:" + period + ":orgs" }

// usageScript applies one org's deltas of a batch unless this node already
// applied that Seq or a later one for the org.
//
//	KEYS[1] applied, KEYS[2] org hour, KEYS[3] period, KEYS[4] period's sites,
//	KEYS[5..] site hours
//	ARGV[1] node, ARGV[2] Seq (20 digits), ARGV[3] hour TTL (s), ARGV[4] long TTL (s),
//	then 4 values (usageFields order) for each of KEYS[2], KEYS[3],
//	then for each site hour key its site id and 4 values
//
// Seqs are uint64 (nanosecond clocks, ~1.8e19 max) and Lua numbers are
// doubles, exact only to 2^53: Seqs are compared as zero-padded 20-digit
// strings, in two 10-digit halves that are exact as numbers (plain string
// comparison in Redis' Lua goes through strcoll and the locale).
//
// Returns 1 when applied, 0 when skipped.
var usageScript = redis.NewScript(`
local function pad(s) return string.rep('0', 20 - #s) .. s end
local function newer(a, b)
  local ah, bh = tonumber(string.sub(a, 1, 10)), tonumber(string.sub(b, 1, 10))
  if ah ~= bh then return ah > bh end
  return tonumber(string.sub(a, 11)) > tonumber(string.sub(b, 11))
end
local last = redis.call('HGET', KEYS[1], ARGV[1])
if last and not newer(ARGV[2], pad(last)) then return 0 end
local fields = {'egress_bytes', 'requests', 'ingress_bytes', 'storage_byte_seconds'}
local function add(key, base, ttl)
  local wrote = false
  for f = 1, 4 do
    local v = ARGV[base + f]
    if v ~= '0' then
      redis.call('HINCRBY', key, fields[f], v)
      wrote = true
    end
  end
  if not wrote then redis.call('HINCRBY', key, 'requests', 0) end
  redis.call('EXPIRE', key, ttl)
end
add(KEYS[2], 4, ARGV[3])
add(KEYS[3], 8, ARGV[4])
for i = 5, #KEYS do
  local base = 12 + (i - 5) * 5
  redis.call('SADD', KEYS[4], ARGV[base + 1])
  add(KEYS[i], base + 1, ARGV[3])
end
redis.call('EXPIRE', KEYS[4], ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
`)

// orgCall is one org's script invocation.
type orgCall struct {
	org  string
	keys []string
	args []any
}

func valueArgs(args []any, v meter.Values) []any {
	for _, n := range [4]int64{v.EgressBytes, v.Requests, v.IngressBytes, v.StorageByteSeconds} {
		args = append(args, strconv.FormatInt(n, 10))
	}
	return args
}

func ttlSeconds(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// Apply adds a batch's deltas: one script per org (skipped by the script
// when this node already applied that Seq or a later one for the org) and the
// period index, all in one pipeline, so a flush is one round trip (one
// pipeline per shard in Cluster, sent concurrently). On error some orgs may
// have been applied; sending the same batch again applies exactly the rest.
// When only some shards failed, the error is a *meter.NotAppliedError naming the
// orgs to send again, so orgs on healthy shards keep flushing.
func (r *RedisUsage) Apply(ctx context.Context, b *meter.Batch) error {
	if len(b.Deltas) == 0 {
		return nil
	}
	hour, period := hourKey(b.Time), meter.Period(b.Time)
	seq := fmt.Sprintf("%020d", b.Seq)
	hourTTL, longTTL := ttlSeconds(r.retention), ttlSeconds(2*r.retention)

	// Group by org, keeping the batch order (sorted by the meter).
	var calls []*orgCall
	byOrg := map[string]*orgCall{}
	totals := map[string]*meter.Values{}
	for _, d := range b.Deltas {
		c := byOrg[d.Org]
		if c == nil {
			c = &orgCall{org: d.Org, keys: []string{appliedKey(d.Org), orgHourKey(d.Org, hour), periodKey(d.Org, period), periodSitesKey(d.Org, period)}}
			byOrg[d.Org] = c
			totals[d.Org] = new(meter.Values)
			calls = append(calls, c)
		}
		c.keys = append(c.keys, siteHourKey(d.Org, d.Site, hour))
		c.args = valueArgs(append(c.args, d.Site), d.Values) // site id and values; the org's go in front below
		totals[d.Org].Add(d.Values)
	}
	for _, c := range calls {
		args := make([]any, 0, 4+8+len(c.args))
		args = append(args, b.Node, seq, hourTTL, longTTL)
		args = valueArgs(args, *totals[c.org]) // org hour
		args = valueArgs(args, *totals[c.org]) // period
		c.args = append(args, c.args...)
	}

	res, err := r.run(ctx, calls, func(p redis.Pipeliner) {
		idx := periodIndexKey(period)
		for i := 0; i < len(calls); i += indexChunk {
			members := make([]redis.Z, 0, min(indexChunk, len(calls)-i))
			for _, c := range calls[i:min(i+indexChunk, len(calls))] {
				members = append(members, redis.Z{Member: c.org})
			}
			p.ZAdd(ctx, idx, members...)
		}
		p.Expire(ctx, idx, 2*r.retention)
	})
	if err == nil && len(res.noScript) > 0 {
		// The script cache was empty (a restarted or failed-over Redis):
		// load it (on every primary in Cluster) and run the missed orgs again.
		if err = usageScript.Load(ctx, r.c).Err(); err == nil {
			var again runResult
			again, err = r.run(ctx, res.noScript, nil)
			res.failed, res.firstErr = append(res.failed, again.failed...), cmp.Or(res.firstErr, again.firstErr)
			if err == nil && len(again.noScript) > 0 {
				err = redis.ErrNoScript
			}
		}
	}
	if err == nil && (len(res.failed) > 0 || res.indexErr != nil) {
		e := &meter.NotAppliedError{Err: cmp.Or(res.firstErr, res.indexErr)}
		for _, c := range res.failed {
			e.Blocked = append(e.Blocked, c.org)
		}
		e.Retry = e.Blocked
		if res.indexErr != nil {
			// Applied, but not listed in the period index yet: send the
			// batch again (the scripts skip), without holding later ones.
			e.Retry = nil
			for _, c := range calls {
				e.Retry = append(e.Retry, c.org)
			}
		}
		if len(e.Retry) < len(calls) || len(e.Blocked) < len(calls) {
			err = e
		} else {
			err = e.Err // nothing known applied
		}
	}
	if err != nil {
		return fmt.Errorf("store: redis usage: applying batch %d of node %s: %w", b.Seq, b.Node, err)
	}
	return nil
}

// runResult sorts the outcome of one pipeline of org scripts.
type runResult struct {
	noScript []*orgCall // failed only because the script was not cached
	failed   []*orgCall // failed otherwise: maybe not applied
	firstErr error      // the first error of failed
	indexErr error      // the first error of the commands extra queued
}

// run sends the calls with EVALSHA, after the commands extra queues, in one
// pipeline (split per shard in Cluster). It sorts the calls that failed; the
// error is for a pipeline that failed before any command ran. (Script.Run
// cannot fall back to EVAL inside a pipeline: the NOSCRIPT error is only
// known after Exec.)
func (r *RedisUsage) run(ctx context.Context, calls []*orgCall, extra func(redis.Pipeliner)) (runResult, error) {
	var res runResult
	cmds := make([]*redis.Cmd, len(calls))
	all, err := r.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		if extra != nil {
			extra(p)
		}
		for i, c := range calls {
			cmds[i] = usageScript.EvalSha(ctx, p, c.keys, c.args...)
		}
		return nil
	})
	if err == nil {
		return res, nil
	}
	if len(all) < len(calls) {
		return res, err // the pipeline failed before any command was queued
	}
	for _, cmd := range all[:len(all)-len(calls)] {
		if e := cmd.Err(); e != nil && res.indexErr == nil {
			res.indexErr = e
		}
	}
	for i, cmd := range cmds {
		switch e := cmd.Err(); {
		case e == nil:
		case errors.Is(e, redis.ErrNoScript) || redis.HasErrorPrefix(e, "NOSCRIPT"):
			res.noScript = append(res.noScript, calls[i])
		default:
			res.failed = append(res.failed, calls[i])
			res.firstErr = cmp.Or(res.firstErr, e)
		}
	}
	if len(res.noScript) == 0 && len(res.failed) == 0 && res.indexErr == nil {
		return res, err // the pipeline failed before any command ran
	}
	return res, nil
}
