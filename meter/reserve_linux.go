package meter

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// reserve allocates size bytes of disk for f (fallocate), writing zeros
// where the filesystem cannot allocate without writing.
func reserve(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return writeZeros(f, size)
	}
	if err != nil {
		return err
	}
	return f.Sync()
}
