// Package storetest opens a throw-away bbolt store for tests.
package storetest

import (
	"path/filepath"
	"testing"

	"github.com/tollgate-edge/tollgate/store"
)

// Open opens a bbolt store in a temporary directory, closed when the test
// ends.
func Open(tb testing.TB) *store.Bolt {
	tb.Helper()
	st, err := store.Open(store.Config{Path: filepath.Join(tb.TempDir(), "tollgate.db")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}
