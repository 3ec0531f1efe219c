package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func openTemp(t *testing.T, name string) (*Bolt, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	st, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, path
}

// keysOf returns bucket's keys and values.
func keysOf(t *testing.T, st *Bolt, bucket string) map[string]string {
	t.Helper()
	m := map[string]string{}
	if err := st.Scan(context.Background(), bucket, func(k, v []byte) error {
		m[string(k)] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestBackupWhileWriting: a backup taken while a writer commits pairs of
// records (one in each of two buckets per transaction) holds whole
// transactions only, and the writer was not held up by it.
func TestBackupWhileWriting(t *testing.T) {
	ctx := context.Background()
	st, path := openTemp(t, "live.db")
	if err := st.Apply(ctx, Put("plans", "free", []byte(`{}`))); err != nil {
		t.Fatal(err)
	}
	var written atomic.Int64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := 1; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			k := fmt.Sprintf("%08d", i)
			if err := st.Apply(ctx, Put("a", k, []byte(k)), Put("b", k, []byte(k))); err != nil {
				done <- err
				return
			}
			written.Store(int64(i))
		}
	}()
	waitUntil(t, func() bool { return written.Load() >= 200 })
	out := filepath.Join(filepath.Dir(path), "copy.db")
	size, err := st.Backup(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	atBackup := written.Load()
	waitUntil(t, func() bool { return written.Load() >= atBackup+200 })
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	fi, err := os.Stat(out)
	if err != nil || fi.Size() != size {
		t.Fatalf("backup size %d, file %v %v", size, fi, err)
	}
	bk, meta, err := OpenBackup(out)
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Close()
	if meta.Source != "bbolt" || meta.Format != BackupFormat || meta.Created.IsZero() {
		t.Fatalf("meta %+v", meta)
	}
	a, b := keysOf(t, bk, "a"), keysOf(t, bk, "b")
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("backup holds %d records in a and %d in b: not one transaction's view", len(a), len(b))
	}
	for i := 1; i <= len(a); i++ {
		k := fmt.Sprintf("%08d", i)
		if a[k] != k || b[k] != k {
			t.Fatalf("record %s missing from the backup of %d pairs", k, len(a))
		}
	}
	if live := len(keysOf(t, st, "a")); live <= len(a) {
		t.Fatalf("the store has %d pairs, the backup %d: writes stopped during the backup?", live, len(a))
	}
	if _, err := st.Backup(ctx, out); err == nil {
		t.Fatal("a backup over an existing file was accepted")
	}
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond) // polling interval, not synchronization
	}
}

func TestOpenBackupRefusesOtherFiles(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, []byte("this is not a bbolt file, only text long enough to look like one"), 0o600); err != nil {
		t.Fatal(err)
	}
	other, otherPath := openTemp(t, "other.db") // bbolt, but no registry
	if err := other.Apply(context.Background(), Put("x", "k", []byte("v"))); err != nil {
		t.Fatal(err)
	}
	other.Close()
	for _, path := range []string{junk, otherPath} {
		if _, _, err := OpenBackup(path); !errors.Is(err, ErrNotBackup) {
			t.Errorf("%s: %v, want ErrNotBackup", filepath.Base(path), err)
		}
	}
	if _, _, err := OpenBackup(filepath.Join(dir, "missing.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestRestoreFile(t *testing.T) {
	ctx := context.Background()
	src, srcPath := openTemp(t, "src.db")
	if err := src.Apply(ctx, Put("plans", "free", []byte(`{"name":"free"}`)), Put("orgs", "acme", []byte(`{"id":"acme"}`))); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(filepath.Dir(srcPath), "backup.db")
	if _, err := src.Backup(ctx, backup); err != nil {
		t.Fatal(err)
	}
	wantOrgs := keysOf(t, src, "orgs")

	// existing makes a store at path holding one org "old" (or nothing).
	existing := func(t *testing.T, withData bool) string {
		st, path := openTemp(t, "dst.db")
		if withData {
			if err := st.Apply(ctx, Put("orgs", "old", []byte(`{"id":"old"}`))); err != nil {
				t.Fatal(err)
			}
		}
		st.Close()
		return path
	}
	orgsAt := func(t *testing.T, path string) map[string]string {
		st, err := OpenIdle(path)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		return keysOf(t, st, "orgs")
	}
	tests := []struct {
		name     string
		dst      func(t *testing.T) string
		force    bool
		wantErr  error
		replaced bool
	}{
		{"into a new path", func(t *testing.T) string { return filepath.Join(t.TempDir(), "sub", "new.db") }, false, nil, false},
		{"into an empty store", func(t *testing.T) string { return existing(t, false) }, false, nil, true},
		{"over data without force", func(t *testing.T) string { return existing(t, true) }, false, ErrNotEmpty, false},
		{"over data with force", func(t *testing.T) string { return existing(t, true) }, true, nil, true},
		{"over a live store, even with force", func(t *testing.T) string {
			st, path := openTemp(t, "live.db") // held open: a running tollgate
			if err := st.Apply(ctx, Put("orgs", "old", []byte(`{"id":"old"}`))); err != nil {
				t.Fatal(err)
			}
			return path
		}, true, ErrLive, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := tt.dst(t)
			var before map[string]string
			if tt.wantErr != nil && !errors.Is(tt.wantErr, ErrLive) {
				before = orgsAt(t, dst)
			}
			replaced, err := RestoreFile(ctx, backup, dst, tt.force)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
				if before != nil && fmt.Sprint(orgsAt(t, dst)) != fmt.Sprint(before) {
					t.Fatal("a refused restore changed the store")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := orgsAt(t, dst); fmt.Sprint(got) != fmt.Sprint(wantOrgs) {
				t.Fatalf("restored orgs %v, want %v", got, wantOrgs)
			}
			if (replaced != "") != tt.replaced {
				t.Fatalf("replaced %q, want one: %v", replaced, tt.replaced)
			}
			if replaced != "" && tt.force {
				if got := orgsAt(t, replaced); got["old"] == "" {
					t.Fatalf("the replaced store kept at %s holds %v, not the old data", replaced, got)
				}
			}
			if left, _ := filepath.Glob(dst + ".restore-*"); len(left) > 0 {
				t.Fatalf("temporary files left: %v", left)
			}
		})
	}
	if _, err := RestoreFile(ctx, filepath.Join(t.TempDir(), "missing.db"), filepath.Join(t.TempDir(), "x.db"), true); err == nil {
		t.Fatal("a missing backup restored")
	}
}
