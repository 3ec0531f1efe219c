package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/tollgate-edge/tollgate/acme"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
	"github.com/tollgate-edge/tollgate/tokens"
)

// migratedBuckets are the registry's records, the account history and the
// org tokens (with their last use): what a node needs to serve, what
// billing must keep, and what tenants sign in with.
var migratedBuckets = append([]string{"plans", "orgs", "sites", "domains", "org_events"}, tokens.Buckets...)

// endpoint is one side of a migration: a bbolt file or a Redis.
type endpoint struct {
	name    string
	kv      sites.Store
	certs   certmagic.Storage
	credits creditStores
	close   func()
}

// openEndpoint opens spec: bbolt:PATH, or a Redis URL (or "env:NAME" /
// "file:PATH" holding one, as [store] redis takes it) reached in mode, the
// [store] redis_mode values.
func openEndpoint(spec, mode string) (*endpoint, error) {
	if strings.HasPrefix(spec, "env:") || strings.HasPrefix(spec, "file:") {
		v, err := resolveSecret(spec)
		if err != nil {
			return nil, err
		}
		spec = v
	}
	switch {
	case strings.HasPrefix(spec, "bbolt:"):
		path := strings.TrimPrefix(spec, "bbolt:")
		st, err := store.Open(store.Config{Path: path, OpenTimeout: 2 * time.Second})
		if err != nil {
			return nil, fmt.Errorf("%s: %w (is a tollgate still running on it?)", spec, err)
		}
		return &endpoint{name: spec, kv: st, certs: acme.NewBoltStorage(st), credits: store.NewBoltCredit(st), close: func() { st.Close() }}, nil
	case strings.HasPrefix(spec, "redis://"), strings.HasPrefix(spec, "rediss://"):
		rc, err := store.NewRedis(store.Config{Redis: spec, RedisMode: mode})
		if err != nil {
			return nil, err
		}
		kv := store.NewRedisKV(rc, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := kv.Ping(ctx); err != nil {
			rc.Close()
			return nil, fmt.Errorf("%s: %w", redactURL(spec), err)
		}
		return &endpoint{name: redactURL(spec), kv: kv, certs: acme.NewRedisStorage(rc, acme.RedisStorageOptions{}),
			credits: store.NewRedisCredit(rc), close: func() { rc.Close() }}, nil
	}
	return nil, fmt.Errorf("%q: give bbolt:PATH or redis://HOST:PORT[/DB] (with --from-redis-mode/--to-redis-mode for sentinel or cluster URLs)", redactURL(spec))
}

// redactURL hides the credentials of a Redis URL: its user and password and
// a password= query parameter (the master's in sentinel mode).
func redactURL(u string) string {
	if at := strings.LastIndexByte(u, '@'); at >= 0 {
		if i := strings.Index(u, "://"); i >= 0 && i < at {
			u = u[:i+3] + "…@" + u[at+1:]
		}
	}
	if q := strings.IndexByte(u, '?'); q >= 0 {
		params := strings.Split(u[q+1:], "&")
		for i, p := range params {
			if strings.HasPrefix(p, "password=") {
				params[i] = "password=…"
			}
		}
		u = u[:q+1] + strings.Join(params, "&")
	}
	return u
}

// endpointSpec is a --from or --to with its Redis mode.
type endpointSpec struct{ spec, mode string }

// cmdStore runs `tollgate store migrate --from A --to B`.
func cmdStore(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "migrate" {
		fmt.Fprint(stderr, "usage: tollgate store migrate --from bbolt:PATH|redis://… --to redis://…|bbolt:PATH [--from-redis-mode M] [--to-redis-mode M]\n")
		return 2
	}
	fs := flag.NewFlagSet("store migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "source: bbolt:PATH or redis://host:port[/db]")
	to := fs.String("to", "", "destination: redis://host:port[/db] or bbolt:PATH; must hold no registry yet")
	fromMode := fs.String("from-redis-mode", "standalone", "how a Redis --from is reached, as [store] redis_mode: standalone, sentinel or cluster")
	toMode := fs.String("to-redis-mode", "standalone", "how a Redis --to is reached, as [store] redis_mode: standalone, sentinel or cluster")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *from == "" || *to == "" {
		fmt.Fprint(stderr, "tollgate store migrate: --from and --to are required\n")
		return 2
	}
	if err := migrate(context.Background(), endpointSpec{*from, *fromMode}, endpointSpec{*to, *toMode}, stdout); err != nil {
		fmt.Fprintf(stderr, "tollgate store migrate: %v\n", err)
		return 1
	}
	return 0
}

// migrate copies the registry, the account history and the certificates
// from one store to another and verifies the counts. Usage counters are not
// copied (their history stays where it was recorded; see the README).
func migrate(ctx context.Context, from, to endpointSpec, out io.Writer) error {
	src, err := openEndpoint(from.spec, from.mode)
	if err != nil {
		return err
	}
	defer src.close()
	dst, err := openEndpoint(to.spec, to.mode)
	if err != nil {
		return err
	}
	defer dst.close()
	for _, b := range []string{"orgs", "sites", "domains"} {
		if n, err := count(ctx, dst.kv, b); err != nil {
			return err
		} else if n > 0 {
			return fmt.Errorf("%s already holds %d %s: refusing to merge registries", dst.name, n, b)
		}
	}
	for _, b := range migratedBuckets {
		var ops []store.Op
		flush := func() error {
			err := dst.kv.Apply(ctx, ops...)
			ops = ops[:0]
			return err
		}
		err := src.kv.Scan(ctx, b, func(k, v []byte) error {
			ops = append(ops, store.Put(b, string(k), append([]byte(nil), v...)))
			if len(ops) == 500 {
				return flush()
			}
			return nil
		})
		if err == nil {
			err = flush()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", b, err)
		}
		n, err := count(ctx, src.kv, b)
		if err != nil {
			return err
		}
		m, err := count(ctx, dst.kv, b)
		if err != nil {
			return err
		}
		if n != m {
			return fmt.Errorf("%s: %d records in %s but %d in %s after the copy", b, n, src.name, m, dst.name)
		}
		fmt.Fprintf(out, "%-10s %6d records copied and verified\n", b, n)
	}
	entries, orgs, err := copyCredits(ctx, src.kv, src.credits, dst.credits, true)
	if err != nil {
		return fmt.Errorf("prepaid credit: %w", err)
	}
	fmt.Fprintf(out, "%-10s %6d entries of %d orgs copied, balances verified\n", "credit", entries, orgs)
	n, err := copyCerts(ctx, src.certs, dst.certs)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	fmt.Fprintf(out, "%-10s %6d keys copied and verified (certificates, keys, ACME account, issuance records)\n", "certs", n)
	fmt.Fprintf(out, "done: %s → %s (usage counters are not copied)\n", src.name, dst.name)
	return nil
}

func count(ctx context.Context, kv sites.Store, bucket string) (int, error) {
	n := 0
	err := kv.Scan(ctx, bucket, func(_, _ []byte) error { n++; return nil })
	return n, err
}

// copyCerts copies every certmagic key and checks each arrived unchanged.
func copyCerts(ctx context.Context, src, dst certmagic.Storage) (int, error) {
	keys, err := src.List(ctx, "", true)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		info, err := src.Stat(ctx, k)
		if err != nil || !info.IsTerminal {
			continue
		}
		v, err := src.Load(ctx, k)
		if err != nil {
			return n, err
		}
		if err := dst.Store(ctx, k, v); err != nil {
			return n, err
		}
		got, err := dst.Load(ctx, k)
		if err != nil || string(got) != string(v) {
			return n, fmt.Errorf("%s did not arrive intact", k)
		}
		n++
	}
	return n, nil
}
