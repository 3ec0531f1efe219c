package store

import (
	"bytes"
	"context"

	bolt "go.etcd.io/bbolt"
)

// Get returns a copy of the value of key in bucket, nil when either is
// missing. Billing reads the hooks it fired with it, and Stripe its report
// cursors and processed event ids.
func (b *Bolt) Get(ctx context.Context, bucket, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var v []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		if bk := tx.Bucket([]byte(bucket)); bk != nil {
			v = bytes.Clone(bk.Get([]byte(key)))
		}
		return nil
	})
	return v, err
}
