package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/sensitive"
)

// readiness is what /readyz answers: the daemon reaches NATS and its
// checkpoint store, and every shard it owns had a successful cycle within
// the window (a shard it just took over has the window to have one).
type readiness struct {
	window time.Duration
	mu     sync.Mutex
	// since is each shard's last successful cycle, or when it was first
	// seen owned without one.
	since map[diff.Shard]time.Time
}

func newReadiness(window time.Duration) *readiness {
	return &readiness{window: window, since: map[diff.Shard]time.Time{}}
}

// readinessWindow is how long an owned shard may go without a successful
// cycle and the daemon still be ready: three intervals (at least a
// minute, as a throttled call waits for the next minute) and a lease TTL.
func readinessWindow(cfg config) time.Duration {
	return max(3*cfg.Interval, time.Minute) + cfg.LeaseTTL
}

func (r *readiness) observe(rep poller.Report) {
	if rep.Err != nil {
		return
	}
	r.mu.Lock()
	r.since[rep.Shard.Canonical()] = rep.Started.Add(rep.Duration)
	r.mu.Unlock()
}

// shards checks the owned shards at now.
func (r *readiness) shards(owned []diff.Shard, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var stale []string
	for _, s := range owned {
		s = s.Canonical()
		t, ok := r.since[s]
		if !ok {
			r.since[s] = now
			continue
		}
		if now.Sub(t) > r.window {
			stale = append(stale, s.String())
		}
	}
	if len(stale) > 0 {
		slices.Sort(stale)
		return fmt.Errorf("no successful cycle within %v: %s", r.window, strings.Join(stale, ", "))
	}
	return nil
}

// pinger is a checkpoint store that can say whether it is reachable.
type pinger interface {
	Ping(ctx context.Context) error
}

// check is /readyz's answer: nil when ready.
func (r *readiness) check(ctx context.Context, nats func() error, store any, owned []diff.Shard, now time.Time) error {
	var errs []error
	if err := nats(); err != nil {
		errs = append(errs, fmt.Errorf("NATS: %w", err))
	}
	if p, ok := store.(pinger); ok {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := p.Ping(ctx); err != nil {
			errs = append(errs, fmt.Errorf("checkpoint store: %w", sensitive.WithoutURL(err)))
		}
	}
	if err := r.shards(owned, now); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
