package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// siteFile is one generated file of the benchmark site.
type siteFile struct {
	Name string
	Size int
}

// The benchmark site: the same bytes for every server. Text, so that a
// server that compresses would be noticed by the size check, and with no
// repetition a compressor could exploit.
var siteFiles = []siteFile{
	{"1k.txt", 1 << 10},
	{"4k.txt", 4 << 10},
	{"64k.txt", 64 << 10},
	{"1m.txt", 1 << 20},
}

const indexHTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>peerbench</title></head>
<body><h1>peerbench</h1><p>The same files for every server.</p></body></html>
`

// writeSite writes index.html and siteFiles into dir, from a fixed seed so
// every run serves the same bytes.
func writeSite(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(indexHTML), 0o644); err != nil {
		return err
	}
	rng := rand.New(rand.NewChaCha8([32]byte{'p', 'e', 'e', 'r', 'b', 'e', 'n', 'c', 'h'}))
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n"
	for _, f := range siteFiles {
		b := make([]byte, f.Size)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if err := os.WriteFile(filepath.Join(dir, f.Name), b, 0o644); err != nil {
			return fmt.Errorf("content: %w", err)
		}
	}
	return nil
}
