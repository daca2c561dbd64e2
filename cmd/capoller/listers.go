package main

import (
	"fmt"
	"os"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
)

// listerFactory builds each shard's lister. It owns what the listers of
// an account share: its credentials (a role is assumed once, not once per
// shard) and its API quota (quotas are per account); and it wires the API
// metrics.
type listerFactory struct {
	cfg      config
	log      *zap.Logger
	metrics  *poller.Metrics
	strategy cloudassist.Strategy
	output   cloudassist.OutputOptions
	creds    map[string]cloudassist.CredentialsProvider
	limits   map[string]*cloudassist.Limits
	byShard  map[diff.Shard]shardConfig
	ids      []diff.Shard
	// tracing traces the listers' API calls (nil: not at all).
	tracing trace.TracerProvider
}

// newListerFactory resolves every account's credentials and quota, and
// builds each shard's lister once, so that a bad setting is a
// configuration error at start-up, not a shard failing later.
func newListerFactory(cfg config, log *zap.Logger, shared cloudassist.SharedQuota, metrics *poller.Metrics) (*listerFactory, error) {
	shards, err := cfg.shards()
	if err != nil {
		return nil, err
	}
	f := &listerFactory{cfg: cfg, log: log, metrics: metrics, creds: map[string]cloudassist.CredentialsProvider{},
		limits: map[string]*cloudassist.Limits{}, byShard: map[diff.Shard]shardConfig{}}
	f.strategy, _ = cloudassist.ParseStrategy(cfg.Strategy) // validated with the configuration
	if f.output, err = cfg.outputOptions(); err != nil {
		return nil, err
	}
	for _, name := range cfg.accountNames() {
		if f.creds[name], err = cfg.credential(name, os.Getenv); err != nil {
			return nil, err
		}
		if f.limits[name], err = f.newLimits(name, shared); err != nil {
			return nil, err
		}
	}
	for _, sc := range shards {
		if _, err := newLister(sc.Source, f.options(sc)); err != nil {
			return nil, fmt.Errorf("%s: %w", sc.Shard, err)
		}
		f.byShard[sc.Shard] = sc
		f.ids = append(f.ids, sc.Shard)
	}
	return f, nil
}

// newLimits is an account's API quota, shared through the store by every
// replica.
func (f *listerFactory) newLimits(account string, shared cloudassist.SharedQuota) (*cloudassist.Limits, error) {
	return cloudassist.NewLimits(cloudassist.LimitsOptions{QPS: f.cfg.QPS, Account: account, Shared: shared,
		OnShared: func(err error) {
			if err != nil {
				f.log.Warn("the API quota shared through the store is unavailable; each replica keeps to its own share until it is back",
					zap.String("account", account), zap.Error(err))
			} else {
				f.log.Info("the API quota shared through the store is back", zap.String("account", account))
			}
		}})
}

// shards are the configured shards, in the configuration's order.
func (f *listerFactory) shards() []diff.Shard { return f.ids }

// lister builds a new lister for shard: a new owner starts afresh.
func (f *listerFactory) lister(shard diff.Shard) (poller.Lister, error) {
	sc := f.byShard[shard]
	return newLister(sc.Source, f.options(sc))
}

// options are the cloudassist options of one shard's lister.
func (f *listerFactory) options(sc shardConfig) cloudassist.Options {
	shard, cfg, metrics := sc.Shard, f.cfg, f.metrics
	return cloudassist.Options{
		Region: shard.Region, Endpoint: cfg.Endpoint, PageSize: cfg.PageSize, Timeout: cfg.APITimeout,
		Credential: f.creds[sc.Account],
		Strategy:   f.strategy, ResyncEvery: cfg.ResyncEvery, Limits: f.limits[sc.Account], ThrottleWindow: cfg.ThrottleWindow,
		HeadOverlap: max(2*cfg.Interval, 10*time.Second), // an invocation a drifting page skipped is read by the next cycle
		OnCall:      func(action string) { metrics.APICall(shard, action) },
		OnBackoff:   func(c cloudassist.Class, d time.Duration) { metrics.APIBackoff(shard, c.String(), d) },
		OnError: func(e *cloudassist.APIError) {
			metrics.APIError(shard, e.Action, e.Class.String(), e.Code, e.HTTPStatus)
		},
		Tracing:          f.tracing,
		OnSkipped:        func(reason string) { metrics.SkippedRecord(shard, reason) },
		OnListingAborted: func(reason string) { metrics.ListingAborted(shard, reason) },
		Logger:           f.log.With(zap.String("account", shard.Account), zap.String("source", sc.Source)), // the lister names its region itself
		Output:           f.output,
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
