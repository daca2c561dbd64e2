package events

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/propagation"
)

// The W3C trace context's names: the envelope's attributes
// ([Event.TraceParent], [Event.TraceState]) and the message's headers.
const (
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// TraceContext returns ctx with the event's trace context as its remote
// parent: a span a subscriber starts from it is a child of the publish
// that announced the event, in the trace of the cycle that observed the
// change. It returns ctx as it is when the event carries no valid trace
// context (capoller did not trace, or the event came from a replay).
func (e Event) TraceContext(ctx context.Context) context.Context {
	if e.TraceParent == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.MapCarrier{HeaderTraceParent: e.TraceParent, HeaderTraceState: e.TraceState})
}

// HeaderTraceContext is [Event.TraceContext] from a message's headers, for
// a subscriber that does not decode the body first. A nats.Header is a
// map[string][]string; the names are matched in any case.
func HeaderTraceContext(ctx context.Context, header map[string][]string) context.Context {
	c := headerCarrier(header)
	if c.Get(HeaderTraceParent) == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, c)
}

// headerCarrier reads W3C names from message headers: NATS keeps a
// header's case as it was sent.
type headerCarrier map[string][]string

func (h headerCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range h {
		if strings.EqualFold(k, key) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

func (h headerCarrier) Set(key, value string) { h[key] = []string{value} }

func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}
