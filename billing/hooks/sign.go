package hooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// signHook returns the Tollgate-Signature header value.
func signHook(secret string, t int64, body []byte) string {
	ts := strconv.FormatInt(t, 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(hookMAC(secret, ts, body))
}

func hookMAC(secret, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// ErrSignature is returned by VerifySignature for a delivery that
// must not be trusted.
var ErrSignature = errors.New("hook signature not valid")

// defaultHookTolerance is VerifySignature's tolerance when given none.
const defaultHookTolerance = 5 * time.Minute

// VerifySignature checks a Tollgate-Signature header against the raw
// body: one of its v1 values must be the HMAC-SHA256 of "<t>.<body>" with
// secret, and t must be within tolerance of now (either side; 0 means 5
// minutes). Errors wrap ErrSignature.
func VerifySignature(secret string, header string, body []byte, tolerance time.Duration, now time.Time) error {
	if tolerance <= 0 {
		tolerance = defaultHookTolerance
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			if b, err := hex.DecodeString(v); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: no timestamp", ErrSignature)
	}
	if len(sigs) == 0 {
		return fmt.Errorf("%w: no v1 signature", ErrSignature)
	}
	if age := now.Sub(time.Unix(t, 0)); age > tolerance || age < -tolerance {
		return fmt.Errorf("%w: timestamp %s is outside the tolerance of %s", ErrSignature, time.Unix(t, 0).UTC().Format(time.RFC3339), tolerance)
	}
	want := hookMAC(secret, ts, body)
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			return nil
		}
	}
	return fmt.Errorf("%w: signature does not match", ErrSignature)
}
