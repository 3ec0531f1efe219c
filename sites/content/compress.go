package content

// The compressed variants of cached files.

import (
	"bytes"
	"compress/gzip"
	"io"
	"strings"
	"sync"
)

// worthCompressing reports whether a compressed variant is kept: it must save
// more than a tenth of the body, else it is not worth its cache memory.
func worthCompressing(compressed, body int) bool { return compressed < body-body/10 }

// gzipWriters hold compress/gzip writers at level 6 (gzip -6); each carries
// about 800 KiB of match state, so they are reused.
var gzipWriters = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(io.Discard, gzip.DefaultCompression)
	return w
}}

// appendGzip appends body compressed as "gzip -6" does. The standard
// library's level 6 is used rather than klauspost/compress's (fasthttp's),
// whose level 6 stores text without repeated strings, such as base64,
// uncompressed where Huffman coding alone saves a quarter.
func appendGzip(dst, body []byte) []byte {
	buf := bytes.NewBuffer(dst)
	w := gzipWriters.Get().(*gzip.Writer)
	w.Reset(buf)
	w.Write(body) // a bytes.Buffer does not fail
	w.Close()
	w.Reset(io.Discard) // do not keep buf alive in the pool
	gzipWriters.Put(w)
	return buf.Bytes()
}

// compressible reports whether a content type is worth compressing.
func compressible(ctype string) bool {
	ct, _, _ := strings.Cut(ctype, ";")
	ct = strings.TrimSpace(ct)
	switch {
	case strings.HasPrefix(ct, "text/"):
		return true
	case strings.HasSuffix(ct, "+json"), strings.HasSuffix(ct, "+xml"):
		return true
	}
	switch ct {
	case "application/javascript", "application/json", "application/xml", "application/wasm",
		"application/manifest+json", "image/svg+xml", "application/x-javascript", "font/ttf", "font/otf":
		return true
	}
	return false
}
