package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/hintintake"
	"github.com/capoller/capoller/poller/sensitive"
	"github.com/capoller/capoller/poller/tracing"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/embedded"
)

func runCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run")
	cf := bindConfig(fs, os.Getenv, allGroups()...)
	if code, ok := parseArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	cfg, err := cf.load()
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
	for _, msg := range unknownEnv(os.Environ()) {
		log.Warn(msg)
	}
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
	encCfg.EncodeDuration = zapcore.StringDurationEncoder // "retry_in":"1.5s", not a number without its unit
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
// set, sees every cycle's report (the demo prints from it). Its steps, in
// order: the ops server, NATS, the stream, the store, the listers, the
// group; then it serves until ctx ends.
func daemon(ctx context.Context, cfg config, log *zap.Logger, onCycle func(poller.Report)) error {
	tracer, err := startTracing(ctx, log)
	if err != nil {
		return err
	}
	defer stopTracing(tracer, log)
	ops, err := startOps(cfg, log)
	if err != nil {
		return err
	}
	defer ops.stop()
	bus, err := connectBus(cfg, log)
	if err != nil {
		return err
	}
	defer bus.close()
	start := bus.startup(ctx)
	defer start.end(nil)
	if err := bus.setupStream(start.ctx, cfg, log); err != nil {
		return start.failed(err)
	}
	ops.state.setStarting("opening the checkpoint store")
	bus.register(ops.reg)
	store, closeStore, err := openStore(start.ctx, cfg, log, bus.js, ops.reg)
	if err != nil {
		return start.failed(err)
	}
	start.end(nil)
	defer closeStore()

	replica := poller.NewMember(cfg.ReplicaID, versionString())
	d := &daemonRun{cfg: cfg, log: log.With(zap.String("replica", replica.ID)), ops: ops, bus: bus, store: store,
		ready: newReadiness(readinessWindow(cfg)), onCycle: onCycle, tracer: tracer}
	d.hook = harness.HookFromEnv(d.log)
	if d.listers, err = newListerFactory(cfg, d.log, store, ops.metrics); err != nil {
		return configError{err}
	}
	d.listers.tracing = tracer.Provider()
	if d.group, err = d.newGroup(replica); err != nil {
		return configError{err}
	}
	d.hints = newHintServer(cfg, d.log, bus.nc.Conn, d.listers.shards(), ops.reg)
	return d.serve(ctx)
}

// daemonRun is a started daemon's parts, once NATS, the stream and the
// store are there.
type daemonRun struct {
	cfg     config
	log     *zap.Logger // names the replica
	ops     *opsServer
	bus     *bus
	store   groupStore
	listers *listerFactory
	ready   *readiness
	hook    func(poller.Step)  // one per process: its count of steps spans every shard
	hints   *hintintake.Server // nil: hints off
	loops   poller.Loops
	group   *poller.Group
	onCycle func(poller.Report)
	tracer  *tracing.Tracing
}

// newGroup makes the replica group: it leases the shards among the
// replicas, and polls each shard this one holds.
func (d *daemonRun) newGroup(replica checkpoint.Member) (*poller.Group, error) {
	return poller.NewGroup(poller.GroupOptions{
		Replica: replica, Store: d.store, Shards: d.listers.shards(), LeaseTTL: d.cfg.LeaseTTL, Logger: d.log, Metrics: d.ops.metrics,
		// A replica cut off from NATS while the others reach it steps back.
		Probe: d.bus.probe,
		Poll:  d.poll,
	})
}

