package poller_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/testenv"
)

// wedgedLister lists nothing until released, whatever its context says:
// a call that ignores cancellation.
type wedgedLister struct{ entered, release chan struct{} }

func (l wedgedLister) Snapshot(context.Context) (diff.Snapshot, error) {
	close(l.entered)
	<-l.release
	return diff.Snapshot{}, context.Canceled
}

// TestPollerTurningSaysWhenACycleIsWedged: a cycle that makes no progress
// well past its stall timeout (its cancellation ignored) makes Turning
// fail, and Turning is fine again once the cycle returns.
func TestPollerTurningSaysWhenACycleIsWedged(t *testing.T) {
	h := newHarness(t)
	_, st, pub := h.parts(50)
	clock := &fakeClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	lister := wedgedLister{entered: make(chan struct{}), release: make(chan struct{})}
	p := h.poller(lister, st, pub, func(o *poller.Options) { o.Now, o.StallTimeout = clock.Now, time.Minute })
	if err := p.Turning(clock.Now().Add(time.Hour)); err != nil {
		t.Errorf("between cycles: %v", err)
	}
	done := make(chan poller.Report, 1)
	go func() { done <- p.RunOnce(t.Context()) }()
	<-lister.entered
	clock.Add(2 * time.Minute) // past the stall timeout, within the grace
	if err := p.Turning(clock.Now()); err != nil {
		t.Errorf("two minutes into a cycle with a one-minute stall timeout: %v", err)
	}
	clock.Add(time.Minute)
	err := p.Turning(clock.Now())
	if err == nil || !strings.Contains(err.Error(), "stuck") || !strings.Contains(err.Error(), shard.String()) {
		t.Errorf("three minutes without progress: %v", err)
	}
	close(lister.release)
	<-done
	if err := p.Turning(clock.Now()); err != nil {
		t.Errorf("after the cycle returned: %v", err)
	}
}

// TestGroupTurningSaysWhenItsRoundsStop: Turning fails once no round has
// ended for three lease TTLs (at least a minute), and is fine after the
// next one.
func TestGroupTurningSaysWhenItsRoundsStop(t *testing.T) {
	client, prefix := testenv.Redis(t)
	store, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	r := newGroupReplica(t, "r1", store, []diff.Shard{shard}, clock)
	if err := r.g.Turning(clock.Now().Add(time.Hour)); err != nil {
		t.Errorf("before the first round: %v", err)
	}
	r.g.Step(t.Context())
	clock.Add(55 * time.Second)
	if err := r.g.Turning(clock.Now()); err != nil {
		t.Errorf("55s after a round (lease TTL 15s): %v", err)
	}
	clock.Add(10 * time.Second)
	if err := r.g.Turning(clock.Now()); err == nil || !strings.Contains(err.Error(), "stuck") {
		t.Errorf("65s after a round: %v", err)
	}
	r.g.Step(t.Context())
	if err := r.g.Turning(clock.Now()); err != nil {
		t.Errorf("after the next round: %v", err)
	}
}

