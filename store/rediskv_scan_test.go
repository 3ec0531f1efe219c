package store_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate-edge/tollgate/internal/redistest"
	"github.com/tollgate-edge/tollgate/store"
)

// commandLog records the names of the commands a client sends.
type commandLog struct {
	mu    sync.Mutex
	names []string
}

func (l *commandLog) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *commandLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		l.mu.Lock()
		l.names = append(l.names, cmd.Name())
		l.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (l *commandLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestRedisKVScanInPages: a registry bucket is read a page at a time
// (HSCAN), never as one HGETALL reply (a million domains were one 170 MB
// reply, which stalled Redis and outlasted a busy one's read timeout), and
// every record comes once, in key order.
func TestRedisKVScanInPages(t *testing.T) {
	rs := redistest.Start(t)
	ctx := context.Background()
	rc, err := store.NewRedis(store.Config{Redis: "redis://" + rs.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	kv := store.NewRedisKV(rc, nil)
	const n = 25_000
	var ops []store.Op
	for i := range n {
		ops = append(ops, store.Put("domains", fmt.Sprintf("d%06d.example", i), []byte(fmt.Sprintf(`{"domain":"d%06d.example"}`, i))))
		if len(ops) == 5000 {
			if err := kv.Apply(ctx, ops...); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	log := &commandLog{}
	rc.AddHook(log)
	var keys []string
	if err := kv.Scan(ctx, "domains", func(k, v []byte) error {
		if want := fmt.Sprintf(`{"domain":%q}`, k); string(v) != want {
			t.Fatalf("%s holds %s, want %s", k, v, want)
		}
		keys = append(keys, string(k))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(keys) != n || !slices.IsSorted(keys) || len(slices.Compact(slices.Clone(keys))) != n {
		t.Fatalf("read %d keys (sorted %v), want %d distinct in order", len(keys), slices.IsSorted(keys), n)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	scans := 0
	for _, name := range log.names {
		switch name {
		case "hgetall":
			t.Fatal("the bucket was read with HGETALL")
		case "hscan":
			scans++
		}
	}
	if scans < 2 {
		t.Fatalf("%d HSCAN pages for %d records, want several", scans, n)
	}
}
