package acme

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
)

// RedisStorageOptions tune a RedisStorage. Zero values mean the defaults.
type RedisStorageOptions struct {
	// Prefix namespaces every key, as the hash tag "{" + Prefix + "}" (see
	// RedisStorage). Nodes share certificates and locks when they use the same
	// Prefix on the same Redis. Default: "tollgate:certs".
	Prefix string
	// LockTTL is how long a lock outlives a holder that died without Unlock.
	// A live holder renews it every LockTTL/3, so shorter recovers from dead
	// nodes faster for more renewals (one small script per held lock per
	// LockTTL/3). Millisecond resolution; below 1ms means the default.
	// Default: 60s.
	LockTTL time.Duration
	// PollInterval is how often Lock retries a lock held elsewhere. Polling
	// is fine: certmagic locks guard certificate issuance and renewal, rare
	// jobs that take seconds, so a waiter's few SETs per second cost nothing
	// and a pub/sub wake-up would not be worth its extra connection.
	// Default: 250ms.
	PollInterval time.Duration
}

// RedisStorage is a certmagic.Storage on Redis, shared by the nodes of a
// cluster. Its keys, with T the hash tag "{" + Prefix + "}":
//
//	T:v:<key>      hash: "v" the value, "m" its modification time (Unix ns, decimal)
//	T:idx          sorted set of every stored key, all scores 0, listed by prefix with ZRANGEBYLEX
//	T:lock:<name>  string: the holder's random token, expiring after LockTTL
//
// The hash tag puts every key in one slot, so it works on Redis Cluster (one
// shard holds all certificates) and multi-key scripts and MULTI/EXEC are
// allowed. Store writes a value and its index entry in one script; Delete
// removes a directory a page of keys at a time, each page in one MULTI/EXEC.
// Directories are implicit: the prefixes of keys up to a "/". The empty key is
// the root directory, which always exists.
//
// A lock is SET NX PX LockTTL with a random token. While held, a goroutine
// extends it every LockTTL/3 if the token is still there; Unlock deletes it if
// the token is still there. A holder that dies frees its locks after LockTTL.
// There are no fencing tokens: a holder stalled past LockTTL may lose its lock
// unaware, which certmagic tolerates (it rechecks storage after locking).
//
// It is safe for concurrent use.
type RedisStorage struct {
	rc   redis.UniversalClient
	opts RedisStorageOptions
	tag  string // "{" + Prefix + "}"

	mu     sync.Mutex
	leases map[string]*redisLease // the locks this node holds, by name
}

// redisLease is one lock held by this node.
type redisLease struct {
	token string
	stop  context.CancelFunc // stops the renewer
	done  <-chan struct{}    // closed when the renewer has returned
}

var (
	_ certmagic.Storage          = (*RedisStorage)(nil)
	_ certmagic.TryLocker        = (*RedisStorage)(nil)
	_ certmagic.LockLeaseRenewer = (*RedisStorage)(nil)
)

// redisPage is how many index entries one ZRANGEBYLEX of List, Stat or
// Delete fetches.
const redisPage = 1000

// NewRedisStorage keeps certmagic's data in rc. The caller owns rc and closes
// it, after Close.
func NewRedisStorage(rc redis.UniversalClient, opts RedisStorageOptions) *RedisStorage {
	if opts.Prefix == "" {
		opts.Prefix = "tollgate:certs"
	}
	if opts.LockTTL < time.Millisecond {
		opts.LockTTL = 60 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 250 * time.Millisecond
	}
	return &RedisStorage{
		rc:     rc,
		opts:   opts,
		tag:    "{" + opts.Prefix + "}",
		leases: make(map[string]*redisLease),
	}
}

func (s *RedisStorage) idxKey() string             { return s.tag + ":idx" }
func (s *RedisStorage) valueKey(key string) string { return s.tag + ":v:" + key }
func (s *RedisStorage) lockKey(name string) string { return s.tag + ":lock:" + name }

