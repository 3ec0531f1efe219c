package content

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// TestGzipAtLeastGzip6: the gzip variant of a cached file is no larger than
// compress/gzip's level 6 ("gzip -6") makes it, decodes to the file, and is
// kept whenever it saves more than a tenth: a base64 text, which only
// Huffman coding shrinks (by about a quarter), included.
func TestGzipAtLeastGzip6(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	raw := make([]byte, 12000)
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	b64 := base64.StdEncoding.EncodeToString(raw)
	var wrapped strings.Builder
	for i := 0; i < len(b64); i += 76 {
		wrapped.WriteString(b64[i:min(i+76, len(b64))] + "\n")
	}
	var html, js, json strings.Builder
	for i := range 300 {
		fmt.Fprintf(&html, "<li class=\"item-%d\"><a href=\"/posts/%d\">Post number %d</a></li>\n", i%7, r.IntN(1e6), i)
		fmt.Fprintf(&js, "function f%d(a, b) { return a * %d + b - %d; }\n", i, r.IntN(1000), r.IntN(1000))
		fmt.Fprintf(&json, "{\"id\": %d, \"name\": \"user%d\", \"score\": %.3f},\n", i, r.IntN(1e5), r.Float64())
	}
	for _, tt := range []struct{ name, body string }{
		{"data.txt", wrapped.String()},
		{"short.txt", wrapped.String()[:77*6]},
		{"index.html", html.String()},
		{"app.js", js.String()},
		{"data.json", "[" + json.String() + "{}]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := []byte(tt.body)
			var ref bytes.Buffer
			w, err := gzip.NewWriterLevel(&ref, 6)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(body)
			w.Close()
			if ref.Len() >= len(body)*9/10 {
				t.Fatalf("gzip -6 makes %d of %d bytes: not a case where compression pays", ref.Len(), len(body))
			}
			f := newFile(tt.name, int64(len(body)), time.Unix(1e9, 0), "tag", body)
			if f.Gzip == nil {
				t.Fatalf("no gzip variant; gzip -6 saves %.0f%%", 100*(1-float64(ref.Len())/float64(len(body))))
			}
			if len(f.Gzip) > ref.Len() {
				t.Errorf("gzip variant %d bytes; gzip -6 makes %d", len(f.Gzip), ref.Len())
			}
			zr, err := gzip.NewReader(bytes.NewReader(f.Gzip))
			if err != nil {
				t.Fatal(err)
			}
			plain, err := io.ReadAll(zr)
			if err != nil || !bytes.Equal(plain, body) {
				t.Fatalf("gzip variant decodes to %d bytes (%v); want the %d of the file", len(plain), err, len(body))
			}
		})
	}
}

// TestWorthCompressing: a variant is kept when it saves more than a tenth.
func TestWorthCompressing(t *testing.T) {
	for _, tt := range []struct {
		compressed, body int
		want             bool
	}{
		{77, 100, true}, // gzip -6 on base64 text
		{89, 100, true},
		{90, 100, false},
		{100, 100, false},
		{120, 100, false},
		{9000, 10000, false},
		{8999, 10000, true},
	} {
		if got := worthCompressing(tt.compressed, tt.body); got != tt.want {
			t.Errorf("worthCompressing(%d, %d) = %v; want %v", tt.compressed, tt.body, got, tt.want)
		}
	}
}
