// Package tracing sets up OpenTelemetry's SDK from its standard
// environment, for every command of capoller that traces: the daemon
// (its cycles, API calls, publishes and commits) and notify (the events
// it handles).
//
// Spans are exported when the environment names where they go
// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT), or
// asks for OTLP explicitly (OTEL_TRACES_EXPORTER=otlp, to the default
// endpoint). Otherwise (or with OTEL_TRACES_EXPORTER=none) [New] returns
// a provider without an exporter that samples nothing: no goroutine, no
// connection, no span recorded, but every trace still has its ids, so
// that each event carries a trace context (flagged not sampled). OTEL_SDK_DISABLED=true turns
// tracing off whole: OpenTelemetry's no-op provider, and events without a
// trace context. The rest of the standard environment is the
// SDK's and the exporters' own (OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_BSP_*,
// OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION, _CERTIFICATE…).
//
// It lives under poller/ only because the top level is fixed; it imports
// nothing of the module.
package tracing

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
)

// Options configures [New]. Zero values get the documented defaults.
type Options struct {
	// ServiceName is service.name unless OTEL_SERVICE_NAME (or
	// OTEL_RESOURCE_ATTRIBUTES) names it; default capoller.
	ServiceName string
	// Version is service.version.
	Version string
	// Logger receives the exporter's failures (at most one line a
	// minute); default no-op.
	Logger *zap.Logger
	// Exporter, if set, receives the spans instead of an OTLP exporter,
	// whatever the environment says (tests, the bench).
	Exporter sdktrace.SpanExporter
	// LookupEnv reads the environment; default os.LookupEnv. The
	// exporters read OTEL_EXPORTER_OTLP_* from the process's own.
	LookupEnv func(string) (string, bool)
}

// Tracing is a tracer provider: the SDK's, with an exporter when spans
// are exported; else the SDK's without one, or the no-op one when the SDK
// is disabled.
type Tracing struct {
	provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider // nil unless spans are exported
	describe string
}

// Provider is the provider to trace with.
func (t *Tracing) Provider() trace.TracerProvider { return t.provider }

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t.sdk != nil }

// String says where spans go: "off", or the exporter and its protocol.
func (t *Tracing) String() string { return t.describe }

// Shutdown exports the spans still queued, within ctx, and stops the
// exporter. It does nothing when tracing is off.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: flush spans: %w", err)
	}
	return nil
}

// Off is the no-op provider: nothing is recorded, nothing exported, and
// spans have no ids (events carry no trace context).
func Off() *Tracing { return &Tracing{provider: noop.NewTracerProvider(), describe: "off"} }

// Unexported is the SDK's provider that samples nothing: each trace and
// span gets its ids, so that events carry a trace context, flagged not
// sampled (capoller records nothing), and no span is recorded or kept.
func Unexported() *Tracing {
	return &Tracing{provider: sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample())), describe: "not exported"}
}

// New reads the environment and returns the provider it asks for; an
// error names the variable and what is wrong with it. It connects to
// nothing: the exporter dials on its first export.
func New(ctx context.Context, opts Options) (*Tracing, error) {
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.ServiceName == "" {
		opts.ServiceName = "capoller"
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	exporter, describe := opts.Exporter, "in-process exporter"
	if exporter == nil {
		mode, protocol, err := fromEnv(opts.LookupEnv)
		if err != nil {
			return nil, err
		}
		switch mode {
		case modeDisabled:
			return Off(), nil
		case modeUnexported:
			return Unexported(), nil
		}
		if exporter, err = newExporter(ctx, protocol); err != nil {
			return nil, err
		}
		describe = "otlp " + protocol
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", opts.ServiceName)}
	if opts.Version != "" {
		attrs = append(attrs, attribute.String("service.version", opts.Version))
	}
	// Later detectors win: the environment names the service over the default.
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithTelemetrySDK(), resource.WithHost(), resource.WithFromEnv())
	if err != nil && res == nil {
		return nil, fmt.Errorf("tracing: OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	// The handler is the SDK's only way to report a failed export.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(newErrorLog(opts.Logger).handle))
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res)) // OTEL_TRACES_SAMPLER, OTEL_BSP_* apply
	return &Tracing{provider: sdk, sdk: sdk, describe: describe}, nil
}

// mode is what the environment asks of tracing.
type mode int

const (
	modeUnexported mode = iota // trace ids for the events, no exporter
	modeExported               // spans exported over OTLP
	modeDisabled               // OTEL_SDK_DISABLED: no tracing at all
)

// fromEnv says what the environment asks of tracing, and the OTLP
// protocol when spans are exported.
func fromEnv(lookup func(string) (string, bool)) (m mode, protocol string, err error) {
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	if v := get("OTEL_SDK_DISABLED"); strings.EqualFold(v, "true") {
		return modeDisabled, "", nil
	}
	endpoint := get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || get("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	on := false
	switch exp := strings.ToLower(get("OTEL_TRACES_EXPORTER")); exp {
	case "none":
	case "otlp":
		on = true
	case "":
		on = endpoint
	default:
		return 0, "", fmt.Errorf("OTEL_TRACES_EXPORTER=%q: capoller exports spans with otlp, or none", exp)
	}
	if !on {
		return modeUnexported, "", nil
	}
	protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	name := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if protocol == "" {
		protocol, name = get("OTEL_EXPORTER_OTLP_PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	switch protocol {
	case "":
		protocol = "http/protobuf" // the specification's default
	case "http/protobuf", "http/json", "grpc":
	default:
		return 0, "", fmt.Errorf("%s=%q: want http/protobuf, http/json or grpc", name, protocol)
	}
	return modeExported, protocol, nil
}

// newExporter builds the OTLP exporter of a protocol; it reads its
// endpoint, headers, timeout, compression and certificates from the
// environment itself.
func newExporter(ctx context.Context, protocol string) (sdktrace.SpanExporter, error) {
	var exp sdktrace.SpanExporter
	var err error
	switch protocol {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	case "http/json":
		exp, err = otlptracehttp.New(ctx, otlptracehttp.WithEncoding(otlptracehttp.EncodingJSON))
	default:
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: the OTLP %s exporter (OTEL_EXPORTER_OTLP_*): %w", protocol, err)
	}
	return exp, nil
}

// errorLog logs the SDK's errors (a failed export, a dropped span) at
// most once a minute, with how many there were since.
type errorLog struct {
	log    *zap.Logger
	mu     sync.Mutex
	last   time.Time
	missed int
}

func newErrorLog(log *zap.Logger) *errorLog { return &errorLog{log: log} }

func (l *errorLog) handle(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < time.Minute {
		l.missed++
		return
	}
	l.log.Warn("tracing: spans not exported", zap.Error(err), zap.Int("errors_since_last_line", l.missed))
	l.last, l.missed = now, 0
}
