package acme

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"

	"github.com/tollgate-edge/tollgate/internal/redistest"
	"github.com/tollgate-edge/tollgate/internal/storetest"
)

// storageTree is stored by the cases that need keys at several depths. "a-b.com"
// sorts before "a.com/…" and "certsx" next to "certs/…": traps for prefix scans.
var storageTree = []string{
	"certs/ca/a.com/a.com.crt",
	"certs/ca/a.com/a.com.key",
	"certs/ca/a-b.com/a-b.com.crt",
	"certs/ca/top.json",
	"certs/other/x",
	"certsx/y",
	"ocsp/z",
}

// TestStorageConformance runs one suite against both storages and against
// certmagic.FileStorage, the reference for the semantics.
func TestStorageConformance(t *testing.T) {
	srv := redistest.Start(t)
	impls := []struct {
		name string
		new  func(t *testing.T) certmagic.Storage
	}{
		{"bolt", func(t *testing.T) certmagic.Storage { return NewBoltStorage(storetest.Open(t)) }},
		{"redis", func(t *testing.T) certmagic.Storage {
			return storageRedisNode(t, srv.Addr(), RedisStorageOptions{Prefix: "test:" + t.Name()})
		}},
		{"file", func(t *testing.T) certmagic.Storage { return &certmagic.FileStorage{Path: t.TempDir()} }},
	}
	cases := []struct {
		name string
		run  func(t *testing.T, s certmagic.Storage)
	}{
		{"StoreLoadOverwrite", func(t *testing.T, s certmagic.Storage) {
			storageMustStore(t, s, "certs/ca/a.com/a.com.crt", "one")
			storageWantLoad(t, s, "certs/ca/a.com/a.com.crt", "one")
			storageMustStore(t, s, "certs/ca/a.com/a.com.crt", "two")
			storageWantLoad(t, s, "certs/ca/a.com/a.com.crt", "two")
			storageMustStore(t, s, "empty", "")
			storageWantLoad(t, s, "empty", "")
		}},
		{"Missing", func(t *testing.T, s certmagic.Storage) {
			storageMustStore(t, s, "a/b/c", "v")
			for _, key := range []string{"nope", "a/b/nope", "a/bc"} {
				if _, err := s.Load(storageCtx(t), key); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("Load(%q) = %v, want fs.ErrNotExist", key, err)
				}
				if _, err := s.Stat(storageCtx(t), key); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("Stat(%q) = %v, want fs.ErrNotExist", key, err)
				}
				if s.Exists(storageCtx(t), key) {
					t.Errorf("Exists(%q) = true", key)
				}
			}
			if _, err := s.Load(storageCtx(t), "a/b"); err == nil {
				t.Error("Load of a directory: no error")
			}
		}},
		{"BelowAFile", func(t *testing.T, s certmagic.Storage) {
			if _, ok := s.(*certmagic.FileStorage); ok {
				// The OS answers ENOTDIR, which FileStorage passes on (and
				// its Exists takes for true): the contract asks for
				// fs.ErrNotExist.
				t.Skip("FileStorage does not wrap fs.ErrNotExist below a file")
			}
			storageMustStore(t, s, "a/b", "v")
			if _, err := s.Load(storageCtx(t), "a/b/c"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Load = %v, want fs.ErrNotExist", err)
			}
			if _, err := s.Stat(storageCtx(t), "a/b/c"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Stat = %v, want fs.ErrNotExist", err)
			}
			if _, err := s.List(storageCtx(t), "a/b/c", false); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("List = %v, want fs.ErrNotExist", err)
			}
			if s.Exists(storageCtx(t), "a/b/c") {
				t.Error("Exists = true")
			}
		}},
		{"Exists", func(t *testing.T, s certmagic.Storage) {
			storageMustStore(t, s, "a/b/c.crt", "v")
			for key, want := range map[string]bool{
				"a/b/c.crt": true, "a/b": true, "a": true, "": true,
				"a/b/c": false, "a/bb": false, "b": false,
			} {
				if got := s.Exists(storageCtx(t), key); got != want {
					t.Errorf("Exists(%q) = %v, want %v", key, got, want)
				}
			}
		}},
		{"List", func(t *testing.T, s certmagic.Storage) {
			for _, k := range storageTree {
				storageMustStore(t, s, k, k)
			}
			for _, tc := range []struct {
				path      string
				recursive bool
				want      []string
			}{
				{"certs", false, []string{"certs/ca", "certs/other"}},
				{"certs/ca", false, []string{"certs/ca/a.com", "certs/ca/a-b.com", "certs/ca/top.json"}},
				{"certs", true, []string{
					"certs/ca", "certs/ca/a.com", "certs/ca/a.com/a.com.crt", "certs/ca/a.com/a.com.key",
					"certs/ca/a-b.com", "certs/ca/a-b.com/a-b.com.crt", "certs/ca/top.json",
					"certs/other", "certs/other/x",
				}},
				{"", false, []string{"certs", "certsx", "ocsp"}},
				{"certs/ca/top.json", false, nil},
			} {
				got, err := s.List(storageCtx(t), tc.path, tc.recursive)
				if err != nil {
					t.Errorf("List(%q, %v): %v", tc.path, tc.recursive, err)
					continue
				}
				slices.Sort(got)
				slices.Sort(tc.want)
				if !slices.Equal(got, tc.want) {
					t.Errorf("List(%q, %v) = %q, want %q", tc.path, tc.recursive, got, tc.want)
				}
			}
			for _, path := range []string{"cert", "certs/nope"} {
				if _, err := s.List(storageCtx(t), path, true); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("List(%q) = %v, want fs.ErrNotExist", path, err)
				}
			}
		}},
		{"Delete", func(t *testing.T, s certmagic.Storage) {
			for _, k := range storageTree {
				storageMustStore(t, s, k, k)
			}
			storageMustDelete(t, s, "certs/ca/top.json")
			if _, err := s.Load(storageCtx(t), "certs/ca/top.json"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Load after Delete = %v, want fs.ErrNotExist", err)
			}
			storageMustDelete(t, s, "certs/ca")
			storageMustDelete(t, s, "certs/ca") // again: not an error
			storageMustDelete(t, s, "nope")
			storageMustDelete(t, s, "cert") // a string prefix, not a directory
			if s.Exists(storageCtx(t), "certs/ca") || s.Exists(storageCtx(t), "certs/ca/a.com/a.com.crt") {
				t.Error("certs/ca survived its Delete")
			}
			got, err := s.List(storageCtx(t), "", true)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			want := []string{"certs", "certs/other", "certs/other/x", "certsx", "certsx/y", "ocsp", "ocsp/z"}
			if !slices.Equal(got, want) {
				t.Errorf("after Delete: %q, want %q", got, want)
			}
		}},
		{"ManyKeys", func(t *testing.T, s certmagic.Storage) {
			// 1,200 keys span two Redis pages (redisPage), the boundary
			// inside a site's directory.
			const sites = 400
			var dirs []string
			for i := range sites {
				dir := fmt.Sprintf("certs/ca/site%03d.com", i)
				dirs = append(dirs, dir)
				for _, ext := range []string{".crt", ".json", ".key"} {
					storageMustStore(t, s, dir+"/site"+ext, "v")
				}
			}
			got, err := s.List(storageCtx(t), "certs/ca", false)
			if slices.Sort(got); err != nil || !slices.Equal(got, dirs) {
				t.Errorf("List(non-recursive) = %d keys, %v, want the %d sites", len(got), err, sites)
			}
			if got, err := s.List(storageCtx(t), "certs", true); err != nil || len(got) != 1+4*sites {
				t.Errorf("List(recursive) = %d keys, %v, want %d", len(got), err, 1+4*sites)
			}
			storageMustDelete(t, s, "certs/ca")
			if s.Exists(storageCtx(t), "certs/ca/site399.com/site.key") {
				t.Error("a key survived the Delete of its directory")
			}
		}},
		{"Stat", func(t *testing.T, s certmagic.Storage) {
			before := time.Now()
			storageMustStore(t, s, "d/f.json", "12345")
			after := time.Now()
			// File systems stamp files with a coarse clock: allow a second.
			inRange := func(m time.Time) bool {
				return !m.Before(before.Add(-time.Second)) && !m.After(after.Add(time.Second))
			}
			fi, err := s.Stat(storageCtx(t), "d/f.json")
			if err != nil {
				t.Fatal(err)
			}
			if fi.Key != "d/f.json" || !fi.IsTerminal || fi.Size != 5 || !inRange(fi.Modified) {
				t.Errorf("Stat(file) = %+v, want terminal, size 5, modified in [%v, %v]", fi, before, after)
			}
			di, err := s.Stat(storageCtx(t), "d")
			if err != nil {
				t.Fatal(err)
			}
			if di.Key != "d" || di.IsTerminal || !inRange(di.Modified) {
				t.Errorf("Stat(dir) = %+v, want not terminal, modified in [%v, %v]", di, before, after)
			}
		}},
		{"StoreConflicts", func(t *testing.T, s certmagic.Storage) {
			storageMustStore(t, s, "k/v", "file")
			if err := s.Store(storageCtx(t), "k", []byte("x")); err == nil {
				t.Error("Store over a directory: no error")
			}
			if err := s.Store(storageCtx(t), "k/v/w", []byte("x")); err == nil {
				t.Error("Store below a file: no error")
			}
			storageWantLoad(t, s, "k/v", "file")
		}},
		{"ConcurrentStores", func(t *testing.T, s certmagic.Storage) {
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					if err := s.Store(storageCtx(t), "k", []byte(fmt.Sprint("value ", i))); err != nil {
						t.Error(err)
					}
					if v, err := s.Load(storageCtx(t), "k"); err != nil || !bytes.HasPrefix(v, []byte("value ")) {
						t.Errorf("Load = %q, %v", v, err)
					}
				})
			}
			wg.Wait()
		}},
		{"LockExcludes", func(t *testing.T, s certmagic.Storage) {
			storageMustLock(t, s, "issue_a.com")
			short, cancel := context.WithTimeout(storageCtx(t), 100*time.Millisecond)
			defer cancel()
			if err := s.Lock(short, "issue_a.com"); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("second Lock = %v, want context.DeadlineExceeded", err)
			}
			acquired := make(chan error, 1)
			go func() { acquired <- s.Lock(storageCtx(t), "issue_a.com") }()
			storageMustUnlock(t, s, "issue_a.com")
			if err := <-acquired; err != nil {
				t.Fatalf("Lock after Unlock: %v", err)
			}
			storageMustUnlock(t, s, "issue_a.com")
			if err := s.Unlock(storageCtx(t), "issue_a.com"); err == nil {
				t.Error("Unlock of an unheld lock: no error")
			}
		}},
		{"LockHonorsCancel", func(t *testing.T, s certmagic.Storage) {
			storageMustLock(t, s, "n")
			c, cancel := context.WithCancel(storageCtx(t))
			errc := make(chan error, 1)
			go func() { errc <- s.Lock(c, "n") }()
			cancel()
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("Lock = %v, want context.Canceled", err)
			}
			storageMustUnlock(t, s, "n")
		}},
		{"LockNamesIndependent", func(t *testing.T, s certmagic.Storage) {
			storageMustLock(t, s, "a")
			storageMustLock(t, s, "b")
			storageMustUnlock(t, s, "a")
			storageMustUnlock(t, s, "b")
		}},
		{"TryLock", func(t *testing.T, s certmagic.Storage) {
			tl := s.(certmagic.TryLocker)
			for i, want := range []bool{true, false} {
				if ok, err := tl.TryLock(storageCtx(t), "n"); ok != want || err != nil {
					t.Fatalf("TryLock #%d = %v, %v, want %v", i+1, ok, err, want)
				}
			}
			storageMustUnlock(t, s, "n")
			if ok, err := tl.TryLock(storageCtx(t), "n"); !ok || err != nil {
				t.Fatalf("TryLock after Unlock = %v, %v", ok, err)
			}
			storageMustUnlock(t, s, "n")
		}},
		{"RenewLockLease", func(t *testing.T, s certmagic.Storage) {
			r, ok := s.(certmagic.LockLeaseRenewer)
			if !ok {
				t.Skipf("%T has no leases", s)
			}
			storageMustLock(t, s, "n")
			if err := r.RenewLockLease(storageCtx(t), "n", time.Minute); err != nil {
				t.Errorf("RenewLockLease(held): %v", err)
			}
			storageMustUnlock(t, s, "n")
			if err := r.RenewLockLease(storageCtx(t), "n", time.Minute); err == nil {
				t.Error("RenewLockLease(unheld): no error")
			}
		}},
	}
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) { c.run(t, impl.new(t)) })
			}
		})
	}
}

