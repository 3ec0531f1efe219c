package sites

import (
	"cmp"
	"errors"
	"math"
	"time"
)

// Instant is a point in time as the registry's records keep it: Unix
// nanoseconds in 8 bytes, where a time.Time takes 24 (wall clock,
// monotonic reading and location). An Org has seven of them, and a
// registry holds a million orgs.
//
// It covers 1678 to 2262 at nanosecond precision; At saturates outside
// that range and UnmarshalJSON refuses it. It is always UTC: the offset a
// time.Time carried is not kept (the instant is). The zero Instant is the
// zero time; the Unix epoch itself, 1970-01-01T00:00:00Z, reads as zero
// too, which no record of this registry can hold.
//
// In JSON it is what time.Time writes (RFC 3339 with nanoseconds), so
// records stored before Instant read back unchanged.
type Instant struct{ ns int64 }

// Bounds of an Instant: the times Unix nanoseconds can hold.
var (
	minInstant = time.Unix(0, math.MinInt64+1)
	maxInstant = time.Unix(0, math.MaxInt64)
)

// At is the Instant of t: the zero Instant for the zero time, the nearest
// bound for a time outside 1678–2262.
func At(t time.Time) Instant {
	switch {
	case t.IsZero():
		return Instant{}
	case t.Before(minInstant):
		return Instant{math.MinInt64 + 1}
	case t.After(maxInstant):
		return Instant{math.MaxInt64}
	}
	return Instant{t.UnixNano()}
}

// Time is i as a time.Time in UTC; the zero time for the zero Instant.
func (i Instant) Time() time.Time {
	if i.ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, i.ns).UTC()
}

// IsZero reports whether i is the zero time.
func (i Instant) IsZero() bool { return i.ns == 0 }

// String is i in RFC 3339 with nanoseconds, as in JSON.
func (i Instant) String() string { return i.Time().Format(time.RFC3339Nano) }

// MarshalJSON writes i as time.Time does.
func (i Instant) MarshalJSON() ([]byte, error) { return i.Time().MarshalJSON() }

var errInstantRange = errors.New("time outside 1678-2262, the range a registry record holds")

// UnmarshalJSON reads what time.Time reads: an RFC 3339 string; null
// leaves i unchanged.
func (i *Instant) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var t time.Time
	if err := t.UnmarshalJSON(b); err != nil {
		return err
	}
	if !t.IsZero() && (t.Before(minInstant) || t.After(maxInstant)) {
		return errInstantRange
	}
	*i = At(t)
	return nil
}

// Add is i + d as a time.Time.
func (i Instant) Add(d time.Duration) time.Time { return i.Time().Add(d) }

// Before reports whether i is before t.
func (i Instant) Before(t time.Time) bool { return i.Time().Before(t) }

// Compare is -1, 0 or +1 as i is before, equal to or after j.
func (i Instant) Compare(j Instant) int { return cmp.Compare(i.ns, j.ns) }
