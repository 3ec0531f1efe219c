package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/tollgate-edge/tollgate/credit"
	bolt "go.etcd.io/bbolt"
)

// Buckets of the credit ledgers in the bbolt file (see BoltCredit).
const (
	bktCreditEntries = "credit_entries"
	bktCreditSources = "credit_sources"
	bktCreditBalance = "credit_balance"
)

// BoltCredit keeps the prepaid credit ledgers in the bbolt file. Each
// Append is one transaction: the source check, the entry and the balance
// commit together or not at all.
//
//	credit_entries  ORG\x00SEQ      the entry as JSON; SEQ uint64 big-endian from 1
//	credit_sources  ORG\x00SOURCE   SEQ of the entry with that source
//	credit_balance  ORG             balance (int64) then the last SEQ (uint64), big-endian
type BoltCredit struct {
	st *Bolt
}

var _ credit.Store = (*BoltCredit)(nil)

// NewBoltCredit keeps the ledgers in st.
func NewBoltCredit(st *Bolt) *BoltCredit { return &BoltCredit{st: st} }

func creditSeqKey(org string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(org), 0), seq)
}

// Append implements credit.Store.
func (c *BoltCredit) Append(ctx context.Context, e credit.Entry) (credit.Entry, bool, int64, error) {
	val, err := json.Marshal(e)
	if err != nil {
		return credit.Entry{}, false, 0, err
	}
	var stored credit.Entry
	var appended bool
	var balance int64
	err = c.st.Update(ctx, func(tx *bolt.Tx) error {
		bks := make([]*bolt.Bucket, 3)
		for i, name := range []string{bktCreditEntries, bktCreditSources, bktCreditBalance} {
			b, err := tx.CreateBucketIfNotExists([]byte(name))
			if err != nil {
				return err
			}
			bks[i] = b
		}
		entries, sources, balances := bks[0], bks[1], bks[2]
		var seq uint64
		if v := balances.Get([]byte(e.Org)); len(v) == 16 {
			balance, seq = int64(binary.BigEndian.Uint64(v)), binary.BigEndian.Uint64(v[8:])
		}
		srcKey := append(append([]byte(e.Org), 0), e.Source...)
		if s := sources.Get(srcKey); len(s) == 8 {
			return json.Unmarshal(entries.Get(creditSeqKey(e.Org, binary.BigEndian.Uint64(s))), &stored)
		}
		seq++
		balance += e.Amount
		if err := entries.Put(creditSeqKey(e.Org, seq), val); err != nil {
			return err
		}
		if err := sources.Put(srcKey, binary.BigEndian.AppendUint64(nil, seq)); err != nil {
			return err
		}
		bal := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(balance)), seq)
		stored, appended = e, true
		return balances.Put([]byte(e.Org), bal)
	})
	if err != nil {
		return credit.Entry{}, false, 0, fmt.Errorf("store: credit append %s: %w", e.Org, err)
	}
	return stored, appended, balance, nil
}

// Balance implements credit.Store.
func (c *BoltCredit) Balance(ctx context.Context, org string) (int64, error) {
	var balance int64
	err := c.st.View(ctx, func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(bktCreditBalance)); b != nil {
			if v := b.Get([]byte(org)); len(v) == 16 {
				balance = int64(binary.BigEndian.Uint64(v))
			}
		}
		return nil
	})
	return balance, err
}

// Entries implements credit.Store.
func (c *BoltCredit) Entries(ctx context.Context, org string) ([]credit.Entry, error) {
	var out []credit.Entry
	prefix := append([]byte(org), 0)
	err := c.st.View(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bktCreditEntries))
		if b == nil {
			return nil
		}
		cur := b.Cursor()
		for k, v := cur.Seek(prefix); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, v = cur.Next() {
			var e credit.Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("store: credit entry of %s: %w", org, err)
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}
