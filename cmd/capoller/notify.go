package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/capoller/capoller/poller/sensitive"
	"github.com/capoller/capoller/poller/tracing"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/notify"
)

type notifyOptions struct {
	config, natsURL, stream, prefix, durable, dead, metricsAddr, logFormat, logLevel string
	// nats is how notify authenticates to NATS: run's settings.
	nats publisher.NATSAuth
}

// notifyCommand runs "capoller notify": a durable JetStream consumer that
// posts one chat message per failing invocation (see package notify).
func notifyCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("notify")
	var o notifyOptions
	fs.StringVar(&o.config, "config", "", "notify YAML file: webhooks, rules, grouping (required)")
	fs.StringVar(&o.durable, "durable", "capoller-notify", "the durable consumer's name (and of its delivery log, the KV bucket <stream>_<durable>_DELIVERED); run one notify per durable: two sharing one would each get part of an invocation's events")
	fs.StringVar(&o.dead, "dead-letter-subject", "", "where undeliverable messages are published (default <prefix>-notify.dead)")
	// run's settings of the same names, with their environment variables.
	shared := defaultConfig()
	bindSettings(fs, append(settingsNamed("nats-url", "stream", "subject-prefix", "metrics-addr", "log-format", "log-level"), natsAuthSettings()...), &shared, os.Getenv)
	if code, ok := parseArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	o.natsURL, o.stream, o.prefix, o.metricsAddr = shared.NATSURL, shared.Stream, shared.SubjectPrefix, shared.MetricsAddr
	o.logFormat, o.logLevel = shared.LogFormat, shared.LogLevel
	o.nats = shared.NATS
	if o.dead == "" {
		o.dead = o.prefix + "-notify.dead"
	}
	settings, err := o.check()
	if err != nil {
		fmt.Fprintf(stderr, "capoller notify: configuration: %v\n", err)
		return 2
	}
	log, err := newLogger(o.logFormat, o.logLevel, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "capoller notify: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	tracer, err := tracing.New(ctx, tracing.Options{ServiceName: "capoller-notify", Version: versionString(), Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "capoller notify: configuration: %v\n", err)
		return 2
	}
	defer stopTracing(tracer, log)
	if err := runNotify(ctx, o, settings, log, tracer); err != nil {
		if errors.As(err, new(configError)) {
			fmt.Fprintf(stderr, "capoller notify: configuration: %v\n", err)
			return 2
		}
		log.Error("capoller notify stopped", zap.Error(err))
		return 1
	}
	return 0
}

func (o notifyOptions) check() (*notify.Settings, error) {
	if o.config == "" {
		return nil, errors.New("--config: required")
	}
	if o.natsURL == "embedded" {
		return nil, errors.New(`--nats-url embedded: notify reads the stream of a running NATS server; give its URL`)
	}
	if err := checkNATSURL(o.natsURL); err != nil {
		return nil, err
	}
	if err := errors.Join(o.nats.Check(o.natsURL)...); err != nil {
		return nil, err
	}
	if err := publisher.ValidStreamName(o.stream); err != nil {
		return nil, err
	}
	if err := publisher.ValidPrefix(o.prefix); err != nil {
		return nil, err
	}
	if err := publisher.ValidStreamName(o.durable); err != nil {
		return nil, fmt.Errorf("--durable: %w", err)
	}
	if err := publisher.ValidStreamName("KV_" + notify.DeliveredBucket(o.stream, o.durable)); err != nil {
		return nil, fmt.Errorf("--stream and --durable: too long together for the delivery log's bucket: %w", err)
	}
	if o.logFormat != "json" && o.logFormat != "console" {
		return nil, fmt.Errorf("--log-format %q: want json or console", o.logFormat)
	}
	raw, err := os.ReadFile(o.config)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	settings, err := notify.ParseConfig(raw, os.Getenv, os.ReadFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.config, yamlError(err, raw, notify.Config{}))
	}
	return settings, nil
}

func runNotify(ctx context.Context, o notifyOptions, s *notify.Settings, log *zap.Logger, tracer *tracing.Tracing) error {
	metricsLn, err := listenMetrics(o.metricsAddr)
	if err != nil {
		return err
	}
	if metricsLn != nil {
		defer func() { _ = metricsLn.Close() }()
	}
	nc, err := publisher.Dial(publisher.DialOptions{URL: o.natsURL, Auth: o.nats, Name: "capoller-notify", Logger: log,
		Options: []nats.Option{nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true)}})
	if err != nil {
		return err
	}
	defer nc.Close()
	js := nc.JetStream
	var cons jetstream.Consumer
	if err := retry(ctx, log, "set up the durable consumer", func() (err error) {
		cons, err = notify.EnsureConsumer(ctx, js, notify.ConsumerOptions{Stream: o.stream, SubjectPrefix: o.prefix, Durable: o.durable, Settings: s})
		if errors.Is(err, notify.ErrConsumerConflict) {
			return backoff.Permanent(configError{err})
		}
		return err
	}); err != nil {
		return err
	}
	var dead *notify.NATSDeadLetter
	if err := retry(ctx, log, "look up the dead-letter subject", func() (err error) {
		dead, err = notify.NewNATSDeadLetter(ctx, nc.Conn, js, o.dead)
		return err
	}); err != nil {
		return err
	}
	var delivered *notify.KVDeliveryLog
	if err := retry(ctx, log, "open the delivery log", func() (err error) {
		delivered, err = notify.NewKVDeliveryLog(ctx, js, notify.KVDeliveryLogOptions{Bucket: notify.DeliveredBucket(o.stream, o.durable)})
		return err
	}); err != nil {
		return err
	}
	n, err := notify.New(notify.Options{Settings: s, Logger: log, DeadLetter: dead, Delivered: delivered, Tracing: tracer.Provider()})
	if err != nil {
		return err
	}
	if metricsLn != nil {
		mux := http.NewServeMux()
		reg := newRegistry()
		reg.MustRegister(n.Metrics())
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
			if !nc.IsConnected() {
				http.Error(w, "NATS disconnected", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok\n"))
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(metricsLn) }()
		defer func() { _ = srv.Close() }()
	}
	dlStream := dead.Stream()
	if dlStream == "" {
		dlStream = "(none: core NATS)"
	}
	hooks := make([]string, 0, len(s.Webhooks))
	for _, w := range s.Webhooks {
		hooks = append(hooks, w.String())
	}
	log.Info("capoller notify running", zap.String("nats", sensitive.RedactURL(o.natsURL)), zap.String("stream", o.stream), zap.String("durable", o.durable),
		zap.String("delivery_log", notify.DeliveredBucket(o.stream, o.durable)),
		zap.Strings("webhooks", hooks), zap.Int("rules", len(s.Rules)), zap.String("dead_letter_subject", o.dead), zap.String("dead_letter_stream", dlStream),
		zap.Stringer("tracing", tracer))
	err = n.Run(ctx, cons)
	if derr := nc.Drain(); derr != nil {
		log.Warn("draining the NATS connection", zap.Error(derr))
	}
	if err != nil {
		return err // main logs it
	}
	log.Info("capoller notify stopped", zap.String("durable", o.durable), zap.String("reason", stopReason(ctx)))
	return nil
}

// stopReason says why a command's context ended: a signal, or nothing yet.
func stopReason(ctx context.Context) string {
	if ctx.Err() != nil {
		return "asked to stop (SIGTERM or SIGINT)"
	}
	return "its consumer ended"
}
