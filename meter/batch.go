package meter

import "time"

// Values are the usage counters of one org (or site) over some time.
type Values struct {
	// EgressBytes: response bytes (headers and body) written to clients.
	EgressBytes int64 `json:"egress_bytes"`
	// Requests answered.
	Requests int64 `json:"requests"`
	// IngressBytes: request body bytes received for proxied sites.
	IngressBytes int64 `json:"ingress_bytes"`
	// StorageByteSeconds: stored bytes integrated over time (divide by
	// 2,592,000 for GB-months of a 30-day month).
	StorageByteSeconds int64 `json:"storage_byte_seconds"`
}

// Add adds o to v.
func (v *Values) Add(o Values) {
	v.EgressBytes += o.EgressBytes
	v.Requests += o.Requests
	v.IngressBytes += o.IngressBytes
	v.StorageByteSeconds += o.StorageByteSeconds
}

// IsZero reports whether every counter is zero.
func (v Values) IsZero() bool { return v == Values{} }

// Delta is what one org's site used since the previous flush.
type Delta struct {
	Org  string `json:"org"`
	Site string `json:"site"`
	Values
}

// Batch is one flush: the deltas of every (org, site) that changed, stamped
// with the node that counted them and a sequence number that only grows on
// that node. Sinks apply a batch at most once per org: a batch whose Seq is
// not above the last one applied for (Node, Org) is skipped, so a flush that
// may have been applied is simply sent again.
type Batch struct {
	Node   string    `json:"node"`
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"` // when the deltas were taken; decides the hour bucket
	Deltas []Delta   `json:"deltas"`
}

// Hour is the start of the hour bucket of t (UTC).
func Hour(t time.Time) time.Time { return t.UTC().Truncate(time.Hour) }

// Period is the billing period of t: its UTC calendar month, "YYYY-MM".
func Period(t time.Time) string { return t.UTC().Format("2006-01") }
