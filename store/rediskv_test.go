package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/redistest"
	"github.com/tollgate-edge/tollgate/store"
)

func TestRedisKV(t *testing.T) {
	rs := redistest.Start(t)
	ctx := context.Background()
	open := func() *store.RedisKV {
		rc, err := store.NewRedis(store.Config{Redis: "redis://" + rs.Addr()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rc.Close() })
		return store.NewRedisKV(rc, nil)
	}
	a, b := open(), open() // two nodes

	changed := make(chan struct{}, 16)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go b.Watch(wctx, time.Hour, func() { changed <- struct{}{} }) // pub/sub only: the reconcile tick never fires
	<-changed                                                     // the first check after subscribing

	if err := a.Apply(ctx, store.Put("orgs", "b", []byte(`{"id":"b"}`)), store.Put("orgs", "a", []byte(`{"id":"a"}`)), store.Put("sites", "s", []byte(`{}`))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("node b was not notified of node a's write")
	}
	var keys []string
	if err := b.Scan(ctx, "orgs", func(k, v []byte) error { keys = append(keys, string(k)+"="+string(v)); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, " ") != `a={"id":"a"} b={"id":"b"}` {
		t.Fatalf("scan in key order: %v", keys)
	}
	if err := a.Apply(ctx, store.Delete("orgs", "a")); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Count(ctx, "orgs"); err != nil || n != 1 {
		t.Fatalf("count after delete: %d %v", n, err)
	}
	if v, err := b.Version(ctx); err != nil || v != 2 {
		t.Fatalf("version %d %v, want 2", v, err)
	}
	if err := b.Scan(ctx, "missing", func(_, _ []byte) error { t.Fatal("a missing bucket is empty"); return nil }); err != nil {
		t.Fatal(err)
	}

	// Redis down: writes fail with an error, nothing panics; back: fine.
	rs.Stop()
	if err := a.Apply(ctx, store.Put("orgs", "c", []byte(`{}`))); err == nil {
		t.Fatal("a write with Redis down succeeded")
	}
	if err := a.Ping(ctx); err == nil {
		t.Fatal("ping with Redis down succeeded")
	}
	rs.Restart()
	if err := a.Apply(ctx, store.Put("orgs", "c", []byte(`{}`))); err != nil {
		t.Fatalf("after Redis came back: %v", err)
	}
}

func TestRedisModes(t *testing.T) {
	for _, tc := range []struct {
		mode, url, wantErr string
	}{
		{"standalone", "redis://127.0.0.1:6379/2", ""},
		{"sentinel", "redis://127.0.0.1:26379?addr=127.0.0.1:26380&master_name=mymaster", ""},
		{"sentinel", "redis://127.0.0.1:26379", "master_name"},
		{"cluster", "redis://127.0.0.1:7000?addr=127.0.0.1:7001", ""},
		{"cluster", "redis://127.0.0.1:7000?bogus=1", "store.redis"},
		{"ring", "redis://127.0.0.1:6379", "store.redis_mode"},
		{"standalone", "http://x", "store.redis"},
	} {
		c := store.Config{Redis: tc.url, RedisMode: tc.mode}
		c.Defaults()
		err := c.Validate()
		if (err == nil) != (tc.wantErr == "") || err != nil && !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s %s: %v, want %q", tc.mode, tc.url, err, tc.wantErr)
		}
	}
}
