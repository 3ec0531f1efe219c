package meter

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	flushDuration prometheus.Histogram
	flushErrors   prometheus.Counter
	pending       prometheus.Gauge
	spooled       prometheus.Counter
	dropped       prometheus.Counter
	lastOK        prometheus.Gauge
	journalErrors prometheus.Counter
	egress        *prometheus.CounterVec // by kind
	refunded      *prometheus.CounterVec // by kind
	requests      *prometheus.CounterVec // by kind
	ingress       *prometheus.CounterVec // by kind

	perOrg    bool
	maxOrgs   int
	mu        sync.Mutex
	orgSeen   map[string]bool
	orgEgress *prometheus.CounterVec
	orgRefund *prometheus.CounterVec
	orgReqs   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, cfg Config, m *Meter) *metrics {
	f := promauto.With(reg)
	mt := &metrics{
		flushDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name: "tollgate_meter_flush_duration_seconds", Help: "Time to write one flush (and any backlog) to the usage store.",
			ConstLabels: prometheus.Labels{"store": m.storeName},
			Buckets:     []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		flushErrors: f.NewCounter(prometheus.CounterOpts{Name: "tollgate_meter_flush_errors_total", Help: "Flushes the usage store (bbolt or redis: the store label) did not take; usage is kept and retried.",
			ConstLabels: prometheus.Labels{"store": m.storeName}}),
		pending: f.NewGauge(prometheus.GaugeOpts{Name: "tollgate_meter_pending_batches", Help: "Usage batches waiting in memory for the store."}),
		spooled: f.NewCounter(prometheus.CounterOpts{Name: "tollgate_meter_spooled_batches_total", Help: "Usage batches spilled to the local bbolt spool while the store was unreachable."}),
		dropped: f.NewCounter(prometheus.CounterOpts{Name: "tollgate_meter_dropped_batches_total", Help: "Usage batches dropped because the store stayed unreachable past meter.max_pending (embedded store only)."}),
		lastOK: f.NewGauge(prometheus.GaugeOpts{Name: "tollgate_meter_last_flush_success_timestamp_seconds", Help: "When the usage store last took a flush (Unix time); /readyz fails the meter-flush check after three flush intervals without one.",
			ConstLabels: prometheus.Labels{"store": m.storeName}}),
		journalErrors: f.NewCounter(prometheus.CounterOpts{Name: "tollgate_meter_spool_file_errors_total", Help: "Writes of the usage backlog to the spool file that failed (meter.spool_bytes too small, or the file unwritable); a kill then loses that backlog."}),
		egress:        f.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_meter_egress_bytes_total", Help: "Metered egress bytes (headers and body written to clients), by site kind."}, []string{"kind"}),
		refunded: f.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_meter_egress_refunded_bytes_total", Help: "Egress bytes taken back from the usage counted (bytes an aborted client never acknowledged), in flushes where the refunds outweighed the charges, by site kind: " +
			"tollgate_meter_egress_bytes_total minus this is the net egress metered."}, []string{"kind"}),
		requests: f.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_meter_requests_total", Help: "Metered requests, by site kind."}, []string{"kind"}),
		ingress:  f.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_meter_ingress_bytes_total", Help: "Metered request body bytes of proxied sites, by site kind."}, []string{"kind"}),
		perOrg:   cfg.PerOrgMetrics,
		maxOrgs:  cfg.PerOrgMetricsMax,
		orgSeen:  map[string]bool{},
	}
	if cfg.PerOrgMetrics {
		mt.orgEgress = f.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_meter_org_egress_bytes_total", Help: "Metered egress bytes by org (meter.per_org_metrics; orgs past the cap are summed as _other)."}, []string{"org"})
		mt.orgRefund = f.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_meter_org_egress_refunded_bytes_total", Help: "tollgate_meter_egress_refunded_bytes_total by org (meter.per_org_metrics; orgs past the cap are summed as _other)."}, []string{"org"})
		mt.orgReqs = f.NewCounterVec(prometheus.CounterOpts{Name: "tollgate_meter_org_requests_total", Help: "Metered requests by org (meter.per_org_metrics; orgs past the cap are summed as _other)."}, []string{"org"})
	}
	return mt
}

// observe adds one flushed delta to the Prometheus counters (at flush time,
// never on the request path). A delta's egress is negative when the
// refunds of aborted downloads (the proxy's settle) outweigh the charges
// of its window; a counter cannot go down (client_golang panics), so that
// delta goes to the refunded counter: egress minus refunded stays the net.
func (mt *metrics) observe(org, kind string, v Values) {
	addAbs(mt.egress, mt.refunded, kind, v.EgressBytes)
	mt.requests.WithLabelValues(kind).Add(float64(v.Requests))
	mt.ingress.WithLabelValues(kind).Add(float64(v.IngressBytes))
	if !mt.perOrg {
		return
	}
	mt.mu.Lock()
	if !mt.orgSeen[org] {
		if len(mt.orgSeen) >= mt.maxOrgs {
			org = "_other"
		} else {
			mt.orgSeen[org] = true
		}
	}
	mt.mu.Unlock()
	addAbs(mt.orgEgress, mt.orgRefund, org, v.EgressBytes)
	mt.orgReqs.WithLabelValues(org).Add(float64(v.Requests))
}

// addAbs adds n to pos's label series when n >= 0, else -n to neg's.
func addAbs(pos, neg *prometheus.CounterVec, label string, n int64) {
	switch {
	case n > 0:
		pos.WithLabelValues(label).Add(float64(n))
	case n < 0:
		neg.WithLabelValues(label).Add(float64(-n))
	}
}
