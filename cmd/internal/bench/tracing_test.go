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
	if (&engines{}).provider() != nil {
		t.Error("without --tracing the pipeline has a tracer provider")
	}
}
