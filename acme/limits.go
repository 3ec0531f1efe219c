package acme

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// issuanceLog enforces org_certs_per_day and certs_per_hour. Every new
// certificate about to be requested from the CA is recorded in the
// certificate storage under issuedPrefix, so the limits hold across restarts
// and, on Redis, across the nodes of a cluster (two nodes checking at the
// same instant may each take the last slot: the overshoot is bounded by the
// number of nodes). Records older than a day are deleted as they are read.
//
// It is consulted only when certmagic is about to contact the CA (its
// cert_obtaining event), never during ordinary handshakes.
type issuanceLog struct {
	storage    certmagic.Storage
	perOrgDay  int // < 0: no cap
	globalHour int // < 0: no cap
	now        func() time.Time

	mu sync.Mutex // one check-and-record at a time in this process
}

// issuedPrefix is where issuance records live in the certificate storage:
// issued/{unix nanos}_{name}_{org}. Hostnames contain no "_", so the key
// splits unambiguously.
const issuedPrefix = "tollgate/issued"

// reserve records an issuance of name for org, or returns a *refusal when a
// limit is reached.
func (l *issuanceLog) reserve(ctx context.Context, org, name string) (reason string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	keys, err := l.storage.List(ctx, issuedPrefix, false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("acme: reading issuance records: %w", err)
	}
	orgDay, lastHour := 0, 0
	for _, k := range keys {
		at, _, recOrg, ok := parseIssued(k)
		if !ok {
			continue
		}
		age := now.Sub(at)
		if age > 24*time.Hour {
			_ = l.storage.Delete(ctx, k) // best effort; read again next time
			continue
		}
		if recOrg == org {
			orgDay++
		}
		if age <= time.Hour {
			lastHour++
		}
	}
	switch {
	case l.perOrgDay >= 0 && orgDay >= l.perOrgDay:
		return reasonOrgLimit, nil
	case l.globalHour >= 0 && lastHour >= l.globalHour:
		return reasonGlobalLimit, nil
	}
	key := fmt.Sprintf("%s/%020d_%s_%s", issuedPrefix, now.UnixNano(), name, org)
	if err := l.storage.Store(ctx, key, nil); err != nil {
		return "", fmt.Errorf("acme: recording issuance: %w", err)
	}
	return "", nil
}

func parseIssued(key string) (at time.Time, name, org string, ok bool) {
	base := key[strings.LastIndexByte(key, '/')+1:]
	ts, rest, ok1 := strings.Cut(base, "_")
	name, org, ok2 := strings.Cut(rest, "_")
	n, err := strconv.ParseInt(ts, 10, 64)
	if !ok1 || !ok2 || err != nil {
		return time.Time{}, "", "", false
	}
	return time.Unix(0, n), name, org, true
}
