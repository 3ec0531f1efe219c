package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate-edge/tollgate/internal/certtest"
	"github.com/tollgate-edge/tollgate/sites"
	"github.com/tollgate-edge/tollgate/sites/content"
)

// TestH2SeesChangedFiles: a file changed or created on disk is served over
// HTTP/2 once sites.dir_revalidate has passed, as over HTTP/1.1 (h2 streams
// used to reach the cache with a zero request time, which never revalidates).
func TestH2SeesChangedFiles(t *testing.T) {
	const revalidate = 100 * time.Millisecond
	h := newHarnessWith(t, Config{}, Limits{}, func(o *Options) {
		o.Cache = content.NewCache(sites.Config{MaxCachedFile: 64 << 10, DirRevalidate: revalidate})
	})
	c, err := certtest.New(time.Hour, "www.example")
	must(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	go h.proxy.ServeTLS(ln, &tls.Config{Certificates: []tls.Certificate{c.TLS}, NextProtos: []string{"h2", "http/1.1"}})
	th := &tlsHarness{harness: h, addr: ln.Addr().String(), pool: c.Pool()}

	for _, proto := range []string{"h2", "http/1.1"} {
		t.Run(proto, func(t *testing.T) {
			client := th.client(proto)
			get := func(path string) (int, string) {
				resp, err := client.Get("https://www.example" + path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			name := "fresh-" + map[string]string{"h2": "h2", "http/1.1": "h1"}[proto] + ".html"
			file := filepath.Join(h.root, name)
			if status, _ := get("/" + name); status != 404 {
				t.Fatalf("before the file exists: %d", status)
			}
			must(t, os.WriteFile(file, []byte("one"), 0o644))
			wait := func(want string) {
				t.Helper()
				deadline := time.Now().Add(revalidate + 2*time.Second)
				for {
					status, body := get("/" + name)
					if status == 200 && body == want {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("after %v: %d %q, want %q", revalidate+2*time.Second, status, body, want)
					}
					time.Sleep(revalidate / 4) // polling interval
				}
			}
			wait("one")
			later := time.Now().Add(time.Minute) // a new modification time, whatever the clock's resolution
			must(t, os.WriteFile(file, []byte("two, longer"), 0o644))
			must(t, os.Chtimes(file, later, later))
			wait("two, longer")
		})
	}
}
