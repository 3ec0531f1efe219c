package acme

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	bolt "go.etcd.io/bbolt"

	"github.com/tollgate-edge/tollgate/store"
)

// boltBucket is the bucket of the bbolt file that holds certmagic's keys.
const boltBucket = "certmagic"

// boltFillPercent is how full a write that splits a leaf page leaves it.
// bbolt's default, one half, leaves pages half empty for good when keys
// arrive in order, as certmagic writes a name's certificate, key and metadata
// (and as a bulk copy writes everything). The pages a certificate was read
// from stay resident, so empty halves cost memory. The tenth left free takes
// a renewal's slightly longer value without a split.
const boltFillPercent = 0.9

// boltPacked, the top bit of a value's 8-byte header, marks a value stored
// packed (packPEM); the modification time is in the other 63 bits. Values
// written before packing existed have it clear and are read as they are.
const boltPacked = 1 << 63

// errStorageConflict is returned by Store for a key that would be both a file
// and a directory, which certmagic.FileStorage cannot hold either.
var errStorageConflict = errors.New("a key cannot be both a file and a directory")

// BoltStorage is a certmagic.Storage in the bbolt file of a single node. Bucket
// "certmagic" maps each certmagic key to an 8-byte big-endian header (its
// modification time in Unix nanoseconds, and the boltPacked bit) followed by
// the stored bytes, packed when they are PEM (packPEM). Directories are
// implicit: the prefixes of keys up to a "/". The empty key is the root
// directory, which always exists.
//
// bbolt locks its file for one process, so locks live in memory: they exclude
// the goroutines sharing this BoltStorage, never go stale and end with the
// process. Every user of one store.Bolt must therefore share one BoltStorage.
//
// It is safe for concurrent use.
type BoltStorage struct {
	st *store.Bolt

	mu    sync.Mutex
	locks map[string]*boltLock
}

// boltLock is one named mutex: its holder is whoever sent the token into ch.
// refs counts the holder and the waiters; the last one out removes the entry.
type boltLock struct {
	ch   chan struct{} // capacity 1
	refs int
}

var (
	_ certmagic.Storage          = (*BoltStorage)(nil)
	_ certmagic.TryLocker        = (*BoltStorage)(nil)
	_ certmagic.LockLeaseRenewer = (*BoltStorage)(nil)
)

// NewBoltStorage keeps certmagic's data in st. The caller owns st and closes it.
func NewBoltStorage(st *store.Bolt) *BoltStorage {
	return &BoltStorage{st: st, locks: make(map[string]*boltLock)}
}

// Store puts value at key, replacing any value there. A key that is a
// directory, or below a file, is refused as certmagic.FileStorage does.
func (s *BoltStorage) Store(ctx context.Context, key string, value []byte) error {
	if key == "" {
		return errors.New("acme: store: empty key")
	}
	v := boltValue(value, time.Now())
	err := s.st.Update(ctx, func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists([]byte(boltBucket))
		if err != nil {
			return err
		}
		bk.FillPercent = boltFillPercent
		for i := range len(key) {
			if key[i] == '/' && bk.Get([]byte(key[:i])) != nil {
				return fmt.Errorf("%s is a file: %w", key[:i], errStorageConflict)
			}
		}
		if boltHasUnder(bk, key) {
			return fmt.Errorf("it is a directory: %w", errStorageConflict)
		}
		return bk.Put([]byte(key), v)
	})
	if err != nil {
		return fmt.Errorf("acme: store %q: %w", key, err)
	}
	return nil
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist when key
// is not a file.
func (s *BoltStorage) Load(ctx context.Context, key string) ([]byte, error) {
	var value []byte
	err := s.st.View(ctx, func(tx *bolt.Tx) error {
		if bk := tx.Bucket([]byte(boltBucket)); bk != nil {
			if v := bk.Get([]byte(key)); v != nil {
				var err error
				value, err = boltContent(v)
				return err
			}
		}
		return fs.ErrNotExist
	})
	if err != nil {
		return nil, fmt.Errorf("acme: load %q: %w", key, err)
	}
	return value, nil
}