// redisRange is the ZRANGEBYLEX interval of the keys in directory path.
func redisRange(path string) (lo, hi string) {
	if path == "" {
		return "-", "+"
	}
	return "[" + path + "/", "(" + path + "0" // '0' follows '/'
}

// redisStoreScript stores a value and indexes its key, refusing a key that
// would be both a file and a directory, as certmagic.FileStorage does.
//
//	KEYS[1] index, KEYS[2] value hash
//	ARGV[1] key, ARGV[2] value, ARGV[3] modification time,
//	ARGV[4], ARGV[5] redisRange(key), ARGV[6..] the key's parent directories
//
// It returns 1, 0 when a parent is a file or -1 when key is a directory.
var redisStoreScript = redis.NewScript(`
for i = 6, #ARGV do
	if redis.call('ZSCORE', KEYS[1], ARGV[i]) then return 0 end
end
if #redis.call('ZRANGEBYLEX', KEYS[1], ARGV[4], ARGV[5], 'LIMIT', 0, 1) > 0 then return -1 end
redis.call('HSET', KEYS[2], 'v', ARGV[2], 'm', ARGV[3])
redis.call('ZADD', KEYS[1], 0, ARGV[1])
return 1
`)

// redisRenewScript extends a lock to at least ARGV[2] ms if it still holds
// token ARGV[1] (never shortening a longer lease from RenewLockLease). It
// returns 1, or 0 when the lock is lost.
var redisRenewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
`)

// redisUnlockScript deletes a lock if it still holds token ARGV[1]. It returns
// 1, or 0 when the lock was lost.
var redisUnlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// Store puts value at key, replacing any value there. A key that is a
// directory, or below a file, is refused as certmagic.FileStorage does.
func (s *RedisStorage) Store(ctx context.Context, key string, value []byte) error {
	if key == "" {
		return errors.New("acme: store: empty key")
	}
	lo, hi := redisRange(key)
	args := []any{key, value, strconv.FormatInt(time.Now().UnixNano(), 10), lo, hi}
	for i := range len(key) {
		if key[i] == '/' {
			args = append(args, key[:i])
		}
	}
	n, err := redisStoreScript.Run(ctx, s.rc, []string{s.idxKey(), s.valueKey(key)}, args...).Int()
	switch {
	case err != nil:
		return fmt.Errorf("acme: store %q: %w", key, err)
	case n == 0:
		return fmt.Errorf("acme: store %q: a parent is a file: %w", key, errStorageConflict)
	case n < 0:
		return fmt.Errorf("acme: store %q: it is a directory: %w", key, errStorageConflict)
	}
	return nil
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist when key
// is not a file.
func (s *RedisStorage) Load(ctx context.Context, key string) ([]byte, error) {
	v, err := s.rc.HGet(ctx, s.valueKey(key), "v").Bytes()
	if errors.Is(err, redis.Nil) {
		err = fs.ErrNotExist
	}
	if err != nil {
		return nil, fmt.Errorf("acme: load %q: %w", key, err)
	}
	return v, nil
}

// Delete removes key and, when it is a directory, every key under it. A
// missing key is not an error. A directory goes a page at a time, so a key
// stored into it meanwhile may survive.
func (s *RedisStorage) Delete(ctx context.Context, key string) error {
	del := func(keys []string) error {
		vkeys := make([]string, len(keys))
		members := make([]any, len(keys))
		for i, k := range keys {
			vkeys[i], members[i] = s.valueKey(k), k
		}
		_, err := s.rc.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, vkeys...)
			p.ZRem(ctx, s.idxKey(), members...)
			return nil
		})
		return err
	}
	var err error
	if key != "" {
		err = del([]string{key})
	}
	if err == nil {
		lo, hi := redisRange(key)
		err = s.scan(ctx, lo, hi, func(page []string) (string, error) { return "", del(page) })
	}
	if err != nil {
		return fmt.Errorf("acme: delete %q: %w", key, err)
	}
	return nil
}

// Exists reports whether key is a file or a directory. It is false on errors.
func (s *RedisStorage) Exists(ctx context.Context, key string) bool {
	if key == "" {
		return true
	}
	lo, hi := redisRange(key)
	var file *redis.IntCmd
	var under *redis.StringSliceCmd
	_, err := s.rc.Pipelined(ctx, func(p redis.Pipeliner) error {
		file = p.Exists(ctx, s.valueKey(key))
		under = p.ZRangeByLex(ctx, s.idxKey(), &redis.ZRangeBy{Min: lo, Max: hi, Count: 1})
		return nil
	})
	return err == nil && (file.Val() > 0 || len(under.Val()) > 0)
}

// List returns the full keys under path: its files and directories, and with
// recursive those of every directory below. A file's path lists as empty, and
// a path that does not exist is an error wrapping fs.ErrNotExist.
func (s *RedisStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	l := storageLister{dir: storageDir(path), recursive: recursive}
	lo, hi := redisRange(path)
	err := s.scan(ctx, lo, hi, func(page []string) (string, error) {
		var sub string
		for _, k := range page {
			sub = l.add(k)
		}
		if sub != "" {
			return "[" + sub + "0", nil // past the rest of sub's keys
		}
		return "", nil
	})
	if err != nil {
		return nil, fmt.Errorf("acme: list %q: %w", path, err)
	}
	if len(l.keys) == 0 && path != "" {
		n, err := s.rc.Exists(ctx, s.valueKey(path)).Result()
		if err != nil {
			return nil, fmt.Errorf("acme: list %q: %w", path, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("acme: list %q: %w", path, fs.ErrNotExist)
		}
	}
	return l.keys, nil
}

// Stat describes key. A directory's Modified is the latest of the keys under
// it, its Size 0. A missing key is an error wrapping fs.ErrNotExist.
func (s *RedisStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	info := certmagic.KeyInfo{Key: key}
	if key != "" {
		var mod *redis.StringCmd
		var size *redis.IntCmd
		_, err := s.rc.Pipelined(ctx, func(p redis.Pipeliner) error {
			mod = p.HGet(ctx, s.valueKey(key), "m")
			size = p.HStrLen(ctx, s.valueKey(key), "v")
			return nil
		})
		if err == nil {
			ns, err := mod.Int64()
			if err != nil {
				return certmagic.KeyInfo{}, fmt.Errorf("acme: stat %q: modification time: %w", key, err)
			}
			info.IsTerminal, info.Size, info.Modified = true, size.Val(), time.Unix(0, ns)
			return info, nil
		}
		if !errors.Is(err, redis.Nil) {
			return certmagic.KeyInfo{}, fmt.Errorf("acme: stat %q: %w", key, err)
		}
	}
	found := key == ""
	lo, hi := redisRange(key)
	err := s.scan(ctx, lo, hi, func(page []string) (string, error) {
		found = true
		mods := make([]*redis.StringCmd, len(page))
		_, err := s.rc.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range page {
				mods[i] = p.HGet(ctx, s.valueKey(k), "m")
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) { // Nil: deleted meanwhile
			return "", err
		}
		for _, m := range mods {
			if ns, err := m.Int64(); err == nil && time.Unix(0, ns).After(info.Modified) {
				info.Modified = time.Unix(0, ns)
			}
		}
		return "", nil
	})
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("acme: stat %q: %w", key, err)
	}
	if !found {
		return certmagic.KeyInfo{}, fmt.Errorf("acme: stat %q: %w", key, fs.ErrNotExist)
	}
	return info, nil
}

// scan calls fn with the index entries in [lo, hi] (ZRANGEBYLEX syntax), in
// byte order, a page at a time. fn returns where the next page starts, or ""
// for right after the page.
func (s *RedisStorage) scan(ctx context.Context, lo, hi string, fn func(page []string) (next string, err error)) error {
	for {
		page, err := s.rc.ZRangeByLex(ctx, s.idxKey(), &redis.ZRangeBy{Min: lo, Max: hi, Count: redisPage}).Result()
		if err != nil || len(page) == 0 {
			return err
		}
		next, err := fn(page)
		if err != nil || len(page) < redisPage {
			return err
		}
		if next == "" {
			next = "(" + page[len(page)-1]
		}
		lo = next
	}
}

// Lock takes the named lock, polling every PollInterval while another holder
// has it, until it is free, it expires or ctx is done.
func (s *RedisStorage) Lock(ctx context.Context, name string) error {
	tick := time.NewTicker(s.opts.PollInterval)
	defer tick.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("acme: lock %q: %w", name, err)
		}
		if ok, err := s.TryLock(ctx, name); ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// TryLock takes the named lock if it is free, without waiting.
func (s *RedisStorage) TryLock(ctx context.Context, name string) (bool, error) {
	token := rand.Text()
	ok, err := s.rc.SetNX(ctx, s.lockKey(name), token, s.opts.LockTTL).Result()
	if err != nil {
		return false, fmt.Errorf("acme: lock %q: %w", name, err)
	}
	if !ok {
		return false, nil
	}
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go s.renew(rctx, s.lockKey(name), token, done)
	s.mu.Lock()
	lost := s.leases[name] // expired without Unlock, since SET NX succeeded
	s.leases[name] = &redisLease{token: token, stop: stop, done: done}
	s.mu.Unlock()
	if lost != nil {
		lost.stop()
	}
	return true, nil
}

// renew extends the lock at key every LockTTL/3 while it holds token, until
// ctx is done. It closes done when it returns.
func (s *RedisStorage) renew(ctx context.Context, key, token string, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(s.opts.LockTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		held, err := redisRenewScript.Run(ctx, s.rc, []string{key}, token, s.opts.LockTTL.Milliseconds()).Int()
		if err == nil && held == 0 {
			return // lost: Unlock reports it
		}
		// On an error, retry at the next tick: the lock has 2/3 of LockTTL left.
	}
}

// Unlock releases a lock this node holds. It is an error if this node does
// not hold it, or if the lock expired before (another node may have had it).
func (s *RedisStorage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	l := s.leases[name]
	delete(s.leases, name)
	s.mu.Unlock()
	if l == nil {
		return fmt.Errorf("acme: unlock %q: not locked by this node", name)
	}
	l.stop()
	<-l.done
	n, err := redisUnlockScript.Run(ctx, s.rc, []string{s.lockKey(name)}, l.token).Int()
	if err != nil {
		return fmt.Errorf("acme: unlock %q (it expires within %s): %w", name, s.opts.LockTTL, err)
	}
	if n == 0 {
		return fmt.Errorf("acme: unlock %q: the lock had expired", name)
	}
	return nil
}

// RenewLockLease extends a lock this node holds to at least d from now. The
// renewer keeps it from expiring anyway while this node lives; a longer lease
// only delays its recovery if the node dies.
func (s *RedisStorage) RenewLockLease(ctx context.Context, name string, d time.Duration) error {
	s.mu.Lock()
	l := s.leases[name]
	s.mu.Unlock()
	if l == nil {
		return fmt.Errorf("acme: renew lock %q: not locked by this node", name)
	}
	held, err := redisRenewScript.Run(ctx, s.rc, []string{s.lockKey(name)}, l.token, max(d, time.Millisecond).Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("acme: renew lock %q: %w", name, err)
	}
	if held == 0 {
		return fmt.Errorf("acme: renew lock %q: the lock had expired", name)
	}
	return nil
}

// Close stops renewing the locks this node holds without releasing them: as
// a dead node's, they expire after LockTTL. Unlock them first (certmagic's
// CleanUpOwnLocks does on exit). Close does not close the client.
func (s *RedisStorage) Close() error {
	s.mu.Lock()
	leases := s.leases
	s.leases = make(map[string]*redisLease)
	s.mu.Unlock()
	for _, l := range leases {
		l.stop()
		<-l.done
	}
	return nil
}
