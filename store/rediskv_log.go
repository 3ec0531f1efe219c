package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The registry's change log in Redis: every Apply appends one entry to the
// stream {tollgate:reg}:log, in the same atomic step as its writes and the
// version bump, with the entry id "<version>-0". A node that holds version
// v reads the entries after "v-0" and applies them in order (sites.Registry
// Follow), so it reads what changed, not the registry. The stream keeps
// about LogLength entries; a node further behind, or one that meets a
// reset entry (an Apply too large to log, such as a restore), loads the
// whole registry again.

const (
	kvLog = kvPrefix + "log"
	// LogLength is about how many writes the change log keeps (MAXLEN ~).
	LogLength = 10000
	// logMaxOps and logMaxBytes bound one logged Apply; a larger one (a
	// restore, a bulk import) is logged as a reset: followers reload.
	logMaxOps   = 2000
	logMaxBytes = 2 << 20
)

// LogEntry is one Apply as the change log holds it.
type LogEntry = struct {
	// Version is the registry version the Apply produced.
	Version int64
	// Ops are its writes; nil with Reset.
	Ops []Op
	// Reset: the Apply was too large to log; load the whole registry.
	Reset bool
}

// applyScript writes the ops, bumps the version and logs them, atomically
// (a script runs alone; all its keys are in the registry's hash slot).
// KEYS: version, log, then the hash of each op. ARGV: the log's length, the
// logged ops (JSON, or "" for a reset entry), then field and value of each
// op ("" deletes). Returns the new version.
var applyScript = redis.NewScript(`
local v = redis.call('INCR', KEYS[1])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 and tonumber(string.match(last[1][1], '^(%d+)')) >= v then
  redis.call('DEL', KEYS[2]) -- the version went back (a flushed Redis): the old log is void
end
for i = 3, #KEYS do
  local f, val = ARGV[2*i-3], ARGV[2*i-2]
  if val == '' then redis.call('HDEL', KEYS[i], f) else redis.call('HSET', KEYS[i], f, val) end
end
if ARGV[2] == '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], v .. '-0', 'reset', '1')
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], v .. '-0', 'ops', ARGV[2])
end
return v
`)

// loggedOp is an Op in a log entry.
type loggedOp struct {
	Bucket string          `json:"b"`
	Key    string          `json:"k"`
	Value  json.RawMessage `json:"v,omitempty"` // absent: delete
}

func (s *RedisKV) applyLogged(ctx context.Context, ops []Op) (int64, error) {
	keys := make([]string, 2, 2+len(ops))
	keys[0], keys[1] = kvVersion, kvLog
	args := make([]any, 2, 2+2*len(ops))
	args[0] = LogLength
	logged := make([]loggedOp, 0, len(ops))
	size := 0
	for _, op := range ops {
		keys = append(keys, kvPrefix+"b:"+op.Bucket)
		args = append(args, op.Key, op.Value) // nil: "" (delete)
		logged = append(logged, loggedOp{Bucket: op.Bucket, Key: op.Key, Value: op.Value})
		size += len(op.Key) + len(op.Value)
	}
	args[1] = ""
	if len(ops) <= logMaxOps && size <= logMaxBytes {
		b, err := json.Marshal(logged)
		if err != nil {
			return 0, err // a record that is not JSON
		}
		args[1] = b
	}
	return applyScript.Run(ctx, s.rc, keys, args...).Int64()
}

// ReadLog returns the change log's entries after version, at most count,
// waiting up to block for one if there is none yet (0: no wait). An empty
// result with no error means nothing new, or, if the log no longer holds
// version+1, that it was trimmed: the caller compares Version.
func (s *RedisKV) ReadLog(ctx context.Context, version int64, count int, block time.Duration) ([]LogEntry, error) {
	after := strconv.FormatInt(version, 10) + "-0"
	var msgs []redis.XMessage
	if block > 0 {
		streams, err := s.rc.XRead(ctx, &redis.XReadArgs{Streams: []string{kvLog, after}, Count: int64(count), Block: block}).Result()
		if errors.Is(err, redis.Nil) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("store: reading the registry log: %w", err)
		}
		for _, st := range streams {
			msgs = append(msgs, st.Messages...)
		}
	} else {
		var err error
		msgs, err = s.rc.XRangeN(ctx, kvLog, "("+after, "+", int64(count)).Result()
		if err != nil {
			return nil, fmt.Errorf("store: reading the registry log: %w", err)
		}
	}
	out := make([]LogEntry, 0, len(msgs))
	for _, m := range msgs {
		e, err := decodeLogEntry(m)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func decodeLogEntry(m redis.XMessage) (LogEntry, error) {
	v, _, _ := strings.Cut(m.ID, "-")
	ver, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return LogEntry{}, fmt.Errorf("store: registry log entry %q: %w", m.ID, err)
	}
	e := LogEntry{Version: ver}
	raw, ok := m.Values["ops"].(string)
	if !ok {
		e.Reset = true // a reset entry, or one this version cannot read
		return e, nil
	}
	var logged []loggedOp
	if err := json.Unmarshal([]byte(raw), &logged); err != nil {
		e.Reset = true
		return e, nil
	}
	e.Ops = make([]Op, len(logged))
	for i, l := range logged {
		e.Ops[i] = Op{Bucket: l.Bucket, Key: l.Key, Value: l.Value}
		if len(l.Value) == 0 {
			e.Ops[i].Value = nil
		}
	}
	return e, nil
}
