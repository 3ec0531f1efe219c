package store

import (
	"context"
	"path/filepath"
	"testing"
)

func TestGet(t *testing.T) {
	ctx := context.Background()
	b, err := Open(Config{Path: filepath.Join(t.TempDir(), "t.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Apply(ctx, Put("a", "k", []byte("v"))); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ bucket, key, want string }{{"a", "k", "v"}, {"a", "other", ""}, {"none", "k", ""}} {
		v, err := b.Get(ctx, tc.bucket, tc.key)
		if err != nil || string(v) != tc.want || (tc.want == "") != (v == nil) {
			t.Errorf("Get(%s, %s) = %q, %v; want %q", tc.bucket, tc.key, v, err, tc.want)
		}
	}
}
