package proxy

import (
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
)

// TestUpstreamTrailers: the trailer fields an upstream announces in Trailer
// and sends after its chunked body reach an HTTP/1.1 client in the chunked
// trailer section and an HTTP/2 client in a HEADERS frame with END_STREAM
// after the DATA frames (http2.Transport fills resp.Trailer only from
// that); fields the upstream did not announce, hop-by-hop ones and the
// server's own (Server) do not, nor does any trailer field appear among the
// response headers. A client's "TE: trailers" reaches the upstream, alone.
func TestUpstreamTrailers(t *testing.T) {
	var sawTE atomic.Value
	tests := []struct {
		name     string
		upstream func(t *testing.T) string
		want     map[string]string // trailers with a value
	}{
		{
			name: "net/http upstream, gRPC-web style",
			upstream: func(t *testing.T) string {
				return newTestUpstream(t, func(w http.ResponseWriter, r *http.Request) {
					sawTE.Store(strings.Join(r.Header.Values("Te"), "|"))
					w.Header().Set("Trailer", "X-Checksum, Grpc-Status")
					io.WriteString(w, "hello")
					w.(http.Flusher).Flush() // chunked, the body on its way
					w.Header().Set("X-Checksum", "abc")
					w.Header().Set("Grpc-Status", "0")
				}).URL
			},
			want: map[string]string{"X-Checksum": "abc", "Grpc-Status": "0"},
		},
		{
			name: "announced, unannounced, hop-by-hop and server fields",
			upstream: func(t *testing.T) string {
				return rawUpstream(t, func(c net.Conn) {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-Hop\r\n"+
						"Trailer: X-Checksum, X-Multi, X-Hop, Upgrade, Server\r\n\r\n"+
						"5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Multi: 1\r\nX-Multi: 2\r\nX-Unannounced: 1\r\n"+
						"X-Hop: 1\r\nUpgrade: h2c\r\nServer: evil\r\n\r\n")
				})
			},
			want: map[string]string{"X-Checksum": "abc", "X-Multi": "1, 2"},
		},
		{
			name: "announced, never sent",
			upstream: func(t *testing.T) string {
				return rawUpstream(t, func(c net.Conn) {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"+
						"5\r\nhello\r\n0\r\n\r\n")
				})
			},
			want: map[string]string{},
		},
		{
			name: "announced, and in the header section too: the trailer section wins",
			upstream: func(t *testing.T) string {
				return rawUpstream(t, func(c net.Conn) {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nX-Checksum: early\r\n\r\n"+
						"5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n")
				})
			},
			want: map[string]string{"X-Checksum": "abc"},
		},
		{
			name: "Content-Length body",
			upstream: func(t *testing.T) string {
				return newTestUpstream(t, func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Length", "5")
					io.WriteString(w, "hello")
				}).URL
			},
			want: map[string]string{},
		},
	}
	for _, tt := range tests {
		h := newTLSHarness(t, tt.upstream(t))
		for _, proto := range []string{"h1", "h2"} {
			t.Run(tt.name+"/"+proto, func(t *testing.T) {
				sawTE.Store("")
				req, err := http.NewRequest("GET", "https://app.example/", nil)
				must(t, err)
				req.Header.Set("TE", "trailers")
				resp, err := h.client(proto).Do(req)
				must(t, err)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				must(t, err)
				if resp.StatusCode != 200 || string(body) != "hello" {
					t.Fatalf("%d %q, want 200 hello", resp.StatusCode, body)
				}
				got := map[string]string{}
				for k, v := range resp.Trailer {
					if len(v) > 0 {
						got[k] = strings.Join(v, ", ")
					}
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("trailers %v, want %v", got, tt.want)
				}
				for k := range tt.want {
					if v := resp.Header.Values(k); len(v) > 0 {
						t.Errorf("trailer field %s among the headers: %q", k, v)
					}
				}
				if te := sawTE.Load().(string); strings.HasPrefix(tt.name, "net/http") && te != "trailers" {
					t.Errorf("upstream got TE %q, want trailers", te)
				}
			})
		}
	}
}