// TestRedisStorageStaleLock shows that the lock of a holder that died is free
// after LockTTL.
func TestRedisStorageStaleLock(t *testing.T) {
	srv := redistest.Start(t)
	opts := RedisStorageOptions{LockTTL: 300 * time.Millisecond, PollInterval: 10 * time.Millisecond}
	live := storageRedisNode(t, srv.Addr(), opts)
	rc := storageRedisClient(t, srv.Addr())

	// A holder that crashed before its lease was set to expire...
	key := live.lockKey("by-hand")
	if err := rc.Set(storageCtx(t), key, "dead-token", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if ok, err := live.TryLock(storageCtx(t), "by-hand"); ok || err != nil {
		t.Fatalf("TryLock of a held lock = %v, %v", ok, err)
	}
	// ...and once its lease runs: Lock can only succeed by expiry.
	if err := rc.PExpire(storageCtx(t), key, opts.LockTTL).Err(); err != nil {
		t.Fatal(err)
	}
	storageMustLock(t, live, "by-hand")
	storageMustUnlock(t, live, "by-hand")

	// A node that dies holding a lock: its renewer stops, the lock stays.
	dead := storageRedisNode(t, srv.Addr(), opts)
	storageMustLock(t, dead, "issue")
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}
	storageMustLock(t, live, "issue")
	if err := dead.Unlock(storageCtx(t), "issue"); err == nil {
		t.Error("the dead node's Unlock: no error")
	}
	storageMustUnlock(t, live, "issue")
}

