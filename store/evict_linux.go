package store

import (
	"context"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Evict drops the file's pages from the process's resident memory. bbolt
// reads through a read-only shared map of the file, so a scan of every
// record (the registry's start) leaves the whole file counted in the
// process's RSS; madvise(MADV_DONTNEED) unmaps those pages, the kernel's
// page cache keeps them, and a later read faults its page back in. It runs
// in a read transaction, which keeps bbolt from remapping meanwhile.
func (b *Bolt) Evict(ctx context.Context) error {
	return b.View(ctx, func(tx *bolt.Tx) error {
		size := tx.Size()
		if size <= 0 {
			return nil
		}
		_, _, errno := unix.Syscall(unix.SYS_MADVISE, b.db.Info().Data, uintptr(size), unix.MADV_DONTNEED)
		if errno != 0 {
			return errno
		}
		return nil
	})
}
