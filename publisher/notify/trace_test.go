package notify_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher/notify"
)

// notify handles each event in a span of its own, the child of the
// publish that announced it: the trace goes on from the cycle that
// observed the change.
func TestNotifyContinuesEachEventsTrace(t *testing.T) {
	e := newEnv(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	hook := newHookStub(t, notify.KindGeneric, time.Now)
	s := settings(t, "webhooks:\n  - {name: sink, kind: generic, url_env: GEN_URL}\n", map[string]string{"GEN_URL": hook.srv.URL + "/hook"})
	n, _, _ := e.start(t, s, notify.Options{Tracing: tp})

	const traceID, publishID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	inv := failingInvocation("prod", "cn-hangzhou", "t-traced", "deploy", 3, t0)
	for i := range inv {
		inv[i].Trace.Parent = "00-" + traceID + "-" + publishID + "-01"
	}
	e.publish(t, inv)
	testenv.WaitFor(t, 10*time.Second, "the 4 events to be handled", func() error {
		if got := n.Metrics().Snapshot().Consumed; got != 4 {
			return fmt.Errorf("%d consumed", got)
		}
		return nil
	})
	var handled int
	for _, span := range exp.GetSpans() {
		if span.Name != "capoller.notify.handle" {
			continue
		}
		handled++
		if span.SpanContext.TraceID().String() != traceID || span.Parent.SpanID().String() != publishID || !span.Parent.IsRemote() {
			t.Errorf("handled in trace %v under %v; want %s under the publish %s", span.SpanContext.TraceID(), span.Parent.SpanID(), traceID, publishID)
		}
	}
	if handled != 4 {
		t.Errorf("%d spans of handled events, want 4", handled)
	}
}