// TestRedisStorageLeaseRenewal shows that a live holder keeps its lock past
// LockTTL, and that the lease stays short.
func TestRedisStorageLeaseRenewal(t *testing.T) {
	srv := redistest.Start(t)
	opts := RedisStorageOptions{LockTTL: 500 * time.Millisecond, PollInterval: 10 * time.Millisecond}
	a := storageRedisNode(t, srv.Addr(), opts)
	b := storageRedisNode(t, srv.Addr(), opts)
	rc := storageRedisClient(t, srv.Addr())

	storageMustLock(t, a, "issue")
	wait, cancel := context.WithTimeout(storageCtx(t), 4*opts.LockTTL)
	defer cancel()
	if err := b.Lock(wait, "issue"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("b.Lock while a renews = %v, want context.DeadlineExceeded", err)
	}
	if ttl := rc.PTTL(storageCtx(t), a.lockKey("issue")).Val(); ttl <= 0 || ttl > opts.LockTTL {
		t.Errorf("PTTL = %v, want in (0, %v]", ttl, opts.LockTTL)
	}
	if err := a.RenewLockLease(storageCtx(t), "issue", time.Minute); err != nil {
		t.Fatal(err)
	}
	if ttl := rc.PTTL(storageCtx(t), a.lockKey("issue")).Val(); ttl <= opts.LockTTL {
		t.Errorf("PTTL after RenewLockLease(1m) = %v", ttl)
	}
	storageMustUnlock(t, a, "issue")
	storageMustLock(t, b, "issue")
	storageMustUnlock(t, b, "issue")
}

