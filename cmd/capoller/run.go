package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/embedded"
)

func runCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("capoller run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg, err := loadConfig(fs, args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "capoller run: configuration: %v\n", err)
		return 2
	}
	log, err := newLogger(cfg.LogFormat, cfg.LogLevel, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "capoller run: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	redis.SetLogger(&redisLogger{log: log.Named("redis")})
	if err := daemon(ctx, cfg, log, nil); err != nil {
		if errors.As(err, new(configError)) {
			fmt.Fprintf(stderr, "capoller run: configuration: %v\n", err)
			return 2
		}
		log.Error("capoller stopped", zap.Error(err))
		return 1
	}
	return 0
}

func newLogger(format, level string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("log-level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	var enc zapcore.Encoder
	if format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl)), nil
}

// daemon runs one poller per (source, region) until ctx ends. onCycle, if
// set, sees every cycle's report (the demo prints from it).
func daemon(ctx context.Context, cfg config, log *zap.Logger, onCycle func(poller.Report)) error {
	metricsLn, err := listenMetrics(cfg.MetricsAddr)
	if err != nil {
		return err
	}
	reg := newRegistry()
	metrics := poller.NewMetrics(poller.MetricsOptions{Registerer: reg})
	ops := &opsState{starting: "connecting to NATS"}
	if metricsLn != nil {
		// From the first second, also while start-up waits for NATS or
		// Redis: /healthz says the process is alive, /readyz what it waits
		// for.
		stop := serveOps(metricsLn, opsMux(reg, ops.health, ops.ready))
		defer stop()
	}
	pprofLn, err := listenPprof(cfg.PprofAddr)
	if err != nil {
		return err
	}
	if pprofLn != nil {
		defer func() { _ = pprofLn.Close() }()
		log.Warn("the Go profiler is served", zap.String("pprof_addr", pprofLn.Addr().String()))
	}
	natsURL := cfg.NATSURL
	if natsURL == "embedded" {
		srv, err := embedded.Run(embedded.Options{StoreDir: filepath.Join(cfg.DataDir, "nats")})
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		natsURL = srv.URL()
		log.Info("embedded NATS server running", zap.String("url", natsURL), zap.String("store", filepath.Join(cfg.DataDir, "nats")))
	}
	// The client reconnects by itself, forever, except after a protocol
	// error it treats as fatal; then the daemon exits non-zero so that its
	// supervisor starts it again, and /healthz says so until it has.
	// No reconnect buffer: a publish while disconnected fails at once. A
	// buffered one would reach the stream whenever the connection came
	// back — perhaps after this replica lost the shard, past the duplicate
	// window, behind the new owner's later events of the same records.
	nc, err := publisher.Dial(publisher.DialOptions{URL: natsURL, Auth: cfg.NATS, Name: "capoller", Logger: log,
		Options:   []nats.Option{nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectBufSize(-1)},
		JetStream: []jetstream.JetStreamOpt{jetstream.WithPublishAsyncMaxPending(4096)}})
	if err != nil {
		return err
	}
	defer nc.Close()
	js := nc.JetStream
	pub, err := publisher.New(js, publisher.Options{Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, DuplicateWindow: cfg.DuplicateWindow, MaxAge: cfg.StreamMaxAge, MaxBytes: cfg.StreamMaxBytes, Replicas: cfg.StreamReplicas})
	if err != nil {
		return err
	}
	// The client gives up on a server that refuses its credentials twice
	// (it closes the connection): start-up then stops waiting and exits
	// non-zero, naming the server's refusal, rather than retry forever.
	startCtx, endStart := context.WithCancelCause(ctx)
	defer endStart(nil)
	go func() {
		select {
		case <-nc.Closed():
			endStart(natsClosedError(nc))
		case <-startCtx.Done():
		}
	}()
	startFailed := func(err error) error {
		if cause := context.Cause(startCtx); ctx.Err() == nil && errors.As(cause, new(*publisher.ClosedError)) {
			return cause
		}
		return err
	}
	var change publisher.StreamChange
	if err := retry(startCtx, log, "set up the stream", func() (err error) {
		change, err = pub.SetupStream(startCtx)
		if errors.As(err, new(*publisher.StreamConflictError)) {
			return backoff.Permanent(err) // retrying will not change the operator's stream
		}
		return nc.Explain(err) // the API call's own error says little
	}); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting: a clean stop
		}
		return startFailed(err)
	}
	ops.setStarting("opening the checkpoint store")
	logStreamChange(log, cfg.Stream, change)

	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "capoller_nats_publish_batches_total",
			Help: "Batches published (one wait for acknowledgements each)."},
			func() float64 { b, _ := pub.Requests(); return float64(b) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "capoller_nats_publishes_total",
			Help: "Messages published to JetStream (pipelined, each acknowledged)."},
			func() float64 { _, m := pub.Requests(); return float64(m) }))
	ready := newReadiness(readinessWindow(cfg))
	store, closeStore, err := openStore(startCtx, cfg, log, js, reg)
	if err != nil {
		if ctx.Err() != nil && !errors.As(err, new(configError)) {
			return nil // stopped while waiting: a clean stop
		}
		return startFailed(err)
	}
	endStart(nil)
	defer closeStore()

	shards, err := cfg.shards()
	if err != nil {
		return configError{err}
	}
	strategy, _ := cloudassist.ParseStrategy(cfg.Strategy)
	limits := map[string]*cloudassist.Limits{} // one per account: quotas are per account
	creds := map[string]cloudassist.CredentialsProvider{}
	for _, name := range cfg.accountNames() {
		// Once per account: a role is assumed once, not once per shard.
		if creds[name], err = cfg.credential(name, os.Getenv); err != nil {
			return configError{err}
		}
	}
	output, err := cfg.outputOptions() // validated with the configuration
	if err != nil {
		return configError{err}
	}
	listerOptions := func(sc shardConfig) (cloudassist.Options, error) {
		lim := limits[sc.Account]
		if lim == nil {
			var err error
			lim, err = cloudassist.NewLimits(cloudassist.LimitsOptions{QPS: cfg.QPS, Account: sc.Account, Shared: store,
				OnShared: func(err error) {
					if err != nil {
						log.Warn("the API quota shared through the store is unavailable; each replica keeps to its own share until it is back",
							zap.String("account", sc.Account), zap.Error(err))
					} else {
						log.Info("the API quota shared through the store is back", zap.String("account", sc.Account))
					}
				}})
			if err != nil {
				return cloudassist.Options{}, err
			}
			limits[sc.Account] = lim
		}
		shard := sc.Shard
		opts := cloudassist.Options{
			Region: shard.Region, Endpoint: cfg.Endpoint, PageSize: cfg.PageSize, Timeout: cfg.APITimeout,
			Credential: creds[sc.Account],
			Strategy:   strategy, ResyncEvery: cfg.ResyncEvery, Limits: lim, ThrottleWindow: cfg.ThrottleWindow,
			HeadOverlap: max(2*cfg.Interval, 10*time.Second), // an invocation a drifting page skipped is read by the next cycle
			OnCall:      func(action string) { metrics.APICall(shard, action) },
			OnBackoff:   func(c cloudassist.Class, d time.Duration) { metrics.APIBackoff(shard, c.String(), d) },
			OnError: func(e *cloudassist.APIError) {
				metrics.APIError(shard, e.Action, e.Class.String(), e.Code, e.HTTPStatus)
			},
			OnSkipped:        func(reason string) { metrics.SkippedRecord(shard, reason) },
			OnListingAborted: func(reason string) { metrics.ListingAborted(shard, reason) },
			Logger:           log.With(zap.String("account", shard.Account), zap.String("source", sc.Source)), // the lister names its region itself
			Output:           output,
		}
		return opts, nil
	}
	byShard := map[diff.Shard]shardConfig{}
	ids := make([]diff.Shard, 0, len(shards))
	for _, sc := range shards {
		// Build each lister once now, so that a bad setting is a
		// configuration error at start-up, not a shard failing later.
		opts, err := listerOptions(sc)
		if err != nil {
			return configError{err}
		}
		if _, err := newLister(sc.Source, opts); err != nil {
			return configError{fmt.Errorf("%s: %w", sc.Shard, err)}
		}
		byShard[sc.Shard] = sc
		ids = append(ids, sc.Shard)
	}
	hook := testHook(log)
	replica := checkpoint.Member{ID: cfg.ReplicaID, PID: os.Getpid(), Version: versionString()}
	replica.Host, _ = os.Hostname()
	// Every process gets a suffix of its own, so that two processes given
	// one --replica-id (a Deployment's pods sharing an environment) are two
	// owners with two fencing tokens, never one.
	replica.ID = replicaID(cfg.ReplicaID, replica.Host)
	log = log.With(zap.String("replica", replica.ID))
	loops := &pollerLoops{}
	group, err := poller.NewGroup(poller.GroupOptions{
		Replica: replica, Store: store, Shards: ids, LeaseTTL: cfg.LeaseTTL, Logger: log, Metrics: metrics,
		// A replica cut off from NATS while the others reach it steps back.
		Probe: func(ctx context.Context) error {
			if err := nc.FlushWithContext(ctx); err != nil {
				return fmt.Errorf("NATS did not answer a ping (the connection is %s): %w", strings.ToLower(nc.Status().String()), err)
			}
			return nil
		},
		Poll: func(ctx context.Context, shard diff.Shard, claim *poller.Claim) error {
			sc := byShard[shard]
			opts, err := listerOptions(sc)
			if err != nil {
				return err
			}
			lister, err := newLister(sc.Source, opts) // a new owner starts afresh: its first cycle lists everything
			if err != nil {
				return err
			}
			p, err := poller.New(lister, store, pollerPublisher{pub}, poller.Options{
				Shard: shard, Interval: cfg.Interval, Initial: diff.Initial(cfg.Initial),
				Logger: log, Metrics: metrics, Recovery: pub, Claim: claim, Hook: hook,
				OnCycle: func(r poller.Report) {
					claim.Observe(r)
					ready.observe(r)
					if onCycle != nil {
						onCycle(r)
					}
				},
			})
			if err != nil {
				return err
			}
			defer loops.add(p)()
			return p.Run(ctx)
		},
	})
	if err != nil {
		return configError{err}
	}

	readyz := func(ctx context.Context) error {
		return ready.check(ctx, func() error {
			if st := nc.Status(); st != nats.CONNECTED {
				return fmt.Errorf("the connection is %s", strings.ToLower(st.String()))
			}
			return nil
		}, store, group.Owned(), time.Now())
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case <-nc.Closed():
			return natsClosedError(nc)
		}
	})
	health := func() error {
		if nc.IsClosed() {
			return errors.New("the NATS connection is closed")
		}
		now := time.Now()
		return errors.Join(group.Turning(now), loops.turning(now))
	}
	ops.running(health, readyz)
	if pprofLn != nil {
		serveHTTP(gctx, g, pprofLn, pprofMux(), "profiler")
	}
	g.Go(func() error { return group.Run(gctx) })
	fields := []zap.Field{zap.Int("shards", len(ids)), zap.Duration("lease_ttl", cfg.LeaseTTL),
		zap.Duration("interval", cfg.Interval), zap.String("checkpoint", cfg.Checkpoint),
		zap.String("nats", redactURL(natsURL)), zap.String("stream", cfg.Stream)}
	if metricsLn != nil {
		fields = append(fields, zap.String("metrics_addr", metricsLn.Addr().String())) // the port chosen for ":0"
	}
	log.Info("capoller running", fields...)
	err = g.Wait()
	if derr := nc.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionClosed) {
		log.Warn("draining the NATS connection", zap.Error(derr))
	}
	return err
}