// poll polls one shard this replica holds until ctx ends or the claim is
// lost.
func (d *daemonRun) poll(ctx context.Context, shard diff.Shard, claim *poller.Claim) error {
	lister, err := d.listers.lister(shard) // a new owner starts afresh: its first cycle lists everything
	if err != nil {
		return err
	}
	var hints *poller.HintOptions
	if d.hints != nil {
		hints = &poller.HintOptions{}
	}
	p, err := poller.New(lister, d.store, pollerPublisher{d.bus.pub}, poller.Options{Hints: hints,
		Shard: shard, Interval: d.cfg.Interval, Initial: diff.Initial(d.cfg.Initial),
		Logger: d.log, Metrics: d.ops.metrics, Recovery: d.bus.pub, Claim: claim, Hook: d.hook, SummaryEvery: d.cfg.LogSummaryEvery,
		Tracing: d.tracer.Provider(),
		OnCycle: func(r poller.Report) {
			if r.LookedUp != nil { // a hint's look-up: no cycle of the listing
				return
			}
			claim.Observe(r)
			d.ready.observe(r)
			if d.onCycle != nil {
				d.onCycle(r)
			}
		},
	})
	if err != nil {
		return err
	}
	defer d.loops.Add(p)()
	if d.hints != nil && shard.Source == diff.SourceECS {
		// Hints for the shard, taken by any replica, reach its owner here.
		sub, err := publisher.ServeHints(d.bus.nc.Conn, publisher.HintSubject(d.cfg.SubjectPrefix, shard), func(m publisher.HintMessage) {
			p.Hint(poller.Hint{InvokeID: m.InvokeID, InstanceID: m.InstanceID, Received: m.Received})
		})
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	return p.Run(ctx)
}

// serve runs the group and the profiler until ctx ends or NATS closes for
// good, with /healthz and /readyz answering for the running daemon.
func (d *daemonRun) serve(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case <-d.bus.nc.Closed():
			return d.bus.closedErr()
		}
	})
	d.ops.state.running(d.health, d.readyz)
	if d.ops.pprof != nil {
		serveHTTP(gctx, g, d.ops.pprof, pprofMux(), "profiler")
	}
	if d.hints != nil {
		ln, err := d.hints.Listen()
		if err != nil {
			return err
		}
		serveHTTP(gctx, g, ln, d.hints, "hints endpoint")
		d.hints.Start(gctx, g)
	}
	g.Go(func() error { return d.group.Run(gctx) })
	fields := []zap.Field{zap.Int("shards", len(d.listers.shards())), zap.Duration("lease_ttl", d.cfg.LeaseTTL),
		zap.Duration("interval", d.cfg.Interval), zap.String("checkpoint", d.cfg.Checkpoint),
		zap.String("nats", sensitive.RedactURL(d.bus.url)), zap.String("stream", d.cfg.Stream), zap.Stringer("tracing", d.tracer)}
	if d.ops.addr != "" {
		fields = append(fields, zap.String("metrics_addr", d.ops.addr)) // the port chosen for ":0"
	}
	d.log.Info("capoller running", fields...)
	err := g.Wait()
	d.bus.drain(d.log)
	return err
}

// health is /healthz of the running daemon: NATS not closed for good, and
// the group's and every poller's loop turning.
func (d *daemonRun) health() error {
	if d.bus.nc.IsClosed() {
		return errors.New("the NATS connection is closed")
	}
	now := time.Now()
	return errors.Join(d.group.Turning(now), d.loops.Turning(now))
}

// readyz is /readyz of the running daemon.
func (d *daemonRun) readyz(ctx context.Context) error {
	return d.ready.check(ctx, d.bus.connected, d.store, d.group.Owned(), time.Now())
}

// bus is the daemon's NATS: the connection, JetStream, and the publisher
// on the stream.
type bus struct {
	nc       *publisher.Conn
	js       jetstream.JetStream
	pub      *publisher.NATS
	url      string // the server's, the embedded one's if any
	embedded *embedded.Server
}

// connectBus connects to NATS, or starts the embedded server first.
func connectBus(cfg config, log *zap.Logger) (*bus, error) {
	b := &bus{url: cfg.NATSURL}
	if b.url == "embedded" {
		srv, err := embedded.Run(embedded.Options{StoreDir: filepath.Join(cfg.DataDir, "nats")})
		if err != nil {
			return nil, err
		}
		b.embedded, b.url = srv, srv.URL()
		log.Info("embedded NATS server running", zap.String("url", b.url), zap.String("store", filepath.Join(cfg.DataDir, "nats")))
	}
	// The client reconnects by itself, forever, except after a protocol
	// error it treats as fatal; then the daemon exits non-zero so that its
	// supervisor starts it again, and /healthz says so until it has.
	//
	// No reconnect buffer: a publish while disconnected fails at once. A
	// buffered one would reach the stream whenever the connection came
	// back — perhaps after this replica lost the shard, past the duplicate
	// window, behind the new owner's later events of the same records.
	var err error
	b.nc, err = publisher.Dial(publisher.DialOptions{URL: b.url, Auth: cfg.NATS, Name: "capoller", Logger: log,
		Options:   []nats.Option{nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ReconnectBufSize(-1)},
		JetStream: []jetstream.JetStreamOpt{jetstream.WithPublishAsyncMaxPending(4096)}})
	if err != nil {
		b.close()
		return nil, err
	}
	b.js = b.nc.JetStream
	if b.pub, err = publisher.New(b.js, publisher.Options{Stream: cfg.Stream, SubjectPrefix: cfg.SubjectPrefix, DuplicateWindow: cfg.DuplicateWindow,
		MaxAge: cfg.StreamMaxAge, MaxBytes: cfg.StreamMaxBytes, Replicas: cfg.StreamReplicas}); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

// close closes the connection, then stops the embedded server if any.
func (b *bus) close() {
	if b.nc != nil {
		b.nc.Close()
	}
	if b.embedded != nil {
		b.embedded.Shutdown()
	}
}

// drain lets what is in flight reach the server before the connection
// closes.
func (b *bus) drain(log *zap.Logger) {
	if err := b.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		log.Warn("draining the NATS connection", zap.Error(err))
	}
}

