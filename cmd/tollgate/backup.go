package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/tollgate-edge/tollgate/acme"
	"github.com/tollgate-edge/tollgate/admin"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

const storeBackupUsage = `usage:
  tollgate store backup  [--config FILE] OUT          copy the store of that config: through the running
                                                      node's admin API, else from the file; with [store]
                                                      redis, exported from Redis
  tollgate store backup  --node ADDR [--token T] OUT  ask the node at ADDR (its admin API) for its backup
  tollgate store restore [--config FILE] [--force] IN
  tollgate store restore [--config FILE] [--force] --from-node ADDR [--token T]
                                                      put a backup (or a running node's, fetched through its
                                                      admin API) into the store of that config: the bbolt
                                                      file (tollgate stopped) or Redis (nodes may run)
`

// registryBuckets are the records every node serves from; a restore into
// Redis writes them in one transaction.
var registryBuckets = []string{"plans", "orgs", "sites", "domains"}

// historyBucket is the account history: appended, merged on restore.
const historyBucket = "org_events"

// cmdStoreBackup runs `tollgate store backup`.
func cmdStoreBackup(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("store backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "tollgate.toml", "configuration file whose [store] (and [server] admin) to back up")
	node := fs.String("node", "", "admin API address of a running node (host:port or http://host:port) to fetch the backup from")
	token := fs.String("token", "", "admin bearer token for --node (default: env TOLLGATE_ADMIN_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprint(stderr, storeBackupUsage)
		return 2
	}
	out := fs.Arg(0)
	ctx, stop := signalContext()
	defer stop()
	var err error
	if *node != "" {
		err = backupFromNode(ctx, *node, tokenFor(*token, ""), out, stdout)
	} else {
		var cfg Config
		if cfg, err = LoadConfig(*cfgPath); err == nil {
			err = backupFromConfig(ctx, cfg, out, stdout)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "tollgate store backup: %v\n", err)
		return 1
	}
	return 0
}

// cmdStoreRestore runs `tollgate store restore`.
func cmdStoreRestore(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("store restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "tollgate.toml", "configuration file whose [store] to restore into")
	force := fs.Bool("force", false, "replace a store that holds data (a bbolt file is kept beside as .replaced-…)")
	fromNode := fs.String("from-node", "", "admin API address of a running node whose backup to restore")
	token := fs.String("token", "", "admin bearer token for --from-node (default: env TOLLGATE_ADMIN_TOKEN, else the config's)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if (*fromNode == "") == (fs.NArg() != 1) || fs.NArg() > 1 {
		fmt.Fprint(stderr, storeBackupUsage)
		return 2
	}
	cfg, err := LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := signalContext()
	defer stop()
	src := fs.Arg(0)
	if *fromNode != "" {
		dir, derr := os.MkdirTemp("", "tollgate-restore-")
		if derr != nil {
			fmt.Fprintf(stderr, "tollgate store restore: %v\n", derr)
			return 1
		}
		defer os.RemoveAll(dir)
		src = filepath.Join(dir, "node-backup.db")
		err = backupFromNode(ctx, *fromNode, tokenFor(*token, cfg.Server.AdminToken), src, stdout)
	}
	if err == nil {
		err = restore(ctx, cfg, src, *force, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "tollgate store restore: %v\n", err)
		return 1
	}
	return 0
}

// tokenFor picks the admin token: the flag, else TOLLGATE_ADMIN_TOKEN, else
// the config's.
func tokenFor(flagValue, fromConfig string) string {
	if flagValue != "" {
		return flagValue
	}
	if v := os.Getenv("TOLLGATE_ADMIN_TOKEN"); v != "" {
		return v
	}
	return fromConfig
}

// backupFromConfig backs up the store cfg names: exported from Redis with
// [store] redis; else a copy of the bbolt file, taken by the running node
// (through its admin API) when one holds the file, else read directly.
func backupFromConfig(ctx context.Context, cfg Config, out string, w io.Writer) error {
	if cfg.Store.Redis != "" {
		rc, err := store.NewRedis(cfg.Store)
		if err != nil {
			return err
		}
		defer rc.Close()
		return writeBackup(out, w, "exported from Redis", func(tmp string) error {
			return exportShared(ctx, tmp, rc, nil)
		})
	}
	st, err := store.OpenIdle(cfg.Store.Path)
	if errors.Is(err, store.ErrLive) {
		return backupFromNode(ctx, localAddr(cfg.Server.Admin), cfg.Server.AdminToken, out, w)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	return writeBackup(out, w, "copied from "+cfg.Store.Path+" (no tollgate running on it)", func(tmp string) error {
		_, err := st.Backup(ctx, tmp)
		return err
	})
}

// backupFromNode fetches the backup of the node whose admin API is at addr.
func backupFromNode(ctx context.Context, addr, token, out string, w io.Writer) error {
	if token == "" {
		return errors.New("no admin token: pass --token or set TOLLGATE_ADMIN_TOKEN")
	}
	return writeBackup(out, w, "taken by the node at "+addr, func(tmp string) error {
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = admin.NewClient(addr, token).Backup(ctx, f)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

// writeBackup has make write a backup into a temporary file beside out,
// checks it (store.OpenBackup), renames it to out and reports what it holds.
// A failed or cut backup never leaves a file named out.
func writeBackup(out string, w io.Writer, how string, make func(tmp string) error) error {
	dir, err := os.MkdirTemp(filepath.Dir(out), ".tollgate-backup-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "backup.db")
	if err := make(tmp); err != nil {
		return err
	}
	bk, meta, err := store.OpenBackup(tmp)
	if err != nil {
		return fmt.Errorf("the backup did not check out: %w", err)
	}
	sum, err := summarize(context.Background(), bk)
	bk.Close()
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fi, err := os.Stat(out)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "backup %s: %d bytes, %s (source %s)\n%s", out, fi.Size(), how, meta.Source, sum)
	return nil
}

// summary counts what a backup holds, by bucket, plus certmagic keys.
type summary struct {
	buckets []string
	counts  map[string]int
	certs   int
}

func (s summary) String() string {
	var b []byte
	for _, name := range s.buckets {
		b = fmt.Appendf(b, "  %-10s %6d\n", name, s.counts[name])
	}
	return string(fmt.Appendf(b, "  %-10s %6d keys (certificates, keys, ACME account)\n", "certs", s.certs))
}

func summarize(ctx context.Context, bk *store.Bolt) (summary, error) {
	s := summary{buckets: append(append([]string(nil), registryBuckets...), historyBucket), counts: map[string]int{}}
	for _, b := range s.buckets {
		n, err := count(ctx, bk, b)
		if err != nil {
			return s, err
		}
		s.counts[b] = n
	}
	keys, err := certKeys(ctx, acme.NewBoltStorage(bk))
	s.certs = len(keys)
	return s, err
}

// localAddr turns a listen address (":9180", "0.0.0.0:9180") into one to
// dial on this host.
func localAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// exportShared writes what a cluster shares into a new backup at path: the
// registry (from snap when given, the registry a node serves, which
// outlives a Redis that lost it; else read from Redis), the account history
// and the certificates from Redis. Usage counters stay out: they are
// per-period totals Redis keeps (see docs/cluster.md), not state to rebuild
// a cluster from.
func exportShared(ctx context.Context, path string, rc store.RedisClient, snap *sites.Snapshot) error {
	kv := store.NewRedisKV(rc, nil)
	version, err := kv.Version(ctx)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	dst, err := store.Open(store.Config{Path: path, OpenTimeout: time.Second})
	if err != nil {
		return err
	}
	defer dst.Close()
	if snap != nil {
		var ops []store.Op
		put := func(bucket, key string, v any) {
			b, _ := json.Marshal(v) // plain structs: cannot fail
			ops = append(ops, store.Put(bucket, key, b))
		}
		for name, p := range snap.Plans.All() {
			put("plans", name, p)
		}
		for id, o := range snap.Orgs.All() {
			put("orgs", id, o)
		}
		for id, s := range snap.Sites.All() {
			put("sites", id, s)
		}
		for name, d := range snap.Domains.All() {
			put("domains", name, d)
		}
		if err := dst.Apply(ctx, ops...); err != nil {
			return err
		}
	} else if err := copyBuckets(ctx, dst, kv, registryBuckets...); err != nil {
		return err
	}
	if err := copyBuckets(ctx, dst, kv, historyBucket); err != nil {
		return err
	}
	if _, _, err := copyCredits(ctx, kv, store.NewRedisCredit(rc), store.NewBoltCredit(dst), false); err != nil {
		return fmt.Errorf("prepaid credit: %w", err)
	}
	if _, err := copyCerts(ctx, acme.NewRedisStorage(rc, acme.RedisStorageOptions{}), acme.NewBoltStorage(dst)); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	return store.WriteBackupMeta(dst, store.BackupMeta{Source: "redis", RegistryVersion: version})
}

// copyBuckets copies every record of the buckets from src to dst, in
// batches.
func copyBuckets(ctx context.Context, dst, src sites.Store, buckets ...string) error {
	for _, b := range buckets {
		var ops []store.Op
		flush := func() error {
			err := dst.Apply(ctx, ops...)
			ops = ops[:0]
			return err
		}
		err := src.Scan(ctx, b, func(k, v []byte) error {
			ops = append(ops, store.Put(b, string(k), append([]byte(nil), v...)))
			if len(ops) == 500 {
				return flush()
			}
			return nil
		})
		if err == nil && len(ops) > 0 {
			err = flush()
		}
		if err != nil {
			return fmt.Errorf("%s: %w", b, err)
		}
	}
	return nil
}

// nodeBackups answers GET /v1/backup on a running node. It implements
// admin.Backups.
type nodeBackups struct {
	st  *store.Bolt
	reg *sites.Registry
	// rc is the node's Redis client when [store] redis is set (else nil):
	// the backup is then an export of what the cluster shares, with the
	// registry as this node serves it.
	rc store.RedisClient
}

var _ admin.Backups = (*nodeBackups)(nil)

// Backup makes the copy in a private directory under $TMPDIR (not beside
// the store: a copy must not eat the room the store's own writes need) and
// returns it opened and already unlinked.
func (nb *nodeBackups) Backup(ctx context.Context) (*os.File, error) {
	dir, err := os.MkdirTemp("", "tollgate-backup-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "backup.db")
	if nb.rc == nil {
		_, err = nb.st.Backup(ctx, path)
	} else {
		err = exportShared(ctx, path, nb.rc, nb.reg.Snapshot())
	}
	if err != nil {
		return nil, err
	}
	return os.Open(path)
}
