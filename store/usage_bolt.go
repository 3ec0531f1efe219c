package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"time"

	"github.com/tollgate-edge/tollgate/meter"
	bolt "go.etcd.io/bbolt"
)

// Buckets of the bbolt usage store (see BoltUsage).
const (
	bktApplied  = "meter_applied"
	bktOrgHour  = "usage_org_hour"
	bktSiteHour = "usage_site_hour"
	bktPeriod   = "usage_period"
	bktSpool    = "meter_spool" // the spool's layout before the outbox (UsageSpool moves it)
	bktNode     = "meter_node"
)

// BoltUsage stores usage in the bbolt file: the meter's sink of the embedded
// default. (With Redis, the meter's local spool is UsageSpool, in the same
// file.) It is safe for concurrent use.
//
// # Layout
//
// Keys join their parts with "\x00" (ids never contain it). VALUES are
// meter.Values in 32 bytes: egress, requests, ingress and storage
// byte-seconds, each an int64 big-endian. Hours are UTC, periods UTC months.
//
//	meter_applied    NODE\x00ORG                 last applied Seq (uint64 big-endian)
//	usage_org_hour   ORG\x00YYYYMMDDHH           VALUES of the org's hour
//	usage_site_hour  ORG\x00SITE\x00YYYYMMDDHH   VALUES of one site's hour
//	usage_period     YYYY-MM\x00ORG              VALUES of the org's period
//	meter_spool      Seq (uint64 big-endian)     a spooled meter.Batch as JSON, as older
//	                                             tollgates left it (UsageSpool moves it)
//	meter_node       "id"                        this node's id (Bolt.NodeID)
type BoltUsage struct {
	st *Bolt
}

var (
	_ meter.Sink   = (*BoltUsage)(nil)
	_ meter.Reader = (*BoltUsage)(nil)
)

// NewBoltUsage uses st for usage.
func NewBoltUsage(st *Bolt) *BoltUsage { return &BoltUsage{st: st} }

// valuesLen is the size of the binary form of meter.Values.
const valuesLen = 32

func appendValues(dst []byte, v meter.Values) []byte {
	for _, n := range [4]int64{v.EgressBytes, v.Requests, v.IngressBytes, v.StorageByteSeconds} {
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return dst
}

func decodeValues(b []byte) meter.Values {
	if len(b) < valuesLen {
		return meter.Values{}
	}
	u := func(i int) int64 { return int64(binary.BigEndian.Uint64(b[i*8:])) }
	return meter.Values{EgressBytes: u(0), Requests: u(1), IngressBytes: u(2), StorageByteSeconds: u(3)}
}

// hourKey is the hour bucket as it appears in keys (bbolt and Redis):
// "2006010215".
func hourKey(t time.Time) string { return meter.Hour(t).Format("2006010215") }

func usageKey(parts ...string) []byte {
	var b []byte
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	return b
}

func usageBucket(tx *bolt.Tx, name string) (*bolt.Bucket, error) {
	return tx.CreateBucketIfNotExists([]byte(name))
}

func addTo(b *bolt.Bucket, k []byte, v meter.Values) error {
	cur := decodeValues(b.Get(k))
	cur.Add(v)
	return b.Put(k, appendValues(make([]byte, 0, valuesLen), cur))
}

// Apply adds a batch's deltas in one transaction, skipping each org for
// which this node already applied a batch with the same or a later Seq.
func (s *BoltUsage) Apply(ctx context.Context, b *meter.Batch) error {
	hour, period := hourKey(b.Time), meter.Period(b.Time)
	return s.st.Update(ctx, func(tx *bolt.Tx) error {
		applied, err := usageBucket(tx, bktApplied)
		if err != nil {
			return err
		}
		orgHour, _ := usageBucket(tx, bktOrgHour)
		siteHour, _ := usageBucket(tx, bktSiteHour)
		periods, _ := usageBucket(tx, bktPeriod)
		seq := binary.BigEndian.AppendUint64(nil, b.Seq)
		skip := map[string]bool{}
		for _, d := range b.Deltas {
			done, seen := skip[d.Org]
			if !seen {
				last := applied.Get(usageKey(b.Node, d.Org))
				done = len(last) == 8 && binary.BigEndian.Uint64(last) >= b.Seq
				skip[d.Org] = done
				if !done {
					if err := applied.Put(usageKey(b.Node, d.Org), seq); err != nil {
						return err
					}
				}
			}
			if done {
				continue
			}
			for _, put := range []struct {
				b *bolt.Bucket
				k []byte
			}{{orgHour, usageKey(d.Org, hour)}, {siteHour, usageKey(d.Org, d.Site, hour)}, {periods, usageKey(period, d.Org)}} {
				if err := addTo(put.b, put.k, d.Values); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Hourly returns the org's hour buckets in [from, to), oldest first; hours
// without usage are absent.
func (s *BoltUsage) Hourly(ctx context.Context, org string, from, to time.Time) ([]meter.Point, error) {
	var out []meter.Point
	end := meter.Hour(to)
	if end.Before(to) {
		end = end.Add(time.Hour) // the bucket holding `to` starts before it: include it
	}
	lo, hi := usageKey(org, hourKey(from)), usageKey(org, hourKey(end))
	err := s.st.View(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bktOrgHour))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(lo); k != nil && bytes.Compare(k, hi) < 0; k, v = c.Next() {
			h := k[bytes.LastIndexByte(k, 0)+1:]
			if !bytes.HasPrefix(k, append([]byte(org), 0)) {
				break
			}
			t, err := time.Parse("2006010215", string(h))
			if err != nil {
				continue
			}
			out = append(out, meter.Point{Start: t, Values: decodeValues(v)})
		}
		return nil
	})
	return out, err
}

// PeriodTotals lists every org's totals for a period ("YYYY-MM"), by org id,
// starting after the org id `after`, at most limit; next is the cursor of the
// following page, "" on the last.
func (s *BoltUsage) PeriodTotals(ctx context.Context, period, after string, limit int) ([]meter.OrgTotal, string, error) {
	var out []meter.OrgTotal
	next := ""
	prefix := append([]byte(period), 0)
	err := s.st.View(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bktPeriod))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		start := prefix
		if after != "" {
			start = append(usageKey(period, after), 0) // the first key past `after`
		}
		for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			org := string(k[len(prefix):])
			if len(out) == limit {
				next = out[len(out)-1].Org
				break
			}
			out = append(out, meter.OrgTotal{Org: org, Values: decodeValues(v)})
		}
		return nil
	})
	return out, next, err
}

// NodeID returns this installation's node id (the meter's Node), created on
// first use and kept in the bbolt file, so it survives restarts. Once
// created it is only read, so a node restarts on a full disk.
func (b *Bolt) NodeID(ctx context.Context) (string, error) {
	var id string
	err := b.View(ctx, func(tx *bolt.Tx) error {
		if bk := tx.Bucket([]byte(bktNode)); bk != nil {
			id = string(bk.Get([]byte("id")))
		}
		return nil
	})
	if err != nil || id != "" {
		return id, err
	}
	err = b.Update(ctx, func(tx *bolt.Tx) error {
		bk, err := usageBucket(tx, bktNode)
		if err != nil {
			return err
		}
		if v := bk.Get([]byte("id")); len(v) > 0 {
			id = string(v)
			return nil
		}
		var r [8]byte
		if _, err := rand.Read(r[:]); err != nil {
			return err
		}
		id = hex.EncodeToString(r[:])
		return bk.Put([]byte("id"), []byte(id))
	})
	if err != nil {
		return "", errors.Join(errors.New("store: node id"), err)
	}
	return id, nil
}
