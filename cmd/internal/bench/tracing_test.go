package bench

import (
	"context"
	"testing"
)

// With --tracing, the pipeline's spans really go out: through the SDK's
// batch processor and OTLP/HTTP to the collector in process.
func TestTracedSpansReachTheCollector(t *testing.T) {
	c := newCollector()
	defer c.close()
	tr, err := traced(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	e := &engines{tracing: tr}
	_, span := e.provider().Tracer("bench").Start(t.Context(), "capoller.cycle")
	span.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.requests.Load() == 0 || c.bytes.Load() == 0 {
		t.Errorf("the collector got %d exports, %d bytes", c.requests.Load(), c.bytes.Load())
	}
	// Without --tracing, as capoller run without OpenTelemetry's
	// variables: trace ids for the events, and nothing exported.
	before := c.requests.Load()
	_, span = (&engines{}).provider().Tracer("bench").Start(t.Context(), "capoller.cycle")
	span.End()
	if !span.SpanContext().IsValid() || c.requests.Load() != before {
		t.Errorf("without --tracing: span context valid %v, %d more exports; want ids and none", span.SpanContext().IsValid(), c.requests.Load()-before)
	}
}
