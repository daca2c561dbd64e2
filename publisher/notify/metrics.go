package notify

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
)

// Metrics counts what a notifier does and serves it in the Prometheus
// text format. A nil *Metrics records nothing.
type Metrics struct {
	mu sync.Mutex
	// Events.
	consumed, acked, ignored, invalid, redelivered, givenBack int64
	hooks                                                     map[string]*hookMetrics
	gauges                                                    []gauge
}

type hookMetrics struct {
	kind                        string
	sent, digests               int64 // messages accepted; of which digests
	covered                     int64 // invocations those messages covered
	attemptsFailed, retries     int64
	deadLettered, deadLetterErr int64
	skipped, logErr             int64 // not posted again: the webhook had it; delivery log errors
	queued                      int
}

type gauge struct {
	name, help string
	value      func() float64
}

// NewMetrics returns an empty registry.
func NewMetrics() *Metrics { return &Metrics{hooks: map[string]*hookMetrics{}} }

func (m *Metrics) add(field *int64, n int64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	*field += n
	m.mu.Unlock()
}

func (m *Metrics) hook(w Webhook, change func(*hookMetrics)) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	h, ok := m.hooks[w.Name]
	if !ok {
		h = &hookMetrics{kind: w.Kind}
		m.hooks[w.Name] = h
	}
	change(h)
}

func (m *Metrics) gauge(name, help string, value func() float64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gauges = append(m.gauges, gauge{name, help, value})
}

// Snapshot is a copy of the counters, for tests and reports.
type Snapshot struct {
	Consumed, Acked, Ignored, Invalid, Redelivered, GivenBack int64
	Webhooks                                                  map[string]WebhookSnapshot
}

// WebhookSnapshot is one webhook's counters.
type WebhookSnapshot struct {
	Sent, Digests, Covered, AttemptsFailed, Retries, DeadLettered, DeadLetterErrors int64
	Skipped, DeliveryLogErrors                                                      int64
	Queued                                                                          int
}

// Snapshot copies the counters.
func (m *Metrics) Snapshot() Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Snapshot{Consumed: m.consumed, Acked: m.acked, Ignored: m.ignored, Invalid: m.invalid, Redelivered: m.redelivered,
		GivenBack: m.givenBack, Webhooks: map[string]WebhookSnapshot{}}
	for name, h := range m.hooks {
		s.Webhooks[name] = WebhookSnapshot{Sent: h.sent, Digests: h.digests, Covered: h.covered, AttemptsFailed: h.attemptsFailed,
			Retries: h.retries, DeadLettered: h.deadLettered, DeadLetterErrors: h.deadLetterErr,
			Skipped: h.skipped, DeliveryLogErrors: h.logErr, Queued: h.queued}
	}
	return s
}

// ServeHTTP writes the metrics in the Prometheus text exposition format.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	for _, c := range []struct {
		name, help string
		v          int64
	}{
		{"capoller_notify_events_consumed_total", "Events read from the stream, redeliveries included.", m.consumed},
		{"capoller_notify_events_acked_total", "Events acknowledged: delivered, dead-lettered, or worth no message.", m.acked},
		{"capoller_notify_events_ignored_total", "Events acknowledged without a message: no rule wants them.", m.ignored},
		{"capoller_notify_events_invalid_total", "Messages that are not capoller events (terminated, never redelivered).", m.invalid},
		{"capoller_notify_events_redelivered_total", "Events the server delivered again while held or after their ack.", m.redelivered},
		{"capoller_notify_events_given_back_total", "Events handed back for redelivery (dead-letter failed, or notify stopped).", m.givenBack},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", c.name, c.help, c.name, c.name, c.v)
	}
	names := slices.Sorted(maps.Keys(m.hooks))
	for _, c := range []struct {
		name, typ, help string
		v               func(*hookMetrics) int64
	}{
		{"capoller_notify_messages_sent_total", "counter", "Messages a webhook accepted, digests included.", func(h *hookMetrics) int64 { return h.sent }},
		{"capoller_notify_digests_total", "counter", "Digest messages a webhook accepted (a storm beyond its rate limit).", func(h *hookMetrics) int64 { return h.digests }},
		{"capoller_notify_invocations_notified_total", "counter", "Invocations covered by accepted messages.", func(h *hookMetrics) int64 { return h.covered }},
		{"capoller_notify_messages_failed_total", "counter", "Posts that failed (each attempt).", func(h *hookMetrics) int64 { return h.attemptsFailed }},
		{"capoller_notify_retries_total", "counter", "Posts retried after a backoff.", func(h *hookMetrics) int64 { return h.retries }},
		{"capoller_notify_dead_lettered_total", "counter", "Invocation summaries dead-lettered after the retries ran out or a permanent refusal.", func(h *hookMetrics) int64 { return h.deadLettered }},
		{"capoller_notify_dead_letter_errors_total", "counter", "Dead-letter publishes that failed (their events are redelivered).", func(h *hookMetrics) int64 { return h.deadLetterErr }},
		{"capoller_notify_redeliveries_skipped_total", "counter", "Redelivered invocation summaries not posted again: the webhook was done with them already.", func(h *hookMetrics) int64 { return h.skipped }},
		{"capoller_notify_delivery_log_errors_total", "counter", "Delivery log reads or writes that failed (a redelivery may post twice).", func(h *hookMetrics) int64 { return h.logErr }},
		{"capoller_notify_queued", "gauge", "Invocation summaries waiting for the webhook.", func(h *hookMetrics) int64 { return int64(h.queued) }},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", c.name, c.help, c.name, c.typ)
		for _, n := range names {
			fmt.Fprintf(w, "%s{webhook=%q,kind=%q} %d\n", c.name, n, m.hooks[n].kind, c.v(m.hooks[n]))
		}
	}
	for _, g := range m.gauges {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %g\n", g.name, g.help, g.name, g.name, g.value())
	}
}
