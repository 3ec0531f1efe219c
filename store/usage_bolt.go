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
	return s.hours(ctx, bktOrgHour, usageKey(org, ""), from, to)
}

// SiteHourly returns one site's hour buckets in [from, to), oldest first;
// hours without usage are absent. Their sum over the org's sites is the
// org's Hourly: both are written in one transaction.
func (s *BoltUsage) SiteHourly(ctx context.Context, org, site string, from, to time.Time) ([]meter.Point, error) {
	return s.hours(ctx, bktSiteHour, usageKey(org, site, ""), from, to)
}

// endHour is the end of the last hour bucket a query up to `to` reads: the
// bucket holding `to` starts before it and is included.
func endHour(to time.Time) time.Time {
	end := meter.Hour(to)
	if end.Before(to) {
		end = end.Add(time.Hour)
	}
	return end
}

// hours reads the buckets of bucket whose keys are prefix+YYYYMMDDHH, with
// the hour in [from, to).
func (s *BoltUsage) hours(ctx context.Context, bucket string, prefix []byte, from, to time.Time) ([]meter.Point, error) {
	var out []meter.Point
	lo, hi := append(bytes.Clone(prefix), hourKey(from)...), append(bytes.Clone(prefix), hourKey(endHour(to))...)
	err := s.st.View(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.Seek(lo); k != nil && bytes.Compare(k, hi) < 0 && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			t, err := time.Parse("2006010215", string(k[len(prefix):]))
			if err != nil {
				continue
			}
			out = append(out, meter.Point{Start: t, Values: decodeValues(v)})
		}
		return nil
	})
	return out, err
}

// SiteTotals returns the totals in [from, to) of each of the org's sites
// with usage then, by site id. They sum to the org's totals of the same
// range exactly. It seeks once per site the org ever had usage for
// (within the retention) and reads only the hours in range.
func (s *BoltUsage) SiteTotals(ctx context.Context, org string, from, to time.Time) ([]meter.SiteTotal, error) {
	var out []meter.SiteTotal
	prefix := usageKey(org, "")
	lo, hi := hourKey(from), hourKey(endHour(to))
	err := s.st.View(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bktSiteHour))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, _ := c.Seek(prefix)
		for k != nil && bytes.HasPrefix(k, prefix) {
			i := bytes.IndexByte(k[len(prefix):], 0)
			if i < 0 { // not ORG\x00SITE\x00HOUR: skip it
				k, _ = c.Next()
				continue
			}
			site := bytes.Clone(k[:len(prefix)+i+1]) // ORG\x00SITE\x00
			st := meter.SiteTotal{Site: string(site[len(prefix) : len(site)-1])}
			seen := false
			var v []byte
			for k, v = c.Seek(append(bytes.Clone(site), lo...)); k != nil && bytes.HasPrefix(k, site) && string(k[len(site):]) < hi; k, v = c.Next() {
				st.Add(decodeValues(v))
				seen = true
			}
			if seen {
				out = append(out, st)
			}
			site[len(site)-1] = 1 // ORG\x00SITE\x01: past every hour of the site
			k, _ = c.Seek(site)
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