// Delete removes key and, when it is a directory, every key under it, in one
// transaction. A missing key is not an error.
func (s *BoltStorage) Delete(ctx context.Context, key string) error {
	err := s.st.Update(ctx, func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(boltBucket))
		if bk == nil {
			return nil
		}
		bk.FillPercent = boltFillPercent
		doomed := [][]byte{[]byte(key)}
		dir := []byte(storageDir(key))
		c := bk.Cursor()
		for k, _ := c.Seek(dir); k != nil && bytes.HasPrefix(k, dir); k, _ = c.Next() {
			doomed = append(doomed, bytes.Clone(k))
		}
		for _, k := range doomed {
			if len(k) == 0 {
				continue // the root is no key
			}
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("acme: delete %q: %w", key, err)
	}
	return nil
}

// Exists reports whether key is a file or a directory. It is false on errors.
func (s *BoltStorage) Exists(ctx context.Context, key string) bool {
	if key == "" {
		return true
	}
	var found bool
	err := s.st.View(ctx, func(tx *bolt.Tx) error {
		if bk := tx.Bucket([]byte(boltBucket)); bk != nil {
			found = bk.Get([]byte(key)) != nil || boltHasUnder(bk, key)
		}
		return nil
	})
	return err == nil && found
}

// List returns the full keys under path: its files and directories, and with
// recursive those of every directory below. A file's path lists as empty, and
// a path that does not exist is an error wrapping fs.ErrNotExist.
func (s *BoltStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	l := storageLister{dir: storageDir(path), recursive: recursive}
	var isFile bool
	err := s.st.View(ctx, func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(boltBucket))
		if bk == nil {
			return nil
		}
		if path != "" && bk.Get([]byte(path)) != nil {
			isFile = true
			return nil
		}
		dir := []byte(l.dir)
		c := bk.Cursor()
		for k, _ := c.Seek(dir); k != nil && bytes.HasPrefix(k, dir); {
			if sub := l.add(string(k)); sub != "" {
				k, _ = c.Seek([]byte(sub + "0")) // '0' follows '/': past sub's keys
			} else {
				k, _ = c.Next()
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("acme: list %q: %w", path, err)
	}
	if len(l.keys) == 0 && path != "" && !isFile {
		return nil, fmt.Errorf("acme: list %q: %w", path, fs.ErrNotExist)
	}
	return l.keys, nil
}

// Stat describes key. A directory's Modified is the latest of the keys under
// it, its Size 0. A missing key is an error wrapping fs.ErrNotExist.
func (s *BoltStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	info := certmagic.KeyInfo{Key: key}
	found := key == ""
	err := s.st.View(ctx, func(tx *bolt.Tx) error {
		bk := tx.Bucket([]byte(boltBucket))
		if bk == nil {
			return nil
		}
		if v := bk.Get([]byte(key)); v != nil {
			size, err := boltSize(v)
			if err != nil {
				return err
			}
			found, info.IsTerminal, info.Size = true, true, size
			info.Modified = boltModTime(v)
			return nil
		}
		dir := []byte(storageDir(key))
		c := bk.Cursor()
		for k, v := c.Seek(dir); k != nil && bytes.HasPrefix(k, dir); k, v = c.Next() {
			found = true
			if m := boltModTime(v); m.After(info.Modified) {
				info.Modified = m
			}
		}
		return nil
	})
	if err != nil {
		return certmagic.KeyInfo{}, fmt.Errorf("acme: stat %q: %w", key, err)
	}
	if !found {
		return certmagic.KeyInfo{}, fmt.Errorf("acme: stat %q: %w", key, fs.ErrNotExist)
	}
	return info, nil
}

// Lock takes the named lock, waiting until it is free or ctx is done.
func (s *BoltStorage) Lock(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("acme: lock %q: %w", name, err)
	}
	l := s.ref(name)
	select {
	case l.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		s.unref(name, l)
		return fmt.Errorf("acme: lock %q: %w", name, ctx.Err())
	}
}

// TryLock takes the named lock if it is free, without waiting.
func (s *BoltStorage) TryLock(ctx context.Context, name string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("acme: lock %q: %w", name, err)
	}
	l := s.ref(name)
	select {
	case l.ch <- struct{}{}:
		return true, nil
	default:
		s.unref(name, l)
		return false, nil
	}
}

