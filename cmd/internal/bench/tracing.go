package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/capoller/capoller/poller/tracing"
)

// collector is an OTLP/HTTP trace collector in process that reads every
// export and keeps nothing: tracing's cost, without a collector's.
type collector struct {
	srv      *httptest.Server
	requests atomic.Int64
	bytes    atomic.Int64
}

func newCollector() *collector {
	c := &collector{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		c.requests.Add(1)
		c.bytes.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	return c
}

// URL is the collector's OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT).
func (c *collector) URL() string { return c.srv.URL }

func (c *collector) close() { c.srv.Close() }

// traced is the tracing of the run's in-process pipeline: the SDK, with
// its batch processor, exporting over OTLP/HTTP to the collector, as
// capoller run does with OTEL_EXPORTER_OTLP_ENDPOINT set.
func traced(ctx context.Context, c *collector) (*tracing.Tracing, error) {
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(c.URL()+"/v1/traces"))
	if err != nil {
		return nil, err
	}
	return tracing.New(ctx, tracing.Options{ServiceName: "capoller-bench", Exporter: exp})
}

// provider is the pipeline's tracer provider. Without --tracing it is
// capoller run's default: trace ids for the events, no exporter.
func (e *engines) provider() trace.TracerProvider {
	if e.tracing == nil {
		return tracing.Unexported().Provider()
	}
	return e.tracing.Provider()
}