// listenMetrics opens the metrics address, if any, before the daemon
// connects anywhere: an address it cannot listen on (a port in use) is a
// configuration error, not a failure found after start-up.
func listenMetrics(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, configError{fmt.Errorf("metrics-addr: %w", err)}
	}
	return ln, nil
}

// logStreamChange says what the start-up did to the stream, and how an
// existing stream differs from the configuration (it is left as it is).
func logStreamChange(log *zap.Logger, stream string, c publisher.StreamChange) {
	switch {
	case c.Created:
		log.Info("stream created", zap.String("stream", stream), zap.Duration("duplicate_window", c.Duplicates))
	case c.Raised:
		log.Info("stream duplicate window raised", zap.String("stream", stream), zap.Duration("from", c.PreviousDuplicates), zap.Duration("to", c.Duplicates))
	}
	if len(c.Kept) > 0 {
		log.Warn("the existing stream differs from the configuration; it is kept as it is", zap.String("stream", stream), zap.Strings("differences", c.Kept))
	}
}

// newLister builds the lister of a source.
func newLister(source string, opts cloudassist.Options) (poller.Lister, error) {
	switch source {
	case "ecs":
		return cloudassist.NewECS(opts)
	case "ecs-results":
		return cloudassist.NewECSResults(opts)
	case "swas":
		return cloudassist.NewSWAS(opts)
	}
	return nil, fmt.Errorf("unknown source %q", source)
}