// Unlock releases the named lock. It is an error if the lock is not held.
func (s *BoltStorage) Unlock(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.locks[name]; l != nil {
		select {
		case <-l.ch:
			s.unrefLocked(name, l)
			return nil
		default:
		}
	}
	return fmt.Errorf("acme: unlock %q: not locked", name)
}

// RenewLockLease reports whether the named lock is held: in-process locks have
// no lease to extend, they last until Unlock.
func (s *BoltStorage) RenewLockLease(_ context.Context, name string, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.locks[name]; l != nil && len(l.ch) == 1 {
		return nil
	}
	return fmt.Errorf("acme: renew lock %q: not locked", name)
}

// ref returns the named lock, creating it, counted as used by the caller.
func (s *BoltStorage) ref(name string) *boltLock {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.locks[name]
	if l == nil {
		l = &boltLock{ch: make(chan struct{}, 1)}
		s.locks[name] = l
	}
	l.refs++
	return l
}

func (s *BoltStorage) unref(name string, l *boltLock) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unrefLocked(name, l)
}

func (s *BoltStorage) unrefLocked(name string, l *boltLock) {
	if l.refs--; l.refs == 0 {
		delete(s.locks, name)
	}
}

// boltHasUnder reports whether some key lies in directory key.
func boltHasUnder(bk *bolt.Bucket, key string) bool {
	dir := []byte(storageDir(key))
	k, _ := bk.Cursor().Seek(dir)
	return k != nil && bytes.HasPrefix(k, dir)
}

// boltValue is what Store writes for value at time now.
func boltValue(value []byte, now time.Time) []byte {
	header := uint64(now.UnixNano())
	if packed := packPEM(value); packed != nil {
		header |= boltPacked
		value = packed
	}
	v := make([]byte, 8+len(value))
	binary.BigEndian.PutUint64(v, header)
	copy(v[8:], value)
	return v
}

// boltContent is the value Store was given, read from v, a value of the
// bucket; it does not alias v.
func boltContent(v []byte) ([]byte, error) {
	if binary.BigEndian.Uint64(v)&boltPacked == 0 {
		return bytes.Clone(v[8:]), nil
	}
	return unpackPEM(v[8:])
}

// boltSize is the length of boltContent(v).
func boltSize(v []byte) (int64, error) {
	if binary.BigEndian.Uint64(v)&boltPacked == 0 {
		return int64(len(v) - 8), nil
	}
	return unpackedPEMSize(v[8:])
}

func boltModTime(v []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(v[:8])&^boltPacked))
}

// storageDir is the prefix of the keys in directory path: path + "/", or ""
// for the root.
func storageDir(path string) string {
	if path == "" {
		return ""
	}
	return path + "/"
}

// storageLister builds the answer of List from the keys under one directory,
// given in byte order, with certmagic.FileStorage's semantics: full keys, each
// directory named once before its contents and, unless recursive, only the
// direct children. Both storages use it.
//
// The keys in a directory d are exactly those starting with d + "/", one run in
// byte order, so d is new unless the previous key was in it.
type storageLister struct {
	dir       string // storageDir of the listed path
	recursive bool
	keys      []string
	prev      string // the key added last
}

// add records key, which starts with l.dir. Unless l is recursive, when key is
// in a child directory add returns that directory: the keys after it up to
// sub + "0" are in it too, and a caller may skip them.
func (l *storageLister) add(key string) (sub string) {
	for i := len(l.dir); i < len(key); i++ {
		if key[i] != '/' {
			continue
		}
		d := key[:i]
		if !storageInDir(l.prev, d) {
			l.keys = append(l.keys, d)
		}
		if !l.recursive {
			l.prev = key
			return d
		}
	}
	l.keys = append(l.keys, key)
	l.prev = key
	return ""
}

// storageInDir reports whether key lies in directory dir.
func storageInDir(key, dir string) bool {
	return len(key) > len(dir) && key[len(dir)] == '/' && key[:len(dir)] == dir
}
