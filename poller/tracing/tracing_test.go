package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/trace/noop"
	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/capoller/capoller/poller/tracing"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

// Without an endpoint, or with OTEL_TRACES_EXPORTER=none, no exporter
// is started and nothing recorded, but spans still get their ids (not
// sampled), so that events
// carry a trace context; OTEL_SDK_DISABLED is OpenTelemetry's no-op
// provider, without ids.
func TestNoExporterWithoutConfiguration(t *testing.T) {
	for _, c := range []struct {
		vars     map[string]string
		disabled bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_SERVICE_NAME": "capoller-prod", "OTEL_EXPORTER_OTLP_HEADERS": "api-key=x", "OTEL_TRACES_SAMPLER": "always_on"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"}, true},
	} {
		tr, err := tracing.New(t.Context(), tracing.Options{LookupEnv: env(c.vars)})
		if err != nil {
			t.Fatalf("%v: %v", c.vars, err)
		}
		if tr.Enabled() {
			t.Errorf("%v: spans are exported (%s)", c.vars, tr)
		}
		_, noOp := tr.Provider().(noop.TracerProvider)
		_, span := tr.Provider().Tracer("t").Start(t.Context(), "s")
		sc := span.SpanContext()
		span.End()
		switch {
		case c.disabled && (!noOp || sc.IsValid() || tr.String() != "off"):
			t.Errorf("%v: provider %T (%s), span context valid %v; want the no-op provider", c.vars, tr.Provider(), tr, sc.IsValid())
		case !c.disabled && (noOp || !sc.IsValid() || sc.IsSampled() || span.IsRecording() || tr.String() != "not exported"):
			t.Errorf("%v: provider %T (%s), span context %v; want trace ids, not sampled nor recorded, and no exporter", c.vars, tr.Provider(), tr, sc)
		}
		if err := tr.Shutdown(t.Context()); err != nil {
			t.Errorf("%v: shutdown: %v", c.vars, err)
		}
	}
}

// What capoller cannot use stops the start, naming the variable.
func TestBadTracingSettingsNameTheirVariable(t *testing.T) {
	for _, c := range []struct{ vars map[string]string }{
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}},
	} {
		_, err := tracing.New(t.Context(), tracing.Options{LookupEnv: env(c.vars)})
		var name string
		for k := range c.vars {
			if k != "OTEL_EXPORTER_OTLP_ENDPOINT" {
				name = k
			}
		}
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: %v; want an error naming %s", c.vars, err, name)
		}
	}
}

// receiver is an OTLP/HTTP collector in process: it keeps the requests.
type receiver struct {
	mu       sync.Mutex
	requests []*collector.ExportTraceServiceRequest
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	var m collector.ExportTraceServiceRequest
	if req.URL.Path != "/v1/traces" || proto.Unmarshal(body, &m) != nil {
		http.Error(w, "not an OTLP trace export", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.requests = append(r.requests, &m)
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(nil)
}

func (r *receiver) spans() (names []string, services []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, req := range r.requests {
		for _, rs := range req.ResourceSpans {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.Key == "service.name" {
					services = append(services, kv.Value.GetStringValue())
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					names = append(names, s.Name)
				}
			}
		}
	}
	return names, services
}

// With OTEL_EXPORTER_OTLP_ENDPOINT, spans reach the collector by the
// shutdown at the latest; turned off, the same endpoint gets nothing.
func TestSpansReachTheOTLPEndpointOnlyWhenConfigured(t *testing.T) {
	for _, c := range []struct {
		disabled string
		want     int
	}{{"false", 1}, {"true", 0}} {
		rcv := &receiver{}
		srv := httptest.NewServer(rcv)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
		t.Setenv("OTEL_SERVICE_NAME", "capoller-test")
		t.Setenv("OTEL_SDK_DISABLED", c.disabled)
		tr, err := tracing.New(t.Context(), tracing.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, span := tr.Provider().Tracer("t").Start(t.Context(), "capoller.cycle")
		span.End()
		if err := tr.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		srv.Close()
		names, services := rcv.spans()
		if len(names) != c.want || c.want > 0 && (names[0] != "capoller.cycle" || services[0] != "capoller-test") {
			t.Errorf("OTEL_SDK_DISABLED=%s: the collector got spans %v of %v; want %d", c.disabled, names, services, c.want)
		}
	}
}
