package tokens

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tollgate-edge/tollgate/store"
)

// Store is where tokens are kept: the registry's store. *store.Bolt and
// *store.RedisKV implement it.
type Store interface {
	// Get returns the value of key in bucket, nil when either is missing.
	Get(ctx context.Context, bucket, key string) ([]byte, error)
	// Scan calls fn with every key and value of bucket.
	Scan(ctx context.Context, bucket string, fn func(key, value []byte) error) error
	// Apply writes ops in one transaction: all or none.
	Apply(ctx context.Context, ops ...store.Op) error
}

// Buckets. Last use is kept apart from the record, so that the write it
// takes can never bring back a token revoked at the same moment (a put of
// the whole record would).
const (
	bucketTokens = "org_tokens"      // id → record (JSON), with the secret's hash
	bucketUsed   = "org_tokens_used" // id → last use, a JSON RFC 3339 string
)

// Buckets lists the buckets tokens writes, for backups and migrations.
var Buckets = []string{bucketTokens, bucketUsed}

// Prefix starts every token, so that secret scanners and people recognise
// one.
const Prefix = "tgt_"

const (
	idBytes     = 8  // 16 hex digits
	secretBytes = 32 // 64 hex digits
	tokenLen    = len(Prefix) + 2*idBytes + 1 + 2*secretBytes
)

// UseInterval is how often, at most, a token's last use is written per
// node: a request reads its token, it does not write on every call.
const UseInterval = time.Minute

// record is a token as stored: its fields and the hex SHA-256 of the whole
// token string.
type record struct {
	Token
	Hash string `json:"hash"`
}

// Options are the collaborators of Tokens.
type Options struct {
	// Now is the clock; nil: time.Now.
	Now func() time.Time
}

// Tokens issues and checks tokens. It is safe for concurrent use.
type Tokens struct {
	st  Store
	now func() time.Time
	// used is token id → *atomic.Int64, the unix seconds of the last use
	// this node wrote.
	used sync.Map
}

// New returns the tokens kept in st.
func New(st Store, opts Options) (*Tokens, error) {
	if st == nil {
		return nil, errors.New("tokens: the store is nil")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Tokens{st: st, now: opts.Now}, nil
}

// Create issues a token and returns its record and its secret, which is
// never available again.
func (t *Tokens) Create(ctx context.Context, s Spec) (Token, string, error) {
	now := t.now().UTC().Truncate(time.Second)
	scopes, err := s.validate(now)
	if err != nil {
		return Token{}, "", err
	}
	var raw [idBytes + secretBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Token{}, "", fmt.Errorf("tokens: %w", err)
	}
	id := hex.EncodeToString(raw[:idBytes])
	secret := Prefix + id + "_" + hex.EncodeToString(raw[idBytes:])
	rec := record{Token: Token{ID: id, Org: s.Org, Name: s.Name, Scopes: scopes, CreatedBy: s.CreatedBy, CreatedAt: now}}
	if !s.ExpiresAt.IsZero() {
		exp := s.ExpiresAt.UTC()
		rec.ExpiresAt = &exp
	}
	rec.Hash = hashOf(secret)
	b, err := json.Marshal(rec)
	if err != nil {
		return Token{}, "", err
	}
	if err := t.st.Apply(ctx, store.Put(bucketTokens, id, b)); err != nil {
		return Token{}, "", fmt.Errorf("tokens: %w", err)
	}
	return rec.Token, secret, nil
}

// List returns the org's tokens by creation time, without secrets, with
// their last use.
func (t *Tokens) List(ctx context.Context, org string) ([]Token, error) {
	var out []Token
	err := t.st.Scan(ctx, bucketTokens, func(_, v []byte) error {
		var rec record
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("tokens: corrupt record: %w", err)
		}
		if rec.Org == org {
			out = append(out, rec.Token)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].LastUsedAt, err = t.lastUse(ctx, out[i].ID); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b Token) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Revoke deletes the org's token id. A token of another org is
// ErrNotFound, as one that does not exist.
func (t *Tokens) Revoke(ctx context.Context, org, id string) error {
	rec, err := t.get(ctx, id)
	if err != nil {
		return err
	}
	if rec == nil || rec.Org != org {
		return fmt.Errorf("token %q: %w", id, ErrNotFound)
	}
	t.used.Delete(id)
	return t.st.Apply(ctx, store.Delete(bucketTokens, id), store.Delete(bucketUsed, id))
}

// Verify returns the token that secret is, or ErrUnauthorized when it is
// malformed, unknown, revoked or expired. It reads the token's record from
// the store (one key), so a revocation on any node holds at once, and
// writes its last use when the last write by this node is UseInterval old.
func (t *Tokens) Verify(ctx context.Context, secret string) (Token, error) {
	id, ok := parse(secret)
	if !ok {
		return Token{}, ErrUnauthorized
	}
	rec, err := t.get(ctx, id)
	if err != nil {
		return Token{}, err
	}
	if rec == nil || subtle.ConstantTimeCompare([]byte(rec.Hash), []byte(hashOf(secret))) != 1 {
		return Token{}, ErrUnauthorized
	}
	now := t.now()
	if rec.ExpiresAt != nil && !now.Before(*rec.ExpiresAt) {
		return Token{}, ErrUnauthorized
	}
	if err := t.touch(ctx, id, now); err != nil {
		return Token{}, err
	}
	return rec.Token, nil
}

// touch writes the token's last use unless this node wrote it less than
// UseInterval ago.
func (t *Tokens) touch(ctx context.Context, id string, now time.Time) error {
	v, _ := t.used.LoadOrStore(id, new(atomic.Int64))
	last := v.(*atomic.Int64)
	prev := last.Load()
	if prev != 0 && now.Unix()-prev < int64(UseInterval/time.Second) {
		return nil
	}
	if !last.CompareAndSwap(prev, now.Unix()) {
		return nil // another request of this token writes it
	}
	// A JSON string: the shared store's change log holds values as JSON.
	stamp, _ := json.Marshal(now.UTC().Truncate(time.Second))
	if err := t.st.Apply(ctx, store.Put(bucketUsed, id, stamp)); err != nil {
		last.Store(prev)
		return fmt.Errorf("tokens: recording the last use: %w", err)
	}
	return nil
}

func (t *Tokens) lastUse(ctx context.Context, id string) (*time.Time, error) {
	b, err := t.st.Get(ctx, bucketUsed, id)
	if err != nil || b == nil {
		return nil, err
	}
	var at time.Time
	if err := json.Unmarshal(b, &at); err != nil {
		return nil, fmt.Errorf("tokens: corrupt last use of %s: %w", id, err)
	}
	return &at, nil
}

func (t *Tokens) get(ctx context.Context, id string) (*record, error) {
	b, err := t.st.Get(ctx, bucketTokens, id)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	if b == nil {
		return nil, nil
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("tokens: corrupt record %s: %w", id, err)
	}
	return &rec, nil
}

// IsToken reports whether s has the form of a token (the prefix), so the
// caller can tell a tenant token from the admin token without a lookup.
func IsToken(s string) bool { return strings.HasPrefix(s, Prefix) }

// parse returns the id of a well-formed token.
func parse(s string) (string, bool) {
	if len(s) != tokenLen || !strings.HasPrefix(s, Prefix) || s[len(Prefix)+2*idBytes] != '_' {
		return "", false
	}
	id := s[len(Prefix) : len(Prefix)+2*idBytes]
	if !isHex(id) || !isHex(s[len(Prefix)+2*idBytes+1:]) {
		return "", false
	}
	return id, true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func hashOf(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}
