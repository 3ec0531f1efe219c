package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tollgate-edge/tollgate/credit"
)

// Redeemable credit codes in the cluster's Redis. A code's two keys share a
// hash tag (one slot on Redis Cluster), so Claim is one Lua script: the
// checks, the org's mark and the count happen together or not at all.
//
//	{tollgate:ccode:CODE}:rec   hash: amount, max, expires (Unix ms, 0: never), disabled (0|1), note, created
//	{tollgate:ccode:CODE}:orgs  hash: org → when it claimed the code; its length is the count
//	tollgate:ccodes             set: every code, for listing
//
// CreateCode adds the code to the set before writing its record, so a
// record is always listed; a name in the set without a record (a create
// that stopped between the two) is skipped.
const redisCodeIndex = "tollgate:ccodes"

var _ credit.CodeStore = (*RedisCredit)(nil)

func codeKeys(code string) []string {
	p := "{tollgate:ccode:" + code + "}:"
	return []string{p + "rec", p + "orgs"}
}

var codeCreate = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'amount', ARGV[1], 'max', ARGV[2], 'expires', ARGV[3], 'disabled', '0', 'note', ARGV[4], 'created', ARGV[5])
return 1
`)

// codeClaim: KEYS rec, orgs; ARGV org, now (Unix ms), now (RFC 3339).
var codeClaim = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 'again' end
local f = redis.call('HMGET', KEYS[1], 'max', 'expires', 'disabled')
if f[3] == '1' then return 'disabled' end
local exp = tonumber(f[2])
if exp > 0 and tonumber(ARGV[2]) >= exp then return 'expired' end
local max = tonumber(f[1])
if max > 0 and redis.call('HLEN', KEYS[2]) >= max then return 'used_up' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 'claimed'
`)

var codeDisable = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'disabled', '1')
return 1
`)

// CreateCode implements credit.CodeStore.
func (c *RedisCredit) CreateCode(ctx context.Context, code credit.Code) error {
	if err := c.rc.SAdd(ctx, redisCodeIndex, code.Code).Err(); err != nil {
		return fmt.Errorf("store: redis credit code %s: %w", code.Code, err)
	}
	var exp int64
	if code.ExpiresAt != nil {
		exp = code.ExpiresAt.UnixMilli()
	}
	ok, err := codeCreate.Run(ctx, c.rc, codeKeys(code.Code), code.Amount, code.MaxRedemptions, exp, code.Note,
		code.CreatedAt.UTC().Format(time.RFC3339Nano)).Int()
	switch {
	case err != nil:
		return fmt.Errorf("store: redis credit code %s: %w", code.Code, err)
	case ok == 0:
		return fmt.Errorf("%w: %s", credit.ErrCodeExists, code.Code)
	}
	return nil
}

// Code implements credit.CodeStore.
func (c *RedisCredit) Code(ctx context.Context, code string) (credit.Code, error) {
	keys := codeKeys(code)
	pipe := c.rc.Pipeline()
	rec := pipe.HGetAll(ctx, keys[0])
	n := pipe.HLen(ctx, keys[1])
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return credit.Code{}, fmt.Errorf("store: redis credit code %s: %w", code, err)
	}
	f := rec.Val()
	if len(f) == 0 {
		return credit.Code{}, fmt.Errorf("%w: %s", credit.ErrCodeNotFound, code)
	}
	out := credit.Code{Code: code, Redeemed: n.Val(), Disabled: f["disabled"] == "1", Note: f["note"]}
	var err error
	if out.Amount, err = strconv.ParseInt(f["amount"], 10, 64); err == nil {
		out.MaxRedemptions, err = strconv.ParseInt(f["max"], 10, 64)
	}
	var exp int64
	if err == nil {
		exp, err = strconv.ParseInt(f["expires"], 10, 64)
	}
	if err == nil {
		out.CreatedAt, err = time.Parse(time.RFC3339Nano, f["created"])
	}
	if err != nil {
		return credit.Code{}, fmt.Errorf("store: redis credit code %s: %w", code, err)
	}
	if exp > 0 {
		at := time.UnixMilli(exp).UTC()
		out.ExpiresAt = &at
	}
	return out, nil
}

// Codes implements credit.CodeStore.
func (c *RedisCredit) Codes(ctx context.Context) ([]credit.Code, error) {
	names, err := c.rc.SMembers(ctx, redisCodeIndex).Result()
	if err != nil {
		return nil, fmt.Errorf("store: redis credit codes: %w", err)
	}
	slices.Sort(names)
	out := make([]credit.Code, 0, len(names))
	for _, name := range names {
		code, err := c.Code(ctx, name)
		if errors.Is(err, credit.ErrCodeNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, code)
	}
	return out, nil
}

// DisableCode implements credit.CodeStore.
func (c *RedisCredit) DisableCode(ctx context.Context, code string) (credit.Code, error) {
	ok, err := codeDisable.Run(ctx, c.rc, codeKeys(code)).Int()
	switch {
	case err != nil:
		return credit.Code{}, fmt.Errorf("store: redis credit code %s: %w", code, err)
	case ok == 0:
		return credit.Code{}, fmt.Errorf("%w: %s", credit.ErrCodeNotFound, code)
	}
	return c.Code(ctx, code)
}

// Claim implements credit.CodeStore.
func (c *RedisCredit) Claim(ctx context.Context, code, org string, now time.Time) (credit.Code, bool, error) {
	res, err := codeClaim.Run(ctx, c.rc, codeKeys(code), org, now.UnixMilli(), now.UTC().Format(time.RFC3339Nano)).Text()
	if err != nil {
		return credit.Code{}, false, fmt.Errorf("store: redis credit code %s: %w", code, err)
	}
	var refused error
	switch res {
	case "claimed", "again":
	case "missing":
		refused = credit.ErrCodeNotFound
	case "disabled":
		refused = credit.ErrCodeDisabled
	case "expired":
		refused = credit.ErrCodeExpired
	case "used_up":
		refused = credit.ErrCodeUsedUp
	default:
		return credit.Code{}, false, fmt.Errorf("store: redis credit code %s: unexpected reply %q", code, res)
	}
	if refused != nil {
		return credit.Code{}, false, fmt.Errorf("%w: %s", refused, code)
	}
	out, err := c.Code(ctx, code)
	return out, res == "claimed", err
}

// Redeemers implements credit.CodeStore.
func (c *RedisCredit) Redeemers(ctx context.Context, code string) (map[string]time.Time, error) {
	if _, err := c.Code(ctx, code); err != nil {
		return nil, err
	}
	raw, err := c.rc.HGetAll(ctx, codeKeys(code)[1]).Result()
	if err != nil {
		return nil, fmt.Errorf("store: redis credit code %s: %w", code, err)
	}
	out := make(map[string]time.Time, len(raw))
	for org, v := range raw {
		at, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return nil, fmt.Errorf("store: redis credit code %s: claim of %s: %w", code, org, err)
		}
		out[org] = at
	}
	return out, nil
}
