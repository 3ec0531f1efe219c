package meter

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tollgate-edge/tollgate/store"
	bolt "go.etcd.io/bbolt"
)

// Buckets of the bbolt usage store. Keys use "\x00" between parts (ids and
// domains never contain it); values are Values in 32 bytes, big-endian.
const (
	bktApplied  = "meter_applied"   // node\x00org -> last applied Seq (8 bytes)
	bktOrgHour  = "usage_org_hour"  // org\x00YYYYMMDDHH -> Values
	bktSiteHour = "usage_site_hour" // org\x00site\x00YYYYMMDDHH -> Values
	bktPeriod   = "usage_period"    // YYYY-MM\x00org -> Values
	bktSpool    = "meter_spool"     // Seq (8 bytes) -> JSON Batch
	bktNode     = "meter_node"      // "id" -> this node's id
)

// Bolt stores usage in the bbolt file: the sink of the embedded default and,
// with Redis, the local spool.
type Bolt struct {
	st *store.Bolt
}

var (
	_ Sink  = (*Bolt)(nil)
	_ Spool = (*Bolt)(nil)
)

// NewBolt uses st for usage.
func NewBolt(st *store.Bolt) *Bolt { return &Bolt{st: st} }

func key(parts ...string) []byte {
	var b []byte
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	return b
}

func bucket(tx *bolt.Tx, name string) (*bolt.Bucket, error) {
	return tx.CreateBucketIfNotExists([]byte(name))
}

func addTo(b *bolt.Bucket, k []byte, v Values) error {
	cur := decodeValues(b.Get(k))
	cur.Add(v)
	return b.Put(k, cur.appendBinary(make([]byte, 0, valuesLen)))
}

// Apply adds a batch's deltas in one transaction, skipping each org for
// which this node already applied a batch with the same or a later Seq.
func (s *Bolt) Apply(ctx context.Context, b *Batch) error {
	hour, period := hourKey(b.Time), Period(b.Time)
	return s.st.Update(ctx, func(tx *bolt.Tx) error {
		applied, err := bucket(tx, bktApplied)
		if err != nil {
			return err
		}
		orgHour, _ := bucket(tx, bktOrgHour)
		siteHour, _ := bucket(tx, bktSiteHour)
		periods, _ := bucket(tx, bktPeriod)
		seq := binary.BigEndian.AppendUint64(nil, b.Seq)
		skip := map[string]bool{}
		for _, d := range b.Deltas {
			done, seen := skip[d.Org]
			if !seen {
				last := applied.Get(key(b.Node, d.Org))
				done = len(last) == 8 && binary.BigEndian.Uint64(last) >= b.Seq
				skip[d.Org] = done
				if !done {
					if err := applied.Put(key(b.Node, d.Org), seq); err != nil {
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
			}{{orgHour, key(d.Org, hour)}, {siteHour, key(d.Org, d.Site, hour)}, {periods, key(period, d.Org)}} {
				if err := addTo(put.b, put.k, d.Values); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// Save writes batches to the spool.
func (s *Bolt) Save(ctx context.Context, bs []*Batch) error {
	return s.st.Update(ctx, func(tx *bolt.Tx) error {
		sp, err := bucket(tx, bktSpool)
		if err != nil {
			return err
		}
		for _, b := range bs {
			v, err := json.Marshal(b)
			if err != nil {
				return err
			}
			if err := sp.Put(binary.BigEndian.AppendUint64(nil, b.Seq), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Load returns the spooled batches in Seq order.
func (s *Bolt) Load(ctx context.Context) ([]*Batch, error) {
	var out []*Batch
	err := s.st.View(ctx, func(tx *bolt.Tx) error {
		sp := tx.Bucket([]byte(bktSpool))
		if sp == nil {
			return nil
		}
		return sp.ForEach(func(_, v []byte) error {
			b := new(Batch)
			if err := json.Unmarshal(v, b); err != nil {
				return fmt.Errorf("meter: corrupt spooled batch: %w", err)
			}
			out = append(out, b)
			return nil
		})
	})
	return out, err
}

// Remove deletes a spooled batch once the sink took it.
func (s *Bolt) Remove(ctx context.Context, seq uint64) error {
	return s.st.Update(ctx, func(tx *bolt.Tx) error {
		sp := tx.Bucket([]byte(bktSpool))
		if sp == nil {
			return nil
		}
		return sp.Delete(binary.BigEndian.AppendUint64(nil, seq))
	})
}

// Hourly returns the org's hour buckets in [from, to), oldest first; hours
// without usage are absent.
func (s *Bolt) Hourly(ctx context.Context, org string, from, to time.Time) ([]Point, error) {
	var out []Point
	end := Hour(to)
	if end.Before(to) {
		end = end.Add(time.Hour) // the bucket holding `to` starts before it: include it
	}
	lo, hi := key(org, hourKey(from)), key(org, hourKey(end))
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
			out = append(out, Point{Start: t, Values: decodeValues(v)})
		}
		return nil
	})
	return out, err
}

// PeriodTotals lists every org's totals for a period ("YYYY-MM"), by org id,
// starting after the org id `after`, at most limit; next is the cursor of the
// following page, "" on the last.
func (s *Bolt) PeriodTotals(ctx context.Context, period, after string, limit int) ([]OrgTotal, string, error) {
	var out []OrgTotal
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
			start = append(key(period, after), 0) // the first key past `after`
		}
		for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			org := string(k[len(prefix):])
			if len(out) == limit {
				next = out[len(out)-1].Org
				break
			}
			out = append(out, OrgTotal{Org: org, Values: decodeValues(v)})
		}
		return nil
	})
	return out, next, err
}

// NodeID returns this installation's node id, created on first use and
// kept in the bbolt file, so it survives restarts. Once created it is only
// read, so a node restarts on a full disk.
func NodeID(ctx context.Context, st *store.Bolt) (string, error) {
	var id string
	err := st.View(ctx, func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(bktNode)); b != nil {
			id = string(b.Get([]byte("id")))
		}
		return nil
	})
	if err != nil || id != "" {
		return id, err
	}
	err = st.Update(ctx, func(tx *bolt.Tx) error {
		b, err := bucket(tx, bktNode)
		if err != nil {
			return err
		}
		if v := b.Get([]byte("id")); len(v) > 0 {
			id = string(v)
			return nil
		}
		var r [8]byte
		if _, err := rand.Read(r[:]); err != nil {
			return err
		}
		id = hex.EncodeToString(r[:])
		return b.Put([]byte("id"), []byte(id))
	})
	if err != nil {
		return "", errors.Join(errors.New("meter: node id"), err)
	}
	return id, nil
}