// closedErr is why the daemon exits after the client gave up for good.
func (b *bus) closedErr() error { return natsClosedError(b.nc) }

// probe pings the server: a replica cut off from NATS steps back.
func (b *bus) probe(ctx context.Context) error {
	if err := b.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("NATS did not answer a ping (the connection is %s): %w", strings.ToLower(b.nc.Status().String()), err)
	}
	return nil
}

// connected is NATS's part of /readyz.
func (b *bus) connected() error {
	if st := b.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("the connection is %s", strings.ToLower(st.String()))
	}
	return nil
}

// setupStream creates or updates the stream, retrying while NATS cannot be
// reached; a conflict with the operator's own stream is final.
func (b *bus) setupStream(ctx context.Context, cfg config, log *zap.Logger) error {
	var change publisher.StreamChange
	if err := retry(ctx, log, "set up the stream", func() (err error) {
		change, err = b.pub.SetupStream(ctx)
		if errors.As(err, new(*publisher.StreamConflictError)) {
			return backoff.Permanent(err) // retrying will not change the operator's stream
		}
		return b.nc.Explain(err) // the API call's own error says little
	}); err != nil {
		return err
	}
	logStreamChange(log, cfg.Stream, change)
	return nil
}

// register adds the publisher's counters to reg.
func (b *bus) register(reg prometheus.Registerer) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "capoller_nats_publish_batches_total",
			Help: "Batches published (one wait for acknowledgements each)."},
			func() float64 { n, _ := b.pub.Requests(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "capoller_nats_publishes_total",
			Help: "Messages published to JetStream (pipelined, each acknowledged)."},
			func() float64 { _, m := b.pub.Requests(); return float64(m) }))
}

// startup bounds the daemon's start-up. The client gives up on a server
// that refuses its credentials twice (it closes the connection): start-up
// then stops waiting and exits non-zero, naming the server's refusal,
// rather than retry forever.
type startup struct {
	parent context.Context
	ctx    context.Context
	end    context.CancelCauseFunc
}

func (b *bus) startup(ctx context.Context) *startup {
	s := &startup{parent: ctx}
	s.ctx, s.end = context.WithCancelCause(ctx)
	go func() {
		select {
		case <-b.nc.Closed():
			s.end(b.closedErr())
		case <-s.ctx.Done():
		}
	}()
	return s
}

// failed is what the daemon returns when a start-up step failed with err:
// nothing if the daemon was stopped while it waited (a clean stop), the
// client's reason if it gave up for good, else err.
func (s *startup) failed(err error) error {
	if s.parent.Err() != nil && !errors.As(err, new(configError)) {
		return nil
	}
	if cause := context.Cause(s.ctx); s.parent.Err() == nil && errors.As(cause, new(*publisher.ClosedError)) {
		return cause
	}
	return err
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

// startTracing sets up tracing as OpenTelemetry's environment asks (see
// package tracing); a variable it cannot use stops the start (exit 2).
func startTracing(ctx context.Context, log *zap.Logger) (*tracing.Tracing, error) {
	tr, err := tracing.New(ctx, tracing.Options{Version: versionString(), Logger: log})
	if err != nil {
		return nil, configError{err}
	}
	return tr, nil
}

// stopTracing exports the spans still queued, for at most a few seconds.
func stopTracing(tr *tracing.Tracing, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		log.Warn("tracing: spans lost at shutdown", zap.Error(err))
	}
}

// pollerPublisher is the NATS publisher under the poller's contract.
type pollerPublisher struct{ *publisher.NATS }

func (n pollerPublisher) Publish(ctx context.Context, batch []diff.Transition) (poller.PublishResult, error) {
	r, err := n.NATS.Publish(ctx, batch)
	return poller.PublishResult{Published: r.Published, Duplicates: r.Duplicates}, err
}
