//go:build !linux

package meter

import "os"

// reserve allocates size bytes of disk for f by writing zeros.
func reserve(f *os.File, size int64) error { return writeZeros(f, size) }
