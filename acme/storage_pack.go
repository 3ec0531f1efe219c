package acme

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
)

// Most of what certmagic stores is PEM: certificate chains and private keys.
// PEM is base64 (a third larger than the DER inside) between text lines, and
// the pages of the bbolt file a certificate was loaded from stay resident, so
// BoltStorage keeps such values packed, as the type and the DER bytes of each
// block, and writes the PEM again when they are read. Only values that come
// back byte for byte are packed; anything else is stored as it is.

// errPacked is returned for a packed value that does not decode.
var errPacked = errors.New("acme: corrupt packed value")

// packPEM returns value as its PEM blocks, each a uvarint length and the
// type, then a uvarint length and the DER bytes; or nil when value is not
// exactly the pem.EncodeToMemory of its blocks one after another (text
// around them, headers, other line lengths or endings) or packing saves
// nothing.
func packPEM(value []byte) []byte {
	var packed []byte
	for rest := value; len(rest) > 0; {
		block, _ := pem.Decode(rest)
		if block == nil || len(block.Headers) > 0 {
			return nil
		}
		enc := pem.EncodeToMemory(block)
		if !bytes.HasPrefix(rest, enc) {
			return nil
		}
		rest = rest[len(enc):]
		packed = binary.AppendUvarint(packed, uint64(len(block.Type)))
		packed = append(packed, block.Type...)
		packed = binary.AppendUvarint(packed, uint64(len(block.Bytes)))
		packed = append(packed, block.Bytes...)
	}
	if len(packed) == 0 || len(packed) >= len(value) {
		return nil
	}
	return packed
}

// unpackPEM is the value packPEM packed.
func unpackPEM(packed []byte) ([]byte, error) {
	size, err := unpackedPEMSize(packed)
	if err != nil {
		return nil, err
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	for len(packed) > 0 {
		typ, der, rest, _ := packedBlock(packed)
		packed = rest
		if err := pem.Encode(buf, &pem.Block{Type: string(typ), Bytes: der}); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// unpackedPEMSize is the length of unpackPEM(packed), found without
// unpacking it.
func unpackedPEMSize(packed []byte) (int64, error) {
	var size int64
	for len(packed) > 0 {
		typ, der, rest, ok := packedBlock(packed)
		if !ok {
			return 0, errPacked
		}
		packed = rest
		size += int64(pemSize(len(typ), len(der)))
	}
	return size, nil
}

// pemSize is the length of pem.EncodeToMemory of a block without headers,
// its type typ bytes long and its DER n: the BEGIN line, the base64 in lines
// of 64 characters, the END line.
func pemSize(typ, n int) int {
	b64 := base64.StdEncoding.EncodedLen(n)
	lines := (b64 + 63) / 64
	return len("-----BEGIN -----\n") + typ + b64 + lines + len("-----END -----\n") + typ
}

// packedBlock splits packed into its first block's type and DER bytes and
// the rest.
func packedBlock(packed []byte) (typ, der, rest []byte, ok bool) {
	typ, rest, ok = packedField(packed)
	if !ok {
		return nil, nil, nil, false
	}
	der, rest, ok = packedField(rest)
	return typ, der, rest, ok
}

// packedField splits b into its first length-prefixed field and the rest.
func packedField(b []byte) (field, rest []byte, ok bool) {
	n, size := binary.Uvarint(b)
	if size <= 0 || n > uint64(len(b)-size) {
		return nil, nil, false
	}
	b = b[size:]
	return b[:n], b[n:], true
}
