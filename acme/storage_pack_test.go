package acme

import (
	"bytes"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tollgate-edge/tollgate/internal/storetest"
	"github.com/tollgate-edge/tollgate/store"
)

// testPEM is a certificate and its key as certmagic stores them.
func testPEM(t *testing.T) (cert, key []byte) {
	t.Helper()
	certFile, keyFile, _ := writeTestCert(t, "ecdsa")
	cert, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err = os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// boltRaw is the value of key in the bucket, as stored.
func boltRaw(t *testing.T, st *store.Bolt, key string) []byte {
	t.Helper()
	var v []byte
	err := st.View(storageCtx(t), func(tx *bolt.Tx) error {
		v = bytes.Clone(tx.Bucket([]byte(boltBucket)).Get([]byte(key)))
		return nil
	})
	if err != nil || v == nil {
		t.Fatalf("raw %q: %v, %v", key, v, err)
	}
	return v
}

// boltPutRaw writes v at key as it is, bypassing Store.
func boltPutRaw(t *testing.T, st *store.Bolt, key string, v []byte) {
	t.Helper()
	err := st.Update(storageCtx(t), func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists([]byte(boltBucket))
		if err != nil {
			return err
		}
		return bk.Put([]byte(key), v)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestBoltStoragePacksPEM: PEM values are stored packed, smaller, and read
// back byte for byte, with their size and modification time.
func TestBoltStoragePacksPEM(t *testing.T) {
	cert, key := testPEM(t)
	st := storetest.Open(t)
	s := NewBoltStorage(st)
	before := time.Now()
	for _, kv := range []struct {
		key   string
		value []byte
	}{
		{"certificates/ca/a.com/a.com.crt", cert},
		{"certificates/ca/a.com/a.com.key", key},
		{"certificates/ca/b.com/b.com.crt", append(bytes.Clone(cert), cert...)}, // a chain
	} {
		storageMustStore(t, s, kv.key, string(kv.value))
		raw := boltRaw(t, st, kv.key)
		if binary.BigEndian.Uint64(raw)&boltPacked == 0 || len(raw)-8 >= len(kv.value)*4/5 {
			t.Errorf("%s: stored %d bytes for %d of PEM, packed bit %v; want packed, a fifth smaller",
				kv.key, len(raw)-8, len(kv.value), binary.BigEndian.Uint64(raw)&boltPacked != 0)
		}
		storageWantLoad(t, s, kv.key, string(kv.value))
		fi, err := s.Stat(storageCtx(t), kv.key)
		if err != nil || fi.Size != int64(len(kv.value)) || fi.Modified.Before(before) || fi.Modified.After(time.Now()) {
			t.Errorf("Stat(%q) = %+v, %v; want size %d, modified since %v", kv.key, fi, err, len(kv.value), before)
		}
	}
}

// TestBoltStorageReadsUnpacked: values in the layout written before packing
// existed (the time, then the bytes as given) still read, and are packed
// when written again.
func TestBoltStorageReadsUnpacked(t *testing.T) {
	cert, _ := testPEM(t)
	st := storetest.Open(t)
	s := NewBoltStorage(st)
	old := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for key, value := range map[string][]byte{
		"certificates/ca/a.com/a.com.crt":  cert,
		"certificates/ca/a.com/a.com.json": []byte(`{"sans":["a.com"]}`),
		"empty":                            {},
	} {
		v := binary.BigEndian.AppendUint64(nil, uint64(old.UnixNano()))
		boltPutRaw(t, st, key, append(v, value...))
		storageWantLoad(t, s, key, string(value))
		fi, err := s.Stat(storageCtx(t), key)
		if err != nil || fi.Size != int64(len(value)) || !fi.Modified.Equal(old) {
			t.Errorf("Stat(%q) = %+v, %v; want size %d, modified %v", key, fi, err, len(value), old)
		}
	}
	storageMustStore(t, s, "certificates/ca/a.com/a.com.crt", string(cert))
	if raw := boltRaw(t, st, "certificates/ca/a.com/a.com.crt"); binary.BigEndian.Uint64(raw)&boltPacked == 0 {
		t.Error("rewritten PEM not packed")
	}
	storageWantLoad(t, s, "certificates/ca/a.com/a.com.crt", string(cert))
}

// TestBoltStorageCorruptPacked: a packed value that does not decode is an
// error, never a panic or wrong bytes.
func TestBoltStorageCorruptPacked(t *testing.T) {
	cert, _ := testPEM(t)
	st := storetest.Open(t)
	s := NewBoltStorage(st)
	storageMustStore(t, s, "k", string(cert))
	raw := boltRaw(t, st, "k")
	boltPutRaw(t, st, "k", raw[:len(raw)-10])
	if v, err := s.Load(storageCtx(t), "k"); err == nil {
		t.Errorf("Load of a truncated packed value = %q, want an error", v)
	}
	if _, err := s.Stat(storageCtx(t), "k"); err == nil {
		t.Error("Stat of a truncated packed value: no error")
	}
}

// TestPackPEM: what is packed and what is stored as it is.
func TestPackPEM(t *testing.T) {
	cert, key := testPEM(t)
	headers := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: []byte("k")})
	for _, tc := range []struct {
		name   string
		value  []byte
		packed bool
	}{
		{"certificate", cert, true},
		{"key", key, true},
		{"chain", append(bytes.Clone(cert), cert...), true},
		{"empty", nil, false},
		{"json", []byte(`{"sans":["a.com"]}`), false},
		{"text before", append([]byte("leaf\n"), cert...), false},
		{"text after", append(bytes.Clone(cert), "\n"...), false},
		{"no final newline", bytes.TrimSuffix(cert, []byte("\n")), false},
		{"CRLF", []byte(strings.ReplaceAll(string(cert), "\n", "\r\n")), false},
		{"headers", headers, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := packPEM(tc.value)
			if (p != nil) != tc.packed {
				t.Fatalf("packed = %v, want %v", p != nil, tc.packed)
			}
			if p == nil {
				return
			}
			got, err := unpackPEM(p)
			if err != nil || !bytes.Equal(got, tc.value) {
				t.Errorf("unpackPEM = %q, %v, want %q", got, err, tc.value)
			}
		})
	}
}

