package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
	"github.com/tollgate-edge/tollgate/credit"
)

// RedisCredit keeps the prepaid credit ledgers in the cluster's Redis, so
// every node appends to one ledger per org. An org's keys share a hash tag
// (one slot on Redis Cluster) and Append is one Lua script: the source
// check, the entry and the balance happen together or not at all.
//
//	{tollgate:credit:ORG}:log  list: the entries as JSON, oldest first
//	{tollgate:credit:ORG}:src  hash: source → the entry's position in log (from 1)
//	{tollgate:credit:ORG}:bal  integer: the balance
type RedisCredit struct {
	rc RedisClient
}

var _ credit.Store = (*RedisCredit)(nil)

// NewRedisCredit keeps the ledgers on rc.
func NewRedisCredit(rc RedisClient) *RedisCredit { return &RedisCredit{rc: rc} }

func creditKeys(org string) []string {
	p := "{tollgate:credit:" + org + "}:"
	return []string{p + "log", p + "src", p + "bal"}
}

// creditAppend: KEYS log, src, bal; ARGV source, entry JSON, amount. It
// answers {appended 0|1, the stored entry's JSON, balance}. The amount is
// added by INCRBY (int64 arithmetic in Redis); the balance comes back as
// GET's string or as INCRBY's integer (exact: balances stay far below 2^53,
// credit.MaxAmount), never through Lua's tostring, which rounds to 14 digits.
var creditAppend = redis.NewScript(`
local i = redis.call('HGET', KEYS[2], ARGV[1])
if i then
  return {0, redis.call('LINDEX', KEYS[1], tonumber(i) - 1), redis.call('GET', KEYS[3]) or '0'}
end
local n = redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], n)
local b = redis.call('INCRBY', KEYS[3], ARGV[3])
return {1, ARGV[2], b}
`)

// Append implements credit.Store.
func (c *RedisCredit) Append(ctx context.Context, e credit.Entry) (credit.Entry, bool, int64, error) {
	val, err := json.Marshal(e)
	if err != nil {
		return credit.Entry{}, false, 0, err
	}
	res, err := creditAppend.Run(ctx, c.rc, creditKeys(e.Org), e.Source, val, e.Amount).Slice()
	if err != nil {
		return credit.Entry{}, false, 0, fmt.Errorf("store: redis credit append %s: %w", e.Org, err)
	}
	if len(res) != 3 {
		return credit.Entry{}, false, 0, fmt.Errorf("store: redis credit append %s: unexpected reply %v", e.Org, res)
	}
	appended, _ := res[0].(int64)
	raw, _ := res[1].(string)
	var stored credit.Entry
	if err := json.Unmarshal([]byte(raw), &stored); err != nil {
		return credit.Entry{}, false, 0, fmt.Errorf("store: redis credit entry of %s: %w", e.Org, err)
	}
	var balance int64
	switch b := res[2].(type) {
	case int64:
		balance = b
	case string:
		if balance, err = strconv.ParseInt(b, 10, 64); err != nil {
			return credit.Entry{}, false, 0, fmt.Errorf("store: redis credit balance of %s: %q", e.Org, b)
		}
	default:
		return credit.Entry{}, false, 0, fmt.Errorf("store: redis credit balance of %s: unexpected %T", e.Org, b)
	}
	return stored, appended == 1, balance, nil
}

// Balance implements credit.Store.
func (c *RedisCredit) Balance(ctx context.Context, org string) (int64, error) {
	b, err := c.rc.Get(ctx, creditKeys(org)[2]).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: redis credit balance of %s: %w", org, err)
	}
	return b, nil
}

// Entries implements credit.Store.
func (c *RedisCredit) Entries(ctx context.Context, org string) ([]credit.Entry, error) {
	raw, err := c.rc.LRange(ctx, creditKeys(org)[0], 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("store: redis credit entries of %s: %w", org, err)
	}
	out := make([]credit.Entry, 0, len(raw))
	for _, r := range raw {
		var e credit.Entry
		if err := json.Unmarshal([]byte(r), &e); err != nil {
			return nil, fmt.Errorf("store: redis credit entry of %s: %w", org, err)
		}
		out = append(out, e)
	}
	return out, nil
}