// retry calls fn until it succeeds or ctx ends, backing off exponentially
// and logging each distinct failure once.
func retry(ctx context.Context, log *zap.Logger, what string, fn func() error) error {
	bo := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxElapsedTime(0), backoff.WithMaxInterval(30*time.Second)), ctx)
	last := ""
	err := backoff.RetryNotify(fn, bo, func(err error, wait time.Duration) {
		if err.Error() != last {
			last = err.Error()
			log.Warn("retrying: could not "+what, zap.Error(err), zap.Duration("retry_in", wait))
		}
	})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// natsClosedError is why the daemon exits when the NATS client gave up for
// good (a fatal protocol error, or credentials refused twice).
func natsClosedError(nc *publisher.Conn) error {
	return fmt.Errorf("%w; exiting so that a supervisor restarts capoller", nc.Err())
}

// opsState is what /healthz and /readyz answer: while the daemon starts,
// what it waits for; then the running daemon's checks.
type opsState struct {
	mu       sync.Mutex
	starting string
	healthFn func() error
	readyFn  func(context.Context) error
}

func (o *opsState) setStarting(what string) {
	o.mu.Lock()
	o.starting = what
	o.mu.Unlock()
}

func (o *opsState) running(health func() error, ready func(context.Context) error) {
	o.mu.Lock()
	o.starting, o.healthFn, o.readyFn = "", health, ready
	o.mu.Unlock()
}