// TestPEMSize: pemSize is the length pem.EncodeToMemory writes.
func TestPEMSize(t *testing.T) {
	for n := range 300 {
		for _, typ := range []string{"", "CERTIFICATE", "EC PRIVATE KEY"} {
			want := len(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: make([]byte, n)}))
			if got := pemSize(len(typ), n); got != want {
				t.Fatalf("pemSize(%d, %d) = %d, want %d", len(typ), n, got, want)
			}
		}
	}
}

// FuzzPackPEM: whatever packPEM packs unpacks to the same bytes and is
// smaller; unpackPEM of anything returns an error or bytes of the length
// unpackedPEMSize says, never panics.
func FuzzPackPEM(f *testing.F) {
	f.Add([]byte("-----BEGIN X-----\nAAAA\n-----END X-----\n"))
	f.Add([]byte("-----BEGIN X-----\n-----END X-----\n-----BEGIN Y-----\nAA==\n-----END Y-----\n"))
	f.Add([]byte{1, 'X', 2, 0, 0})
	f.Add([]byte(`{"sans":["a.com"]}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		if p := packPEM(value); p != nil {
			got, err := unpackPEM(p)
			if err != nil || !bytes.Equal(got, value) || len(p) >= len(value) {
				t.Fatalf("packPEM(%q) = %q (%d bytes): unpacks to %q, %v", value, p, len(p), got, err)
			}
		}
		if v, err := unpackPEM(value); err == nil {
			if size, err := unpackedPEMSize(value); err != nil || size != int64(len(v)) {
				t.Fatalf("unpackedPEMSize(%q) = %d, %v; unpackPEM wrote %d bytes", value, size, err, len(v))
			}
		}
	})
}

// TestBoltStorageFillsPages: certificates written one name after another,
// as certmagic obtains them, fill most of each leaf page (bbolt's default
// leaves about half of each empty).
func TestBoltStorageFillsPages(t *testing.T) {
	cert, key := testPEM(t)
	st := storetest.Open(t)
	s := NewBoltStorage(st)
	for i := range 300 {
		dir := fmt.Sprintf("certificates/ca/s%04d.example/s%04d.example", i, i)
		storageMustStore(t, s, dir+".crt", string(cert))
		storageMustStore(t, s, dir+".key", string(key))
		storageMustStore(t, s, dir+".json", fmt.Sprintf(`{"sans":["s%04d.example"]}`, i))
	}
	var stats bolt.BucketStats
	_ = st.View(storageCtx(t), func(tx *bolt.Tx) error {
		stats = tx.Bucket([]byte(boltBucket)).Stats()
		return nil
	})
	if fill := float64(stats.LeafInuse) / float64(stats.LeafAlloc); fill < 0.8 {
		t.Errorf("leaf pages %.0f%% full (%d of %d bytes in %d pages), want at least 80%%",
			100*fill, stats.LeafInuse, stats.LeafAlloc, stats.LeafPageN)
	}
}
