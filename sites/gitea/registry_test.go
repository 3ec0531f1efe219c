package gitea

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/store"
)

// newRegistry opens a registry on a fresh bbolt file, for the domain
// claims. It returns the file's path.
func newRegistry(t *testing.T) (*sites.Registry, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "reg.db")
	st, err := store.Open(store.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r, err := sites.New(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	return r, path
}

func mustNoErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ownNames are the reserved names of these tests, as tollgate serve sets
// them from its config.
var ownNames = []sites.ReservedName{
	{Name: "pages.test", Subdomains: true, Key: "sites.pages_domain"},
	{Name: "billing.test", Key: "billing.stripe.webhook_host"},
}
