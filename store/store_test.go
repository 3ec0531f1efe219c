package store

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBolt(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "t.db")
	b, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(ctx, Put("a", "k1", []byte("v1")), Put("a", "k2", []byte("v2")), Put("b", "x", []byte("y"))); err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(ctx, Delete("a", "k1"), Delete("a", "missing")); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	if err := b.Scan(ctx, "a", func(k, v []byte) error { got[string(k)] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got["k2"] != "v2" {
		t.Fatalf("scan = %v", got)
	}
	if err := b.Scan(ctx, "none", func(k, v []byte) error { t.Fatal("empty bucket called fn"); return nil }); err != nil {
		t.Fatal(err)
	}
	// An op on an empty bucket name fails, and the whole batch with it.
	if err := b.Apply(ctx, Put("a", "k3", []byte("v3")), Put("", "k", []byte("v"))); err == nil {
		t.Fatal("want an error for an empty bucket name")
	}
	if err := b.Scan(ctx, "a", func(k, v []byte) error {
		if string(k) == "k3" {
			t.Fatal("a failed batch was partly applied")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// A second process (here: a second Open) finds the file locked.
	_, err = Open(Config{Path: path, OpenTimeout: 50 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second open: %v; want a lock error", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	var nilStore *Bolt
	if err := nilStore.Close(); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	b2, _ := Open(Config{Path: path})
	defer b2.Close()
	if err := b2.Apply(cancelled, Put("a", "z", []byte("z"))); err == nil {
		t.Fatal("Apply with a cancelled context succeeded")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "store.path") {
		t.Fatalf("empty path: %v", err)
	}
	c := Config{Path: "x", OpenTimeout: -1}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "store.open_timeout") {
		t.Fatalf("negative timeout: %v", err)
	}
}