// TestTransitionsCountedOnceAcrossAFailedCommit:
// capoller_transitions_total counts status changes published and
// committed. A batch whose commit failed is not committed; the next cycle
// finishes it, and only then are its transitions counted — once, not
// once per attempt.
func TestTransitionsCountedOnceAcrossAFailedCommit(t *testing.T) {
	h := newHarness(t)
	src, st, pub := h.parts(50)
	if rep := h.poller(src, st, pub, nil).RunOnce(t.Context()); rep.Err != nil {
		t.Fatal(rep.Err) // baseline
	}
	invoke := h.run("hang", 600, h.instances[0], h.instances[1])
	eventually(t, 5*time.Second, "the runs to start", func() bool {
		entries := truthByRecord(h.sim)[diff.Key{InvokeID: invoke}]
		return len(entries) > 0 && entries[len(entries)-1].To == "Running"
	})
	reg := prometheus.NewRegistry()
	m := poller.NewMetrics(poller.MetricsOptions{Registerer: reg})
	withMetrics := func(o *poller.Options) { o.Metrics = m }
	flaky := &failingStore{Store: st}
	if rep := h.poller(src, flaky, pub, withMetrics).RunOnce(t.Context()); rep.Err == nil || rep.Published != 3 {
		t.Fatalf("first cycle: err %v, published %d; want a commit failure after 3 events", rep.Err, rep.Published)
	}
	if n := testenv.MetricSum(t, reg, "capoller_transitions_total"); n != 0 {
		t.Errorf("after a failed commit: %v transitions counted, want 0 (none committed)", n)
	}
	if rep := h.poller(src, flaky, pub, withMetrics).RunOnce(t.Context()); rep.Err != nil {
		t.Fatal(rep.Err)
	}
	if n, c := testenv.MetricSum(t, reg, "capoller_transitions_total"), testenv.MetricSum(t, reg, "capoller_detection_lag_seconds"); n != 3 || c > 2 {
		t.Errorf("after the retry: %v transitions counted, %v lags observed; want the 3 committed once (at most 2 instance lags)", n, c)
	}
}

// blackholedReleases is a lease store whose Release hangs until its
// context ends, as a Redis behind a dropped route does. It records the
// deadline each Release was given.
type blackholedReleases struct {
	poller.LeaseStore
	mu        *sync.Mutex
	deadlines *[]time.Time
}

func (b blackholedReleases) Release(ctx context.Context, _ checkpoint.Lease) error {
	d, _ := ctx.Deadline()
	b.mu.Lock()
	*b.deadlines = append(*b.deadlines, d)
	b.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

// TestGroupRoundBoundedWhenManyShardsStopAtOnce: a round's calls to the
// store are bounded by a tick — Turning relies on it, and so do the
// renewals of the shards still held. When every shard's poller stops in
// one go (their claims expired in a store outage) and the store does not
// answer, the round that releases them still ends within a few ticks, not
// one tick per shard: with a few dozen shards that would hold the group's
// loop for minutes, past Turning's limit, and /healthz would have the
// pod restarted for a Redis outage.
func TestGroupRoundBoundedWhenManyShardsStopAtOnce(t *testing.T) {
	client, prefix := testenv.Redis(t)
	store, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	var shards []diff.Shard
	for i := range 30 {
		shards = append(shards, diff.Shard{Source: diff.SourceECS, Region: fmt.Sprintf("cn-test-%d", i)})
	}
	const tick = 100 * time.Millisecond
	var stopped atomic.Int32
	var mu sync.Mutex
	var deadlines []time.Time
	g, err := poller.NewGroup(poller.GroupOptions{
		Replica: checkpoint.Member{ID: "r1"}, Store: blackholedReleases{store, &mu, &deadlines}, Shards: shards, LeaseTTL: 3 * time.Second, Tick: tick,
		Poll: func(context.Context, diff.Shard, *poller.Claim) error {
			defer stopped.Add(1)
			return poller.ErrClaimExpired
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	g.Step(t.Context())
	testenv.WaitFor(t, 10*time.Second, "every poller to stop", func() error {
		if n := stopped.Load(); n != int32(len(shards)) {
			return fmt.Errorf("%d of %d stopped", n, len(shards))
		}
		return nil
	})
	g.Step(t.Context())
	// Every release of the round shares one deadline: one after the other,
	// each with a tick of its own, the last would end a tick per shard
	// after the first.
	mu.Lock()
	defer mu.Unlock()
	if len(deadlines) != len(shards) {
		t.Fatalf("%d releases, want %d", len(deadlines), len(shards))
	}
	first, last := slices.MinFunc(deadlines, time.Time.Compare), slices.MaxFunc(deadlines, time.Time.Compare)
	if first.IsZero() || !first.Equal(last) {
		t.Errorf("the releases' deadlines range from %v to %v: not one deadline for the round", first, last)
	}
}
