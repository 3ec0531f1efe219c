package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/tollgate-edge/tollgate/meter"
	"github.com/tollgate-edge/tollgate/sites"
)

// measureStorage sets every dir site's stored bytes on its meter counters
// now and then every interval until ctx ends; the meter integrates them into
// storage_byte_seconds. Upstream sites store nothing here.
func measureStorage(ctx context.Context, reg *sites.Registry, m *meter.Meter, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		snap := reg.Snapshot()
		for _, s := range snap.Sites {
			if s.Source.Type != sites.SourceDir {
				continue
			}
			n, err := sites.DirUsage(s.Source.Path)
			if err != nil {
				log.Warn("measuring site storage", slog.String("site", s.ID), slog.Any("err", err))
			}
			m.Counters(s.Org, s.ID, sites.SourceDir).SetStorage(n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
