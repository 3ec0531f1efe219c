package content

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/sites"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDirSourceGet(t *testing.T) {
	parent := t.TempDir()
	root := filepath.Join(parent, "site")
	big := strings.Repeat("x", 3000)
	writeFiles(t, root, map[string]string{
		"index.html":           "<h1>home</h1>",
		"about.html":           "about",
		"docs/index.html":      "docs",
		"style.css":            strings.Repeat("body{color:red}\n", 100),
		"data.bin":             "\x00\x01\x02",
		"big.txt":              big,
		".git/config":          "secret",
		".env":                 "secret",
		".well-known/security": "contact",
	})
	writeFiles(t, parent, map[string]string{"outside.txt": "secret"})
	if err := os.Symlink(filepath.Join(parent, "outside.txt"), filepath.Join(root, "escape.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("about.html", filepath.Join(root, "inside.html")); err != nil {
		t.Fatal(err)
	}
	c := NewCache(sites.Config{CacheBytes: 1 << 20, MaxCachedFile: 2048})
	src, err := c.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })

	tests := []struct {
		path, body, ctype string
		err               error
	}{
		{path: "/", body: "<h1>home</h1>", ctype: "text/html; charset=utf-8"},
		{path: "/about", body: "about"},
		{path: "/about.html", body: "about"},
		{path: "/docs/", body: "docs"},
		{path: "/docs", err: ErrIsDir},
		{path: "/style.css", ctype: "text/css; charset=utf-8"},
		{path: "/data.bin", ctype: "application/octet-stream"},
		{path: "/inside.html", body: "about"},
		{path: "/missing", err: ErrFileNotFound},
		{path: "/escape.txt", err: ErrFileNotFound},
		{path: "/../outside.txt", err: ErrFileNotFound},
		{path: "/.git/config", err: ErrFileNotFound},
		{path: "/.env", err: ErrFileNotFound},
		{path: "/.well-known/security", body: "contact"},
		{path: "/index.html/x", err: ErrFileNotFound},
		{path: "/a\x00b", err: ErrBadPath},
		{path: "relative", err: ErrBadPath},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			for range 2 { // the second time comes from the cache
				f, err := src.Get([]byte(tt.path))
				if tt.err != nil {
					if !errors.Is(err, tt.err) {
						t.Fatalf("Get(%q) err = %v; want %v", tt.path, err, tt.err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("Get(%q): %v", tt.path, err)
				}
				if tt.body != "" && string(f.Body) != tt.body {
					t.Fatalf("body = %q; want %q", f.Body, tt.body)
				}
				if tt.ctype != "" && string(f.ContentType) != tt.ctype {
					t.Fatalf("content type = %q; want %q", f.ContentType, tt.ctype)
				}
				if len(f.ETag) < 3 || f.ETag[0] != '"' || len(f.LastModified) == 0 {
					t.Fatalf("validators missing: etag %q last-modified %q", f.ETag, f.LastModified)
				}
			}
		})
	}

	css, _ := src.Get([]byte("/style.css"))
	if css.Gzip == nil || css.Brotli == nil || len(css.Gzip) >= len(css.Body) {
		t.Fatalf("style.css not precompressed: gzip %d br %d body %d", len(css.Gzip), len(css.Brotli), len(css.Body))
	}
	bin, _ := src.Get([]byte("/data.bin"))
	if bin.Gzip != nil {
		t.Fatal("binary data should not be compressed")
	}
	f, err := src.Get([]byte("/big.txt"))
	if err != nil || f.Body != nil || f.Size != int64(len(big)) {
		t.Fatalf("big file: body %d bytes, size %d, err %v; want streamed", len(f.Body), f.Size, err)
	}
	rc, err := f.Open()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.ReadFrom(rc)
	rc.Close()
	if buf.String() != big {
		t.Fatal("streamed body differs")
	}
}

func TestDirSourceRevalidates(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"a.txt": "one"})
	c := NewCache(sites.Config{DirRevalidate: time.Nanosecond})
	src, err := c.OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	first, _ := src.Get([]byte("/a.txt"))
	if string(first.Body) != "one" {
		t.Fatalf("body %q", first.Body)
	}
	// Unchanged (its modification time has a fraction of a second, as
	// almost every file's has): one stat, not a read. Each revalidation read
	// the file again (and compressed it again), and failed with a 500 while
	// the process was out of descriptors.
	sub := time.Date(2026, 1, 2, 3, 4, 5, 678_000_000, time.UTC)
	if err := os.Chtimes(filepath.Join(root, "a.txt"), sub, sub); err != nil {
		t.Fatal(err)
	}
	first, _ = src.Get([]byte("/a.txt"))
	misses := c.Stats().Misses
	if f, _ := src.Get([]byte("/a.txt")); f != first || c.Stats().Misses != misses {
		t.Fatalf("an unchanged file was read again on revalidation (%d misses, want %d)", c.Stats().Misses, misses)
	}
	// Same size, new mtime in the same second: the stat check must notice.
	writeFiles(t, root, map[string]string{"a.txt": "two"})
	later := sub.Add(time.Millisecond)
	os.Chtimes(filepath.Join(root, "a.txt"), later, later)
	if f, _ := src.Get([]byte("/a.txt")); string(f.Body) != "two" {
		t.Fatalf("after edit: body %q; want two", f.Body)
	}
	// A remembered miss is forgotten once stale.
	if _, err := src.Get([]byte("/b.txt")); !errors.Is(err, ErrFileNotFound) {
		t.Fatal(err)
	}
	writeFiles(t, root, map[string]string{"b.txt": "now here"})
	if f, err := src.Get([]byte("/b.txt")); err != nil || string(f.Body) != "now here" {
		t.Fatalf("new file: %v", err)
	}
}

func TestCacheBudget(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{}
	for i := range 50 {
		files[string(rune('a'+i%26))+strings.Repeat("x", i)+".bin"] = strings.Repeat("\x00", 1000)
	}
	writeFiles(t, root, files)
	c := NewCache(sites.Config{CacheBytes: 10_000, MaxCachedFile: 5000, DirRevalidate: time.Hour})
	src, _ := c.OpenDir(root)
	for name := range files {
		if _, err := src.Get([]byte("/" + name)); err != nil {
			t.Fatal(err)
		}
	}
	st := c.Stats()
	if st.Bytes > 10_000 || st.Evictions == 0 || st.Misses != 50 {
		t.Fatalf("stats %+v: want bytes <= budget and evictions", st)
	}
	src.Close()
	if st := c.Stats(); st.Bytes != 0 || st.Entries != 0 {
		t.Fatalf("after Close: %+v; want an empty cache", st)
	}
}

func TestDirUsage(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"a": "12345", "d/b": "123", ".git/x": "12"})
	os.Symlink("/etc/passwd", filepath.Join(root, "link"))
	n, err := DirUsage(root)
	if err != nil || n != 10 {
		t.Fatalf("DirUsage = %d, %v; want 10", n, err)
	}
	if _, err := DirUsage(filepath.Join(root, "missing")); err == nil {
		t.Fatal("DirUsage of a missing directory succeeded")
	}
}
