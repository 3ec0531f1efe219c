package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A backup is a bbolt file holding the buckets of the embedded store. Taken
// from a bbolt store it is the whole file, as one read transaction saw it;
// exported from Redis it holds the registry, the account history and the
// certificates in the buckets the embedded store keeps them in. Either kind
// restores into a bbolt store or into Redis.
//
// Every backup carries BackupMeta in the bucket "tollgate_backup".
const (
	backupBucket = "tollgate_backup"
	backupKey    = "meta"
	// BackupFormat is the version of the layout described above.
	BackupFormat = 1
	// requiredBucket is in every tollgate store: the registry creates the
	// built-in free plan on first start.
	requiredBucket = "plans"
)

// ErrNotBackup: the file is not a tollgate store or backup.
var ErrNotBackup = errors.New("not a tollgate backup")

// BackupMeta says what a backup holds.
type BackupMeta struct {
	Format int `json:"format"`
	// Source is "bbolt" (a copy of a node's file) or "redis" (an export of
	// the state a cluster shares).
	Source  string    `json:"source"`
	Created time.Time `json:"created"`
	// RegistryVersion is the registry's version in Redis when it was
	// exported ({tollgate:reg}:version); 0 for a bbolt copy.
	RegistryVersion int64 `json:"registry_version,omitempty"`
}

// Backup writes a consistent copy of the whole store to path, which must not
// exist, and returns its size. The copy is one read transaction: writers go
// on meanwhile, and the transaction lasts only as long as the local write
// (a slow reader of the copy holds nothing open in the store).
func (b *Bolt) Backup(ctx context.Context, path string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, fmt.Errorf("store: backup: %w", err)
	}
	var n int64
	err = b.db.View(func(tx *bolt.Tx) error {
		n, err = tx.WriteTo(f)
		return err
	})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = stampBackup(path, BackupMeta{Source: "bbolt"})
	}
	if err != nil {
		os.Remove(path)
		return 0, fmt.Errorf("store: backup to %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil {
		n = fi.Size()
	}
	return n, nil
}

// stampBackup records m in the backup file at path.
func stampBackup(path string, m BackupMeta) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	if err := WriteBackupMeta(&Bolt{db: db}, m); err != nil {
		db.Close()
		return err
	}
	return db.Close()
}

// WriteBackupMeta records m (Format and, when zero, Created filled in) in b,
// a store being made into a backup.
func WriteBackupMeta(b *Bolt, m BackupMeta) error {
	m.Format = BackupFormat
	if m.Created.IsZero() {
		m.Created = time.Now().UTC()
	}
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return b.Apply(context.Background(), Put(backupBucket, backupKey, v))
}

// OpenBackup opens the backup at path read-only, after checking that it is
// a sound bbolt file (every page reachable once, see bbolt's Tx.Check) and a
// tollgate store. A store file that was never a backup passes too (its meta
// is then zero, Source "bbolt"). Close the returned store.
func OpenBackup(path string) (*Bolt, BackupMeta, error) {
	var m BackupMeta
	if _, err := os.Stat(path); err != nil {
		return nil, m, fmt.Errorf("store: %w", err)
	}
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return nil, m, fmt.Errorf("store: %s: %w: %w", path, ErrNotBackup, err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		var bad error
		for err := range tx.Check() { // drained: the check runs on until it closes the channel
			if bad == nil {
				bad = fmt.Errorf("%w: inconsistent: %w", ErrNotBackup, err)
			}
		}
		if bad != nil {
			return bad
		}
		if tx.Bucket([]byte(requiredBucket)) == nil {
			return fmt.Errorf("%w: it has no %q bucket", ErrNotBackup, requiredBucket)
		}
		if bk := tx.Bucket([]byte(backupBucket)); bk != nil {
			if err := json.Unmarshal(bk.Get([]byte(backupKey)), &m); err != nil {
				return fmt.Errorf("%w: its meta: %w", ErrNotBackup, err)
			}
			if m.Format > BackupFormat {
				return fmt.Errorf("%w: format %d is newer than this tollgate's (%d)", ErrNotBackup, m.Format, BackupFormat)
			}
		} else {
			m.Source = "bbolt"
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, m, fmt.Errorf("store: %s: %w", path, err)
	}
	return &Bolt{db: db}, m, nil
}

// ErrLive: the store file is open in a running tollgate.
var ErrLive = errors.New("in use by a running tollgate")

// ErrNotEmpty: restoring would overwrite a store that holds data.
var ErrNotEmpty = errors.New("holds data")

// RestoreFile puts the backup at src in place of the store file dst. It
// refuses when dst is open in a running tollgate (ErrLive, even with force:
// the process would go on writing to the replaced file) and, without force,
// when dst holds any record (ErrNotEmpty). With force the old file is kept
// beside it as dst.replaced-YYYYMMDDTHHMMSSZ, whose name is returned.
//
// The backup is checked first (OpenBackup) and copied to a temporary file
// in dst's directory, synced, then renamed over dst: a crash leaves either
// the old store or the new one.
func RestoreFile(ctx context.Context, src, dst string, force bool) (replaced string, err error) {
	bk, _, err := OpenBackup(src)
	if err != nil {
		return "", err
	}
	defer bk.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	if _, err := os.Stat(dst); err == nil {
		n, err := recordsIn(dst)
		if err != nil {
			return "", err
		}
		if n > 0 && !force {
			return "", fmt.Errorf("store: %s %w (%d records): pass --force to replace it (it is kept beside as .replaced-…)", dst, ErrNotEmpty, n)
		}
		replaced = dst + ".replaced-" + time.Now().UTC().Format("20060102T150405Z")
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("store: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), filepath.Base(dst)+".restore-*")
	if err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	err = bk.db.View(func(tx *bolt.Tx) error {
		_, err := tx.WriteTo(tmp)
		return err
	})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return "", fmt.Errorf("store: restore to %s: %w", dst, err)
	}
	if replaced != "" {
		if err := os.Link(dst, replaced); err != nil {
			return "", fmt.Errorf("store: keeping the current store: %w", err)
		}
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("store: %w", err)
	}
	if d, err := os.Open(filepath.Dir(dst)); err == nil {
		d.Sync() // the rename is durable
		d.Close()
	}
	return replaced, nil
}

// OpenIdle opens the existing store file at path when no process holds it,
// and returns an error wrapping ErrLive when one does (after half a second).
func OpenIdle(path string) (*Bolt, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 500 * time.Millisecond})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("store: %s is %w", path, ErrLive)
	}
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// recordsIn counts the keys of every bucket of the store file at path, or
// returns ErrLive when a running tollgate holds it.
func recordsIn(path string) (int, error) {
	st, err := OpenIdle(path)
	if errors.Is(err, ErrLive) {
		return 0, fmt.Errorf("%w: stop it first (or restore elsewhere and move the file in while it is stopped)", err)
	}
	if err != nil {
		return 0, err
	}
	defer st.Close()
	n := 0
	err = st.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			n += b.Stats().KeyN
			return nil
		})
	})
	return n, err
}
