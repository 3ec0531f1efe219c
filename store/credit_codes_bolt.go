package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tollgate-edge/tollgate/credit"
	bolt "go.etcd.io/bbolt"
)

// Buckets of the redeemable credit codes in the bbolt file:
//
//	credit_codes       CODE        the code as JSON, Redeemed included
//	credit_code_orgs   CODE\x00ORG when the org claimed it (RFC 3339)
const (
	bktCreditCodes    = "credit_codes"
	bktCreditCodeOrgs = "credit_code_orgs"
)

var _ credit.CodeStore = (*BoltCredit)(nil)

// CreateCode implements credit.CodeStore.
func (c *BoltCredit) CreateCode(ctx context.Context, code credit.Code) error {
	code.Redeemed = 0
	val, err := json.Marshal(code)
	if err != nil {
		return err
	}
	return c.st.Update(ctx, func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte(bktCreditCodes))
		if err != nil {
			return err
		}
		if b.Get([]byte(code.Code)) != nil {
			return fmt.Errorf("%w: %s", credit.ErrCodeExists, code.Code)
		}
		return b.Put([]byte(code.Code), val)
	})
}

func boltCode(tx *bolt.Tx, code string) (credit.Code, error) {
	var c credit.Code
	b := tx.Bucket([]byte(bktCreditCodes))
	if b == nil {
		return c, fmt.Errorf("%w: %s", credit.ErrCodeNotFound, code)
	}
	v := b.Get([]byte(code))
	if v == nil {
		return c, fmt.Errorf("%w: %s", credit.ErrCodeNotFound, code)
	}
	if err := json.Unmarshal(v, &c); err != nil {
		return c, fmt.Errorf("store: credit code %s: %w", code, err)
	}
	return c, nil
}

func putBoltCode(tx *bolt.Tx, c credit.Code) error {
	val, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return tx.Bucket([]byte(bktCreditCodes)).Put([]byte(c.Code), val)
}

// Code implements credit.CodeStore.
func (c *BoltCredit) Code(ctx context.Context, code string) (out credit.Code, err error) {
	err = c.st.View(ctx, func(tx *bolt.Tx) error {
		out, err = boltCode(tx, code)
		return err
	})
	return out, err
}

// Codes implements credit.CodeStore.
func (c *BoltCredit) Codes(ctx context.Context) ([]credit.Code, error) {
	var out []credit.Code
	err := c.st.View(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bktCreditCodes))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var code credit.Code
			if err := json.Unmarshal(v, &code); err != nil {
				return fmt.Errorf("store: credit code %s: %w", k, err)
			}
			out = append(out, code)
			return nil
		})
	})
	return out, err
}

// DisableCode implements credit.CodeStore.
func (c *BoltCredit) DisableCode(ctx context.Context, code string) (out credit.Code, err error) {
	err = c.st.Update(ctx, func(tx *bolt.Tx) error {
		if out, err = boltCode(tx, code); err != nil {
			return err
		}
		out.Disabled = true
		return putBoltCode(tx, out)
	})
	return out, err
}

// Claim implements credit.CodeStore: the checks, the org's mark and the
// count commit in one transaction.
func (c *BoltCredit) Claim(ctx context.Context, code, org string, now time.Time) (out credit.Code, fresh bool, err error) {
	err = c.st.Update(ctx, func(tx *bolt.Tx) error {
		if out, err = boltCode(tx, code); err != nil {
			return err
		}
		orgs, err := tx.CreateBucketIfNotExists([]byte(bktCreditCodeOrgs))
		if err != nil {
			return err
		}
		key := append(append([]byte(code), 0), org...)
		if orgs.Get(key) != nil {
			return nil
		}
		if err := credit.CheckClaim(out, now); err != nil {
			return fmt.Errorf("%w: %s", err, code)
		}
		out.Redeemed++
		fresh = true
		if err := orgs.Put(key, []byte(now.UTC().Format(time.RFC3339Nano))); err != nil {
			return err
		}
		return putBoltCode(tx, out)
	})
	return out, fresh, err
}

// Redeemers implements credit.CodeStore.
func (c *BoltCredit) Redeemers(ctx context.Context, code string) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := c.st.View(ctx, func(tx *bolt.Tx) error {
		if _, err := boltCode(tx, code); err != nil {
			return err
		}
		b := tx.Bucket([]byte(bktCreditCodeOrgs))
		if b == nil {
			return nil
		}
		prefix := append([]byte(code), 0)
		cur := b.Cursor()
		for k, v := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = cur.Next() {
			at, err := time.Parse(time.RFC3339Nano, string(v))
			if err != nil {
				return fmt.Errorf("store: credit code %s: claim of %s: %w", code, k[len(prefix):], err)
			}
			out[string(k[len(prefix):])] = at
		}
		return nil
	})
	return out, err
}
