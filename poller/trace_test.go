package poller_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/publisher/events"
)

// tracer is an SDK provider that keeps every ended span in memory.
func tracer(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// spansNamed returns the ended spans of a name.
func spansNamed(spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

// subscribe reads every message of the stream as a subscriber does, and
// returns each one's context to continue its trace: from the envelope,
// checked against the headers'.
func subscribe(t *testing.T, h *harness) (ctxs []context.Context, evs []events.Event) {
	t.Helper()
	cons, err := h.js.OrderedConsumer(t.Context(), h.stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(1000)
	if err != nil {
		t.Fatal(err)
	}
	for msg := range batch.Messages() {
		ev, err := events.Decode(msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		ctx := ev.TraceContext(t.Context())
		fromHeaders := events.HeaderTraceContext(t.Context(), msg.Headers())
		if a, b := trace.SpanContextFromContext(ctx), trace.SpanContextFromContext(fromHeaders); !a.IsValid() || !a.Equal(b) {
			t.Fatalf("event %s: the envelope's trace context %v, the headers' %v", ev.ID, a, b)
		}
		ctxs, evs = append(ctxs, ctx), append(evs, ev)
	}
	return ctxs, evs
}

// One poll, its API calls, its publish and commit, and a subscriber's
// span for each event it published are one trace, each span the child of
// the step before.
func TestOnePollIsOneTraceToTheSubscriber(t *testing.T) {
	h := newHarness(t)
	tp, exp := tracer(t)
	h.run("echo hi; exit 0", 0, h.instances[0])
	h.run("echo hi; exit 0", 0, h.instances[1])
	eventually(t, 10*time.Second, "the invocation to finish", func() bool { return allFinal(truthByRecord(h.sim)) })
	opts := h.listerOptions(1) // a page per record: several API calls
	opts.Tracing = tp
	src, err := cloudassist.NewECS(opts)
	if err != nil {
		t.Fatal(err)
	}
	p := h.poller(src, h.store(), h.publisher(h.js), func(o *poller.Options) { o.Tracing, o.Initial = tp, diff.InitialEmit })
	rep := p.RunOnce(t.Context())
	if rep.Err != nil || rep.Published != 4 {
		t.Fatalf("the cycle: %d published, %v; want the invocations' and their instances' events", rep.Published, rep.Err)
	}
	ctxs, evs := subscribe(t, h)
	for i, ctx := range ctxs {
		_, span := tp.Tracer("subscriber").Start(ctx, "handle "+evs[i].ID, trace.WithSpanKind(trace.SpanKindConsumer))
		span.End()
	}

	spans := exp.GetSpans()
	cycles := spansNamed(spans, "capoller.cycle")
	if len(cycles) != 1 {
		t.Fatalf("%d cycle spans, want 1", len(cycles))
	}
	cycle := cycles[0].SpanContext
	attrs := map[string]string{}
	for _, kv := range cycles[0].Attributes {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	if attrs["capoller.region"] != region || attrs["capoller.strategy"] != "full" || attrs["capoller.published"] != "4" {
		t.Errorf("the cycle's attributes: %v", attrs)
	}
	childOf := func(s tracetest.SpanStub, parent trace.SpanContext) bool {
		return s.SpanContext.TraceID() == cycle.TraceID() && s.Parent.SpanID() == parent.SpanID()
	}
	calls := spansNamed(spans, "DescribeInvocations")
	if len(calls) < 2 {
		t.Errorf("%d API call spans, want one per page (2 at least)", len(calls))
	}
	for _, c := range calls {
		if !childOf(c, cycle) {
			t.Errorf("API call span %v is not the cycle's child", c.SpanContext.SpanID())
		}
	}
	publishes := spansNamed(spans, "capoller.publish")
	if len(publishes) != 1 || !childOf(publishes[0], cycle) {
		t.Fatalf("publish spans %d, want 1, the cycle's child", len(publishes))
	}
	publish := publishes[0].SpanContext
	for _, name := range []string{"capoller.stage"} {
		if s := spansNamed(spans, name); len(s) != 1 || !childOf(s[0], publish) {
			t.Errorf("%s: %d spans, want 1, the publish's child", name, len(s))
		}
	}
	if s := spansNamed(spans, "capoller.commit"); len(s) != 1 || !childOf(s[0], cycle) {
		t.Errorf("commit: %d spans, want 1, the cycle's child", len(s))
	}
	var handled int
	for _, s := range spans {
		if s.SpanKind == trace.SpanKindConsumer {
			handled++
			if !childOf(s, publish) || !s.Parent.IsRemote() {
				t.Errorf("%s: trace %v parent %v; want the publish's %v", s.Name, s.SpanContext.TraceID(), s.Parent.SpanID(), publish)
			}
		}
	}
	if handled != 4 {
		t.Errorf("%d subscriber spans, want 4", handled)
	}
}

// failOnce is a publisher whose first publish fails: its batch stays
// staged, as when the process died before the acknowledgements.
type failOnce struct {
	poller.Publisher
	failed atomic.Bool
}

func (f *failOnce) Publish(ctx context.Context, batch []diff.Transition) (poller.PublishResult, error) {
	if f.failed.CompareAndSwap(false, true) {
		return poller.PublishResult{}, errors.New("the process died")
	}
	return f.Publisher.Publish(ctx, batch)
}

// A batch staged by a cycle that did not publish it is published by the
// next owner with the trace context it was staged with: the trace of the
// cycle that observed the change, whichever publish reaches the stream.
// The new publish is in the new cycle's trace and links to the first.
// Event ids do not depend on the trace context.
func TestARepublishedBatchKeepsTheTraceOfItsObservation(t *testing.T) {
	h := newHarness(t)
	h.run("echo hi; exit 0", 0, h.instances[0])
	eventually(t, 10*time.Second, "the invocation to finish", func() bool { return allFinal(truthByRecord(h.sim)) })
	first, firstSpans := tracer(t)
	src, st, pub := h.parts(50)
	dying := h.poller(src, st, &failOnce{Publisher: pub}, func(o *poller.Options) { o.Tracing, o.Initial = first, diff.InitialEmit })
	if rep := dying.RunOnce(t.Context()); rep.Err == nil {
		t.Fatal("the first cycle published")
	}
	staged := spansNamed(firstSpans.GetSpans(), "capoller.publish")
	if len(staged) != 1 {
		t.Fatalf("%d publish spans in the first cycle, want 1", len(staged))
	}
	observed := staged[0].SpanContext

	second, secondSpans := tracer(t)
	owner := h.poller(src, st, pub, func(o *poller.Options) { o.Tracing, o.Initial = second, diff.InitialEmit })
	rep := owner.RunOnce(t.Context())
	if rep.Err != nil || rep.Published != 2 || len(rep.Transitions) != 2 {
		t.Fatalf("the next owner's cycle: %d published, %v", rep.Published, rep.Err)
	}
	ctxs, evs := subscribe(t, h)
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2", len(evs))
	}
	for i, ctx := range ctxs {
		if sc := trace.SpanContextFromContext(ctx); sc.TraceID() != observed.TraceID() || sc.SpanID() != observed.SpanID() {
			t.Errorf("event %s carries %v, want the first cycle's publish %v", evs[i].ID, sc, observed)
		}
	}
	republished := spansNamed(secondSpans.GetSpans(), "capoller.publish")
	if len(republished) != 1 {
		t.Fatalf("%d publish spans in the next owner's cycle, want 1", len(republished))
	}
	r := republished[0]
	cycle := spansNamed(secondSpans.GetSpans(), "capoller.cycle")[0].SpanContext
	if r.SpanContext.TraceID() != cycle.TraceID() || r.SpanContext.TraceID() == observed.TraceID() {
		t.Errorf("the re-publish is in trace %v; want its own cycle's %v", r.SpanContext.TraceID(), cycle.TraceID())
	}
	if len(r.Links) != 1 || r.Links[0].SpanContext.SpanID() != observed.SpanID() || r.Links[0].SpanContext.TraceID() != observed.TraceID() {
		t.Errorf("the re-publish links to %v, want the first publish %v", r.Links, observed)
	}

	// Published again under another trace context, the same events are
	// the same ids: JetStream drops them.
	again := make([]diff.Transition, 0, len(rep.Transitions))
	for _, tr := range rep.Transitions {
		tr.Trace = diff.TraceContext{Parent: "00-11111111111111111111111111111111-2222222222222222-01"}
		again = append(again, tr)
	}
	res, err := pub.Publish(t.Context(), again)
	if err != nil || res.Duplicates != len(again) || res.Published != 0 {
		t.Errorf("published again with another trace context: %+v, %v; want every one a duplicate", res, err)
	}
}
