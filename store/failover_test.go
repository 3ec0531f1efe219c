package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/redistest"
)

// TestSentinelCredentials: a master that requires a password, behind
// sentinels with and without one. The URL forms the docs give reach it:
// the URL's user:password as the master's when the sentinels have none
// (redis://:pw@s1?master_name=…), password= for the master's with the
// URL's as the sentinels' otherwise; a wrong password is refused.
func TestSentinelCredentials(t *testing.T) {
	const master, sentinel = "master-pw", "sentinel-pw"
	open := redistest.StartSentinel(t, redistest.SentinelOptions{Password: master})
	locked := redistest.StartSentinel(t, redistest.SentinelOptions{Password: master, SentinelPassword: sentinel})
	withUser := func(u, pw string) string { return strings.Replace(u, "redis://", "redis://:"+pw+"@", 1) }
	for _, tc := range []struct {
		name, url string
		ok        bool
	}{
		{"userinfo is the master's", withUser(open.URL(), master), true},
		{"password= is the master's", open.URL() + "&password=" + master, true},
		{"userinfo the sentinels', password= the master's", withUser(locked.URL(), sentinel) + "&password=" + master, true},
		{"no password", open.URL(), false},
		{"wrong master password", withUser(open.URL(), "nope"), false},
		{"sentinel password missing", locked.URL() + "&password=" + master, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := NewRedis(Config{Redis: tc.url, RedisMode: "sentinel"})
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			kv := NewRedisKV(rc, nil)
			err = kv.Apply(ctx, Put("plans", "p", []byte(`{}`)))
			if tc.ok && err != nil {
				t.Fatalf("write through %s: %v", tc.url, err)
			}
			if !tc.ok && err == nil {
				t.Fatalf("write through %s succeeded, want it refused", tc.url)
			}
		})
	}
}

// TestIsFailover: connection failures and not-yet-promoted replies are
// failovers (a write may succeed on the new master); replies to the command
// itself are not.
func TestIsFailover(t *testing.T) {
	rs := redistest.Start(t)
	rc, err := NewRedis(Config{Redis: "redis://" + rs.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	ctx := context.Background()
	rc.Set(ctx, "s", "x", 0)
	if err := rc.HGet(ctx, "s", "f").Err(); err == nil || IsFailover(err) {
		t.Fatalf("WRONGTYPE reply: IsFailover(%v) = true or no error", err)
	}
	if err := rc.Get(ctx, "missing").Err(); IsFailover(err) {
		t.Fatalf("redis.Nil is a failover")
	}
	rs.Stop()
	if err := rc.Set(ctx, "k", "v", 0).Err(); !IsFailover(err) {
		t.Fatalf("write to a stopped Redis: IsFailover(%v) = false", err)
	}
	rs.Restart()
	if err := rc.Do(ctx, "REPLICAOF", "127.0.0.1", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Set(ctx, "k", "v", 0).Err(); !IsFailover(err) || !strings.HasPrefix(err.Error(), "READONLY") {
		t.Fatalf("write to a replica: IsFailover(%v) = false", err)
	}
}
