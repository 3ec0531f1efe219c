//go:build !linux

package store

import "context"

// Evict does nothing outside Linux: the file's pages stay mapped until the
// kernel reclaims them.
func (b *Bolt) Evict(ctx context.Context) error { return ctx.Err() }
