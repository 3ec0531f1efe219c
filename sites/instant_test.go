package sites

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unsafe"
)

func TestInstantJSON(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	for _, tc := range []struct {
		name, in, out string // out "": refused
	}{
		{"utc with nanoseconds", `"2026-11-26T09:00:00.123456789Z"`, `"2026-11-26T09:00:00.123456789Z"`},
		{"an offset, kept as the instant in UTC", `"2026-11-26T10:00:00+01:00"`, `"2026-11-26T09:00:00Z"`},
		{"the zero time", `"0001-01-01T00:00:00Z"`, `"0001-01-01T00:00:00Z"`},
		{"null leaves it zero", `null`, `"0001-01-01T00:00:00Z"`},
		{"before 1678", `"1500-01-01T00:00:00Z"`, ""},
		{"after 2262", `"2300-01-01T00:00:00Z"`, ""},
		{"not a time", `"tomorrow"`, ""},
		{"a number", `1700000000`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var i Instant
			err := json.Unmarshal([]byte(tc.in), &i)
			if tc.out == "" {
				if err == nil {
					t.Fatalf("%s read as %v, want an error", tc.in, i)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(i)
			if err != nil || string(b) != tc.out {
				t.Fatalf("%s wrote %s (%v), want %s", tc.in, b, err, tc.out)
			}
		})
	}
	// A record written with time.Time reads back the same instant.
	at := time.Date(2026, 11, 26, 10, 0, 0, 5, paris)
	old, _ := json.Marshal(struct {
		T time.Time `json:"created_at"`
	}{at})
	var o Org
	if err := json.Unmarshal(old, &o); err != nil || !o.CreatedAt.Time().Equal(at) {
		t.Fatalf("read %s as %v (%v), want %v", old, o.CreatedAt, err, at)
	}
}

func TestInstantAt(t *testing.T) {
	now := time.Now() // with a monotonic reading and the local zone
	i := At(now)
	if !i.Time().Equal(now) || i.Time().Location() != time.UTC {
		t.Fatalf("At(%v).Time() = %v, want the same instant in UTC", now, i.Time())
	}
	if !At(time.Time{}).IsZero() || !(Instant{}).Time().IsZero() {
		t.Fatal("the zero time and the zero Instant do not map to each other")
	}
	if far := At(time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)); far.Time().Year() != 2262 {
		t.Fatalf("year 3000 saturated to %v, want 2262", far)
	}
	if early := At(time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC)); early.Time().Year() != 1677 || early.IsZero() {
		t.Fatalf("year 1000 saturated to %v, want 1677", early)
	}
	later := At(now.Add(time.Nanosecond))
	if i.Compare(later) != -1 || later.Compare(i) != 1 || i.Compare(i) != 0 {
		t.Fatal("Compare does not order instants")
	}
	if !i.Before(now.Add(time.Second)) || i.Before(now.Add(-time.Second)) || !i.Add(time.Second).Equal(now.Add(time.Second)) {
		t.Fatal("Before or Add disagree with time.Time")
	}
	if s := i.String(); !strings.HasSuffix(s, "Z") {
		t.Fatalf("String() = %q, want RFC 3339 in UTC", s)
	}
}

// TestOmitZeroInstant: the times an org rarely has stay out of its JSON.
func TestOmitZeroInstant(t *testing.T) {
	b, err := json.Marshal(Org{ID: "a", Plan: "p", State: StateActive, CreatedAt: At(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"grace_ends_at", "stripe_event_at", "trial_ends_at", "pending_plan_at", "storage_over_since", "over_plan_since"} {
		if strings.Contains(string(b), k) {
			t.Errorf("%s written while zero: %s", k, b)
		}
	}
	if !strings.Contains(string(b), `"created_at":"2026-01-02T03:04:05Z"`) {
		t.Errorf("created_at missing or not RFC 3339: %s", b)
	}
}

// TestRecordSizes bounds the records a registry of a million sites holds
// once each: an Org was 288 bytes with seven time.Time.
func TestRecordSizes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size, max uintptr
	}{
		{"Instant", unsafe.Sizeof(Instant{}), 8},
		{"Org", unsafe.Sizeof(Org{}), 176},
		{"Site", unsafe.Sizeof(Site{}), 160},
		{"Domain", unsafe.Sizeof(Domain{}), 80},
	} {
		if tc.size > tc.max {
			t.Errorf("%s is %d bytes, want at most %d", tc.name, tc.size, tc.max)
		}
	}
}
