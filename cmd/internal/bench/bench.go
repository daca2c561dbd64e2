package bench

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/poller/tracing"
	"github.com/capoller/capoller/publisher/embedded"
)

// Report is what a bench run measured. The JSON keys are in the order an
// encoded map had them, which the CLI's JSON output has always had.
type Report struct {
	// Replicas is the replica group's, with Options.Replicas.
	Replicas   *ReplicaReport   `json:"replicas"`
	Strategies []StrategyReport `json:"strategies"`
	// Throughput is the pipeline's, with Options.Burst.
	Throughput *ThroughputReport `json:"throughput"`
}

// engines are the run's connections to Redis and NATS.
type engines struct {
	rdb *redis.Client
	nc  *nats.Conn
	js  jetstream.JetStream
	// collector takes the spans with Options.Tracing; tracing is the
	// in-process pipeline's.
	collector *collector
	tracing   *tracing.Tracing
}

// Run runs the bench: the replica group or the strategies, then the
// throughput phase.
func Run(ctx context.Context, o Options) (Report, error) {
	var rep Report
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.NATSURL == "embedded" {
		stop, err := embeddedNATS(&o)
		if err != nil {
			return rep, err
		}
		defer stop()
	}
	e, err := connect(ctx, o)
	if err != nil {
		return rep, err
	}
	defer e.close()
	if o.Tracing {
		e.collector = newCollector()
		defer e.collector.close()
		if e.tracing, err = traced(ctx, e.collector); err != nil {
			return rep, err
		}
		defer func() { _ = e.tracing.Shutdown(context.WithoutCancel(ctx)) }()
	}
	if o.Replicas > 0 {
		r, err := benchReplicas(ctx, o, e)
		if err != nil {
			return rep, fmt.Errorf("replicas: %w", err)
		}
		rep.Replicas = &r
		o.Behaviours = nil // the group replaces the strategies
	}
	if rep.Strategies, err = benchStrategies(ctx, o, e); err != nil {
		return rep, err
	}
	if o.Burst > 0 {
		fmt.Fprintf(o.Progress, "bench: throughput, %d invocations changing at once…\n", o.Burst)
		t, err := benchThroughput(ctx, o, e)
		if err != nil {
			return rep, fmt.Errorf("throughput: %w", err)
		}
		t.Tracing = o.Tracing
		rep.Throughput = &t
	}
	return rep, nil
}

// embeddedNATS runs an in-process NATS server for the run and points
// o.NATSURL at it; stop shuts it down.
func embeddedNATS(o *Options) (stop func(), err error) {
	dir, err := os.MkdirTemp("", "capoller-bench-nats")
	if err != nil {
		return nil, err
	}
	srv, err := embedded.Run(embedded.Options{StoreDir: dir})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	o.NATSURL = srv.URL()
	return func() { srv.Shutdown(); _ = os.RemoveAll(dir) }, nil
}

// connect opens the run's connections.
func connect(ctx context.Context, o Options) (*engines, error) {
	ropts, err := redis.ParseURL(o.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("redis-url: %w", err)
	}
	e := &engines{rdb: redis.NewClient(ropts)}
	if err := e.rdb.Ping(ctx).Err(); err != nil {
		e.close()
		return nil, fmt.Errorf("redis at %s: %w", o.redact(o.RedisURL), err)
	}
	if e.nc, err = nats.Connect(o.NATSURL); err != nil {
		e.close()
		return nil, fmt.Errorf("nats at %s: %w", o.redact(o.NATSURL), err)
	}
	if e.js, err = jetstream.New(e.nc); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *engines) close() {
	if e.nc != nil {
		e.nc.Close()
	}
	_ = e.rdb.Close()
}

// benchStrategies runs every strategy under every behaviour.
func benchStrategies(ctx context.Context, o Options, e *engines) ([]StrategyReport, error) {
	var reports []StrategyReport
	for _, nb := range o.Behaviours {
		for _, strategy := range o.Strategies {
			fmt.Fprintf(o.Progress, "bench: %s strategy, %s API, %d invocations, %.1f%% active, qps %g…\n", strategy, nb.Name, o.Records, 100*o.Active, o.QPS)
			rep, err := benchStrategy(ctx, o, strategy, nb.Behaviour, e)
			if err != nil {
				return reports, fmt.Errorf("%s: %w", strategy, err)
			}
			rep.Behaviour = nb.Name
			reports = append(reports, rep)
		}
	}
	return reports, nil
}
