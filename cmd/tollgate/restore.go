package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/tollgate-edge/tollgate/acme"
	"github.com/tollgate-edge/tollgate/store"
)

// restore puts the backup at src into the store cfg names.
func restore(ctx context.Context, cfg Config, src string, force bool, w io.Writer) error {
	bk, meta, err := store.OpenBackup(src)
	if err != nil {
		return err
	}
	sum, err := summarize(ctx, bk)
	if err != nil {
		bk.Close()
		return err
	}
	fmt.Fprintf(w, "backup %s: source %s, taken %s\n%s", src, meta.Source, meta.Created.Format(time.RFC3339), sum)
	if cfg.Store.Redis == "" {
		bk.Close()
		replaced, err := store.RestoreFile(ctx, src, cfg.Store.Path, force)
		if err != nil {
			return err
		}
		if replaced != "" {
			fmt.Fprintf(w, "the previous store is kept as %s\n", replaced)
		}
		fmt.Fprintf(w, "restored into %s: start tollgate on it\n", cfg.Store.Path)
		return nil
	}
	defer bk.Close()
	rc, err := store.NewRedis(cfg.Store)
	if err != nil {
		return err
	}
	defer rc.Close()
	return restoreRedis(ctx, bk, sum, rc, force, w)
}

// restoreRedis writes a backup into the Redis a cluster shares. The
// registry is written in one MULTI/EXEC, so every node sees all of it at
// once (a node that kept serving its snapshot while Redis had lost it takes
// the restored one as the registry found again); with force it replaces the
// registry there, records absent from the backup are deleted. The account
// history is merged (records are keyed by event id), and certificates are
// written where Redis has none under that key (a renewal made since the
// backup wins).
func restoreRedis(ctx context.Context, bk *store.Bolt, sum summary, rc store.RedisClient, force bool, w io.Writer) error {
	kv := store.NewRedisKV(rc, nil)
	if err := kv.Ping(ctx); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	if !force {
		for _, b := range []string{"orgs", "sites", "domains"} {
			if n, err := count(ctx, kv, b); err != nil {
				return err
			} else if n > 0 {
				return fmt.Errorf("redis already holds %d %s: pass --force to replace its registry with the backup's", n, b)
			}
		}
	}
	var ops []store.Op
	for _, b := range registryBuckets {
		in := map[string]bool{}
		err := bk.Scan(ctx, b, func(k, v []byte) error {
			in[string(k)] = true
			ops = append(ops, store.Put(b, string(k), append([]byte(nil), v...)))
			return nil
		})
		if err != nil {
			return err
		}
		err = kv.Scan(ctx, b, func(k, _ []byte) error {
			if !in[string(k)] {
				ops = append(ops, store.Delete(b, string(k)))
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := kv.Apply(ctx, ops...); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if err := copyBuckets(ctx, kv, bk, historyBucket); err != nil {
		return err
	}
	credits, _, err := copyCredits(ctx, bk, store.NewBoltCredit(bk), store.NewRedisCredit(rc), false)
	if err != nil {
		return fmt.Errorf("prepaid credit: %w", err)
	}
	written, kept, err := restoreCerts(ctx, acme.NewBoltStorage(bk), acme.NewRedisStorage(rc, acme.RedisStorageOptions{}))
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	for _, b := range registryBuckets {
		if n, err := count(ctx, kv, b); err != nil {
			return err
		} else if n != sum.counts[b] {
			return fmt.Errorf("%s: %d records in the backup but %d in redis after the restore", b, sum.counts[b], n)
		}
	}
	fmt.Fprintf(w, "restored into redis: registry replaced and verified, %d account events and %d credit entries merged, certificates: %d written, %d kept (already in redis)\n",
		sum.counts[historyBucket], credits, written, kept)
	return nil
}

// restoreCerts copies the certmagic keys dst lacks, checking each arrived
// intact; kept counts those dst already had.
func restoreCerts(ctx context.Context, src, dst certmagic.Storage) (written, kept int, err error) {
	keys, err := certKeys(ctx, src)
	if err != nil {
		return 0, 0, err
	}
	for _, k := range keys {
		if dst.Exists(ctx, k) {
			kept++
			continue
		}
		v, err := src.Load(ctx, k)
		if err != nil {
			return written, kept, err
		}
		if err := dst.Store(ctx, k, v); err != nil {
			return written, kept, err
		}
		if got, err := dst.Load(ctx, k); err != nil || !bytes.Equal(got, v) {
			return written, kept, fmt.Errorf("%s did not arrive intact", k)
		}
		written++
	}
	return written, kept, nil
}

// certKeys lists the certmagic keys of s that hold data (not directories).
func certKeys(ctx context.Context, s certmagic.Storage) ([]string, error) {
	all, err := s.List(ctx, "", true)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, k := range all {
		if info, err := s.Stat(ctx, k); err == nil && info.IsTerminal {
			keys = append(keys, k)
		}
	}
	return keys, nil
}
