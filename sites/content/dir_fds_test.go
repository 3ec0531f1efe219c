package content

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tollgate-edge/tollgate/sites"
)

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd on this system") // Linux only: the build and CI run there
	}
	return len(fds)
}

// TestDirSourcesHoldNoDescriptor: a directory site holds no file
// descriptor between requests. Before, each held its directory open: a node
// with 100,000 directory sites ran out of descriptors and could no longer
// accept connections (found registering 100,000 sites through the admin
// API: "accept4: too many open files").
func TestDirSourcesHoldNoDescriptor(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("<h1>hi</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.bin")
	if err := os.WriteFile(big, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	c := NewCache(sites.Config{MaxCachedFile: 4 << 10})
	before := openFDs(t)
	var srcs []*DirSource
	for range 500 {
		d, err := c.OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, d)
		if f, err := d.Get([]byte("/")); err != nil || string(f.Body) != "<h1>hi</h1>" {
			t.Fatalf("GET /: %v", err)
		}
		f, err := d.Get([]byte("/big.bin"))
		if err != nil {
			t.Fatal(err)
		}
		r, err := f.Open()
		if err != nil {
			t.Fatalf("opening a file too large to cache: %v", err)
		}
		r.Close()
	}
	if grew := openFDs(t) - before; grew > 10 {
		t.Errorf("500 directory sites hold %d more descriptors, want none", grew)
	}
	for _, d := range srcs {
		d.Close()
	}
	if _, err := c.OpenDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("OpenDir of a missing directory succeeded")
	}
	if _, err := c.OpenDir(big); err == nil {
		t.Error("OpenDir of a file succeeded")
	}
}