// TestRedisStorageTwoNodes shows that two nodes share data and exclude each
// other.
func TestRedisStorageTwoNodes(t *testing.T) {
	srv := redistest.Start(t)
	a := storageRedisNode(t, srv.Addr(), RedisStorageOptions{})
	b := storageRedisNode(t, srv.Addr(), RedisStorageOptions{})

	storageMustStore(t, a, "certs/ca/a.com/a.com.crt", "pem")
	storageWantLoad(t, b, "certs/ca/a.com/a.com.crt", "pem")

	storageMustLock(t, a, "issue_a.com")
	if ok, err := b.TryLock(storageCtx(t), "issue_a.com"); ok || err != nil {
		t.Fatalf("b.TryLock while a holds = %v, %v", ok, err)
	}
	if err := b.Unlock(storageCtx(t), "issue_a.com"); err == nil {
		t.Error("b.Unlock of a's lock: no error")
	}
	acquired := make(chan error, 1)
	go func() { acquired <- b.Lock(storageCtx(t), "issue_a.com") }()
	storageMustUnlock(t, a, "issue_a.com")
	if err := <-acquired; err != nil {
		t.Fatalf("b.Lock after a's Unlock: %v", err)
	}
	storageMustUnlock(t, b, "issue_a.com")
}

// TestRedisStorageKeySchema checks the documented keys: all under one hash
// tag, so in one Redis Cluster slot, and prefixes that do not see each other.
func TestRedisStorageKeySchema(t *testing.T) {
	srv := redistest.Start(t)
	s := storageRedisNode(t, srv.Addr(), RedisStorageOptions{})
	rc := storageRedisClient(t, srv.Addr())

	storageMustStore(t, s, "certs/ca/a.com.crt", "pem")
	storageMustLock(t, s, "issue")
	keys, err := rc.Keys(storageCtx(t), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	want := []string{"{tollgate:certs}:idx", "{tollgate:certs}:lock:issue", "{tollgate:certs}:v:certs/ca/a.com.crt"}
	if !slices.Equal(keys, want) {
		t.Errorf("keys = %q, want %q", keys, want)
	}
	if v := rc.HGet(storageCtx(t), want[2], "v").Val(); v != "pem" {
		t.Errorf("value field = %q", v)
	}
	if m := rc.ZRange(storageCtx(t), want[0], 0, -1).Val(); !slices.Equal(m, []string{"certs/ca/a.com.crt"}) {
		t.Errorf("index = %q", m)
	}
	storageMustUnlock(t, s, "issue")

	other := storageRedisNode(t, srv.Addr(), RedisStorageOptions{Prefix: "other"})
	if got, err := other.List(storageCtx(t), "", true); err != nil || len(got) != 0 {
		t.Errorf("another prefix lists %q, %v", got, err)
	}
	storageMustDelete(t, other, "")
	storageWantLoad(t, s, "certs/ca/a.com.crt", "pem")
}

func storageRedisClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

// storageRedisNode is one node: its own client, closed with the test.
func storageRedisNode(t *testing.T, addr string, opts RedisStorageOptions) *RedisStorage {
	t.Helper()
	s := NewRedisStorage(storageRedisClient(t, addr), opts)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// storageCtx bounds every storage call of a test, so that a hang fails it.
func storageCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func storageMustStore(t *testing.T, s certmagic.Storage, key, value string) {
	t.Helper()
	if err := s.Store(storageCtx(t), key, []byte(value)); err != nil {
		t.Fatal(err)
	}
}

func storageWantLoad(t *testing.T, s certmagic.Storage, key, want string) {
	t.Helper()
	got, err := s.Load(storageCtx(t), key)
	if err != nil || string(got) != want {
		t.Errorf("Load(%q) = %q, %v, want %q", key, got, err, want)
	}
}

func storageMustDelete(t *testing.T, s certmagic.Storage, key string) {
	t.Helper()
	if err := s.Delete(storageCtx(t), key); err != nil {
		t.Errorf("Delete(%q): %v", key, err)
	}
}

func storageMustLock(t *testing.T, s certmagic.Storage, name string) {
	t.Helper()
	if err := s.Lock(storageCtx(t), name); err != nil {
		t.Fatalf("Lock(%q): %v", name, err)
	}
}

func storageMustUnlock(t *testing.T, s certmagic.Storage, name string) {
	t.Helper()
	if err := s.Unlock(storageCtx(t), name); err != nil {
		t.Fatalf("Unlock(%q): %v", name, err)
	}
}