func (o *opsState) health() error {
	o.mu.Lock()
	h := o.healthFn
	o.mu.Unlock()
	if h == nil {
		return nil // starting: alive, and waiting (see /readyz)
	}
	return h()
}

func (o *opsState) ready(ctx context.Context) error {
	o.mu.Lock()
	starting, r := o.starting, o.readyFn
	o.mu.Unlock()
	if r == nil {
		return fmt.Errorf("starting: %s", starting)
	}
	return r(ctx)
}

// serveOps serves handler on ln until the returned stop is called.
func serveOps(ln net.Listener, handler http.Handler) (stop func()) {
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // ends with the stop below
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
}

// serveHTTP serves handler on ln in g until ctx ends.
func serveHTTP(ctx context.Context, g *errgroup.Group, ln net.Listener, handler http.Handler, what string) {
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
}

// listenPprof opens the profiler's address, if any: a bare port binds to
// localhost, so that exposing the profiler takes an explicit host.
func listenPprof(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, configError{fmt.Errorf("pprof-addr: %w", err)}
	}
	return ln, nil
}

// pprofMux serves the Go profiler under /debug/pprof/.
func pprofMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// pollerLoops are the pollers running, for /healthz to ask whether their
// loops are turning.
type pollerLoops struct {
	mu      sync.Mutex
	running map[*poller.Poller]struct{}
}

// add counts p as running until the returned func is called.
func (l *pollerLoops) add(p *poller.Poller) (remove func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running == nil {
		l.running = map[*poller.Poller]struct{}{}
	}
	l.running[p] = struct{}{}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.running, p)
	}
}

// turning joins the errors of the pollers whose loops are stuck.
func (l *pollerLoops) turning(now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for p := range l.running {
		errs = append(errs, p.Turning(now))
	}
	return errors.Join(errs...)
}

// newRegistry is the registry /metrics serves: the daemon's metrics, the
// Go runtime's and the process's, and capoller_build_info.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "capoller_build_info", Help: "1, labelled by the version of the binary.",
			ConstLabels: prometheus.Labels{"version": buildVersion()}}, func() float64 { return 1 }))
	return reg
}

// opsMux serves /metrics, /healthz and /readyz. /healthz answers 503 with
// the reason while health reports an error, /readyz while ready does.
func opsMux(reg prometheus.Gatherer, health func() error, ready func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := health(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// pollerPublisher is the NATS publisher under the poller's contract.
type pollerPublisher struct{ *publisher.NATS }

func (n pollerPublisher) Publish(ctx context.Context, batch []diff.Transition) (poller.PublishResult, error) {
	r, err := n.NATS.Publish(ctx, batch)
	return poller.PublishResult{Published: r.Published, Duplicates: r.Duplicates}, err
}
