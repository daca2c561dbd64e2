package poller

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/capoller/capoller/diff"
)

// A cycle's spans: the cycle, then per batch its publish (with the stage
// as its child), and its commit. The lister's API calls are children of
// the cycle too, through its context. Every event carries its publish's
// trace context, so that a subscriber's span is a child of that publish.
const (
	spanCycle   = "capoller.cycle"
	spanPublish = "capoller.publish"
	spanStage   = "capoller.stage"
	spanCommit  = "capoller.commit"
)

// StrategyNamer is a [Lister] that names how it reads the API
// (incremental, full), for its cycles' spans.
type StrategyNamer interface{ Strategy() string }

// tracerName is the instrumentation scope of the poller's spans.
const tracerName = "github.com/capoller/capoller/poller"

// shardAttributes name a shard on its spans.
func shardAttributes(s diff.Shard) []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("capoller.account", s.Account), attribute.String("capoller.source", string(s.Source)),
		attribute.String("capoller.region", s.Region)}
}

// startCycle starts a cycle's span.
func (p *Poller) startCycle(ctx context.Context, lookUps int) (context.Context, trace.Span) {
	attrs := p.spanAttrs
	if n, ok := p.src.(StrategyNamer); ok {
		attrs = append(attrs[:len(attrs):len(attrs)], attribute.String("capoller.strategy", n.Strategy()))
	}
	if lookUps > 0 {
		attrs = append(attrs[:len(attrs):len(attrs)], attribute.Int("capoller.hint_lookups", lookUps))
	}
	return p.tracer.Start(ctx, spanCycle, trace.WithAttributes(attrs...))
}

// endCycle ends a cycle's span with its counts, and its error.
func endCycle(span trace.Span, rep *Report) {
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("capoller.records", rep.Records), attribute.Bool("capoller.complete", rep.Complete),
			attribute.Bool("capoller.first_sight", rep.FirstSight), attribute.Int("capoller.transitions", len(rep.Transitions)),
			attribute.Int("capoller.published", rep.Published), attribute.Int("capoller.duplicates", rep.Duplicates),
			attribute.Int("capoller.committed", rep.Committed), attribute.Int("capoller.expired", rep.Expired))
		failed(span, rep.Err)
	}
	span.End()
}

// failed records err on span, if any.
func failed(span trace.Span, err error) {
	if err == nil {
		return
	}
	span.RecordError(err)
	msg := err.Error()
	if ce, ok := err.(*CycleError); ok { //nolint:errorlint // the cycle's own error, as the cycle returns it
		msg = string(ce.Stage) + " failed"
	}
	span.SetStatus(codes.Error, msg)
}

// startPublish starts the span of a batch's publish. A batch staged by
// an earlier cycle links to the publish its events carry the trace
// context of (its trace began with the cycle that observed them).
func (c *cycle) startPublish(ts []diff.Transition, restaged bool) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(c.p.spanAttrs...),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.operation.type", "send"),
			attribute.Int("messaging.batch.message_count", len(ts)), attribute.Bool("capoller.restaged", restaged))}
	if restaged && len(ts) > 0 {
		if sc := spanContextOf(ts[0].Trace); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	return c.p.tracer.Start(c.ctx, spanPublish, opts...)
}

// traceWith gives every transition the trace context of ctx's span, to
// publish and stage them with. Without a valid span (tracing off) they
// carry none.
func traceWith(ctx context.Context, ts []diff.Transition) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	tc := diff.TraceContext{Parent: carrier["traceparent"], State: carrier["tracestate"]}
	for i := range ts {
		ts[i].Trace = tc
	}
}

// spanContextOf parses a transition's trace context.
func spanContextOf(tc diff.TraceContext) trace.SpanContext {
	if tc.Parent == "" {
		return trace.SpanContext{}
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": tc.Parent, "tracestate": tc.State})
	return trace.SpanContextFromContext(ctx)
}
