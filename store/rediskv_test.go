package store_test

import (
	"context"
	"fmt"
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

	// Node b waits on the change log for node a's write.
	type read struct {
		entries []store.LogEntry
		err     error
	}
	got := make(chan read, 1)
	go func() {
		e, err := b.ReadLog(ctx, 0, 100, 5*time.Second)
		got <- read{e, err}
	}()
	if err := a.Apply(ctx, store.Put("orgs", "b", []byte(`{"id":"b"}`)), store.Put("orgs", "a", []byte(`{"id":"a"}`)), store.Put("sites", "s", []byte(`{}`))); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil || len(r.entries) != 1 || r.entries[0].Version != 1 || r.entries[0].Reset || len(r.entries[0].Ops) != 3 ||
		r.entries[0].Ops[1].Key != "a" || string(r.entries[0].Ops[1].Value) != `{"id":"a"}` {
		t.Fatalf("node b read %+v, %v; want version 1 with node a's three writes", r.entries, r.err)
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
	if e, err := b.ReadLog(ctx, 1, 100, 0); err != nil || len(e) != 1 || e[0].Version != 2 || e[0].Ops[0].Value != nil {
		t.Fatalf("log after version 1: %+v, %v; want the delete as version 2", e, err)
	}
	// A write too large to log is a reset entry: followers reload.
	var big []store.Op
	for i := range 2500 {
		big = append(big, store.Put("sites", fmt.Sprint(i), []byte(`{}`)))
	}
	if v, err := a.ApplyVersion(ctx, big...); err != nil || v != 3 {
		t.Fatalf("large write: version %d, %v; want 3", v, err)
	}
	if e, err := b.ReadLog(ctx, 2, 100, 0); err != nil || len(e) != 1 || !e[0].Reset || e[0].Ops != nil {
		t.Fatalf("log after version 2: %+v, %v; want a reset entry", e, err)
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
