package poller_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/testenv"
)

func regionShards(account string, regions ...string) []diff.Shard {
	var out []diff.Shard
	for _, r := range regions {
		out = append(out, diff.Shard{Account: account, Source: diff.SourceECS, Region: r})
	}
	return out
}

func redisStore(t *testing.T) *checkpoint.Redis {
	t.Helper()
	client, prefix := testenv.Redis(t)
	store, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return store
}

func owners(rs ...*groupReplica) map[diff.Shard]string {
	out := map[diff.Shard]string{}
	for _, r := range rs {
		for _, s := range r.g.Owned() {
			out[s] = r.id
		}
	}
	return out
}

// TestGroupRollingDeployAddingRegions: two replicas list regions a and b;
// one restarts listing a to f. Its first round takes the four regions only
// it lists (no waiting for an adoption), and the two share a and b.
func TestGroupRollingDeployAddingRegions(t *testing.T) {
	store := redisStore(t)
	clock := &fakeClock{t: time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)}
	old := regionShards("prod", "a", "b")
	wide := regionShards("prod", "a", "b", "c", "d", "e", "f")
	r1, r2 := newGroupReplica(t, "r1", store, old, clock), newGroupReplica(t, "r2", store, old, clock)
	settle(t, []*groupReplica{r1, r2}, 2, map[string]int{"r1": 1, "r2": 1})

	// r2 stops (SIGTERM: its leases are released), and starts again with
	// the wider list under a new id.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r2.g.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r3 := newGroupReplica(t, "r3", store, wide, clock)
	r3.g.Step(t.Context())
	if got := len(r3.g.Owned()); got < 4 {
		t.Fatalf("the restarted replica owns %v after its first round: the regions only it lists must be its own at once", r3.g.Owned())
	}
	for _, s := range wide[2:] {
		if !slices.Contains(r3.g.Owned(), s) {
			t.Errorf("%s, listed by r3 alone, is not r3's after its first round", s)
		}
	}
	// a and b are shared: with 4 shards of its own, r3 leaves both to r1.
	settle(t, []*groupReplica{r1, r3}, 6, map[string]int{"r1": 2, "r3": 4})
	// And nothing thrashes: more rounds move nothing.
	before := owners(r1, r3)
	for range 5 {
		clock.Add(3 * time.Second)
		r1.g.Step(t.Context())
		r3.g.Step(t.Context())
	}
	if after := owners(r1, r3); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the assignment moved without a change: %v, then %v", before, after)
	}
}

// TestGroupTwoDeploymentsOnOneStore: two deployments with disjoint
// shards, on one store and prefix, each poll their own at once; a third
// replica overlapping both shares with each.
func TestGroupTwoDeploymentsOnOneStore(t *testing.T) {
	store := redisStore(t)
	clock := &fakeClock{t: time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)}
	east := append(regionShards("default", "cn-hangzhou"), diff.Shard{Account: "default", Source: diff.SourceSWAS, Region: "cn-hangzhou"})
	west := regionShards("default", "cn-shanghai")
	e, w := newGroupReplica(t, "east", store, east, clock), newGroupReplica(t, "west", store, west, clock)
	for range 3 {
		e.g.Step(t.Context())
		w.g.Step(t.Context())
		if len(e.g.Owned()) != 2 || len(w.g.Owned()) != 1 {
			t.Fatalf("east owns %v, west %v: each must poll its own shards at once", e.g.Owned(), w.g.Owned())
		}
		clock.Add(3 * time.Second)
	}
	// A second east replica shares east's shards and leaves west's alone.
	e2 := newGroupReplica(t, "east-2", store, east, clock)
	settle(t, []*groupReplica{e, w, e2}, 3, map[string]int{"east": 1, "east-2": 1, "west": 1})
}

// TestGroupReleasesAShardListedByNobody: two replicas configured
// differently; the one listing c dies. The survivor does not take c (it
// cannot poll it), says once that no live replica lists it, counts it,
// and c's lease expires unrenewed with its token (and state) kept. When a
// replica listing c comes back, it is said listed again.
func TestGroupReleasesAShardListedByNobody(t *testing.T) {
	store := redisStore(t)
	clock := &fakeClock{t: time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)}
	core, logs := observer.New(zapcore.InfoLevel)
	reg := prometheus.NewRegistry()
	metrics := poller.NewMetrics(poller.MetricsOptions{Registerer: reg})
	ab, bc := regionShards("prod", "a", "b"), regionShards("prod", "b", "c")
	r1 := newGroupReplica(t, "r1", store, ab, clock, func(o *poller.GroupOptions) { o.Logger = zap.New(core); o.Metrics = metrics })
	r2 := newGroupReplica(t, "r2", store, bc, clock)
	settle(t, []*groupReplica{r1, r2}, 3, nil)
	r1.g.Step(t.Context()) // r1 has seen r2
	c := bc[1]
	if owners(r1, r2)[c] != "r2" {
		t.Fatalf("c is not r2's: %v", owners(r1, r2))
	}
	token := mustLeases(t, store, []diff.Shard{c})[0].Token
	if n := logs.FilterMessageSnippet("list different shards").Len(); n != 1 {
		t.Errorf("the differing configurations were said %d times, want once", n)
	}

	// r2 is killed: no more rounds. Past its heartbeat and leases, r1
	// takes b, and never c.
	for range 8 {
		clock.Add(3 * time.Second)
		r1.g.Step(t.Context())
	}
	if got := r1.g.Owned(); !slices.Equal(got, ab) {
		t.Errorf("r1 owns %v, want its own a and b only", got)
	}
	unlisted := logs.FilterMessageSnippet("no live replica lists these shards")
	if unlisted.Len() != 1 || fmt.Sprint(unlisted.All()[0].ContextMap()["shards"]) != fmt.Sprint([]any{c.String()}) ||
		unlisted.All()[0].ContextMap()["last_listed_by"] != "r2" || unlisted.All()[0].Level != zapcore.WarnLevel {
		t.Errorf("want one warning naming %s, last listed by r2, got %v", c, unlisted.All())
	}
	if n := testenv.MetricSum(t, reg, "capoller_group_unlisted_shards"); n != 1 {
		t.Errorf("capoller_group_unlisted_shards = %v, want 1", n)
	}
	l := mustLeases(t, store, []diff.Shard{c})[0]
	if l.Live(clock.Now()) || l.Token != token {
		t.Errorf("c's lease %+v: want expired, token %d kept", l, token)
	}
	if n := logs.FilterMessageSnippet("recovered: configuration").Len(); n != 0 {
		t.Errorf("the survivor logged %d recoveries of the configuration when its peer died", n)
	}

	// A replica listing c again: it takes c, and it is said listed again.
	r4 := newGroupReplica(t, "r4", store, bc, clock)
	settle(t, []*groupReplica{r1, r4}, 3, nil)
	r1.g.Step(t.Context()) // r1 has seen r4
	if owners(r1, r4)[c] != "r4" {
		t.Errorf("c is not r4's: %v", owners(r1, r4))
	}
	if logs.FilterMessageSnippet("listed by a live replica again").Len() != 1 || testenv.MetricSum(t, reg, "capoller_group_unlisted_shards") != 0 {
		t.Errorf("c listed again: not said, or still counted")
	}
}

// failingAcquire is a replica whose heartbeat works but whose Acquire
// always fails (in a Redis Cluster: group:members on a reachable master,
// the shards' slots on an unreachable one).
type failingAcquire struct{ poller.LeaseStore }

func (f failingAcquire) Acquire(_ context.Context, s diff.Shard, _ string, _ time.Duration, _ time.Time) (checkpoint.Lease, error) {
	return checkpoint.Lease{Shard: s}, errors.New("CLUSTERDOWN / i/o timeout")
}

// TestShardsAReplicaCannotTakeGoToTheOthers: the assignment trusts a
// heartbeat, so a replica that heartbeats but cannot take its leases says
// so in its heartbeat, after a few rounds, and the others take those
// shards (within a few ticks, where adoption waited two TTLs); they are
// not handed back until its exclusion ends.
func TestShardsAReplicaCannotTakeGoToTheOthers(t *testing.T) {
	store := redisStore(t)
	shards := regionShards("a", "cn-hangzhou", "cn-beijing", "cn-shanghai", "cn-shenzhen")
	clock := &fakeClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	good := newGroupReplica(t, "good", store, shards, clock)
	bad := newGroupReplica(t, "bad", failingAcquire{store}, shards, clock)
	step := func() {
		good.g.Step(t.Context())
		bad.g.Step(t.Context())
		clock.Add(3 * time.Second)
	}
	step()
	step() // the good replica has seen the other join, and handed it its share
	if n := len(good.g.Owned()); n != 2 {
		t.Fatalf("the good replica owns %d shards once the other joined, want its 2", n)
	}
	rounds := 0
	deadline := time.Now().Add(10 * time.Second)
	for len(good.g.Owned()) != len(shards) {
		if rounds++; rounds > 6 {
			t.Fatalf("after %d rounds the good replica owns %d of %d shards", rounds, len(good.g.Owned()), len(shards))
		}
		step()
		if time.Now().After(deadline) {
			t.Fatal("not settled")
		}
	}
	t.Logf("the good replica took the other's shards %d rounds after their hand-off", rounds)
	// The first exclusion is a TTL's (nobody held those shards: it might
	// have been a failover); the good replica took them meanwhile, so the
	// next is the bad one's own, and lasts 10 TTLs.
	for range 12 {
		step()
	}
	unpolled := 0
	for range 40 { // 120 s: within the second exclusion (10 TTLs)
		step()
		if len(good.g.Owned()) != len(shards) {
			unpolled++
		}
	}
	if unpolled != 0 {
		t.Errorf("the shards bounced: polled by nobody for %d of 40 rounds", unpolled)
	}
	// When the exclusion ends, the bad replica tries them again, fails,
	// and leaves them for twice as long: over the next 20 TTLs (100
	// rounds) the shards are polled by nobody for a few rounds only.
	unpolled = 0
	for range 100 {
		step()
		if len(good.g.Owned()) != len(shards) {
			unpolled++
		}
	}
	t.Logf("unpolled for %d of the next 100 rounds", unpolled)
	if unpolled > 2*(3+2) {
		t.Errorf("the shards were polled by nobody for %d of 100 rounds after the exclusion", unpolled)
	}
}

// gatedProbe is a probe a test turns on and off.
type gatedProbe struct{ down atomic.Bool }

func (p *gatedProbe) probe(context.Context) error {
	if p.down.Load() {
		return errors.New("nats: timeout")
	}
	return nil
}

// TestAReplicaCutOffFromTheBusStepsBack: a replica whose probe of the bus
// fails while the others' succeed stops taking shards and hands its own
// off; when every replica's fails (the bus is down), nothing moves; once
// it reaches the bus again, it takes its share again.
func TestAReplicaCutOffFromTheBusStepsBack(t *testing.T) {
	store := redisStore(t)
	shards := regionShards("a", "r1", "r2", "r3", "r4", "r5", "r6")
	clock := &fakeClock{t: time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)}
	reg := prometheus.NewRegistry()
	metrics := poller.NewMetrics(poller.MetricsOptions{Registerer: reg})
	pa, pb := &gatedProbe{}, &gatedProbe{}
	a := newGroupReplica(t, "a", store, shards, clock, func(o *poller.GroupOptions) { o.Probe = pa.probe; o.Metrics = metrics })
	b := newGroupReplica(t, "b", store, shards, clock, func(o *poller.GroupOptions) { o.Probe = pb.probe })
	settle(t, []*groupReplica{a, b}, 6, map[string]int{"a": 3, "b": 3})
	steps := func(n int) {
		for range n {
			clock.Add(3 * time.Second)
			a.g.Step(t.Context())
			b.g.Step(t.Context())
			waitPollers(t, a, b)
		}
	}

	// The bus is down for both: nothing moves.
	pa.down.Store(true)
	pb.down.Store(true)
	steps(5)
	if la, lb := len(a.g.Owned()), len(b.g.Owned()); la != 3 || lb != 3 {
		t.Errorf("with the bus down for all, the shards moved: a %d, b %d", la, lb)
	}
	pa.down.Store(false)
	pb.down.Store(false)
	steps(4)

	// Only a is cut off: it steps back and b takes everything.
	pa.down.Store(true)
	steps(6)
	if la, lb := len(a.g.Owned()), len(b.g.Owned()); la != 0 || lb != 6 {
		t.Errorf("a cut off from the bus: a owns %d, b %d; want 0 and 6", la, lb)
	}
	if testenv.MetricSum(t, reg, "capoller_group_withdrawn") != 1 {
		t.Error("capoller_group_withdrawn is not 1 while a stepped back")
	}
	// Back: after three good probes a takes its share again.
	pa.down.Store(false)
	steps(5)
	settle(t, []*groupReplica{a, b}, 6, map[string]int{"a": 3, "b": 3})
	if testenv.MetricSum(t, reg, "capoller_group_withdrawn") != 0 {
		t.Error("capoller_group_withdrawn is not 0 once a is back")
	}
}

// waitPollers waits until the replicas' handed-off pollers have returned
// (they are reaped by the next round).
func waitPollers(t *testing.T, rs ...*groupReplica) {
	t.Helper()
	testenv.WaitFor(t, 5*time.Second, "the pollers handed off to return", func() error {
		for _, r := range rs {
			if n, owned := int(r.polling.Load()), len(r.g.Owned()); n > owned {
				return fmt.Errorf("%s: %d pollers run, %d shards owned", r.id, n, owned)
			}
		}
		return nil
	})
}

// countingStore counts heartbeats, so that a test can tell rounds apart.
type countingStore struct {
	poller.LeaseStore
	beats atomic.Int32
}

func (c *countingStore) Heartbeat(ctx context.Context, m checkpoint.Member, ttl time.Duration, now time.Time) (checkpoint.Roster, error) {
	c.beats.Add(1)
	return c.LeaseStore.Heartbeat(ctx, m, ttl, now)
}

// TestAHandOffReleasesTheLeaseAtOnce: a shard handed off is released as
// soon as its poller has returned, not at the next round, so that its
// next owner takes it within a tick.
func TestAHandOffReleasesTheLeaseAtOnce(t *testing.T) {
	store := redisStore(t)
	shards := regionShards("a", "r1", "r2", "r3", "r4")
	clock := &fakeClock{t: time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)}
	counted := &countingStore{LeaseStore: store}
	var gate sync.WaitGroup
	gate.Add(1)
	var handed atomic.Int32
	r1 := &groupReplica{id: "r1"}
	g, err := poller.NewGroup(poller.GroupOptions{Replica: checkpoint.Member{ID: "r1"}, Store: counted, Shards: shards,
		LeaseTTL: 30 * time.Second, Now: clock.Now,
		Poll: func(ctx context.Context, shard diff.Shard, claim *poller.Claim) error {
			<-ctx.Done()
			handed.Add(1)
			gate.Wait() // the cycle in flight finishes when the test says
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	r1.g = g
	r1.g.Step(t.Context())
	if len(r1.g.Owned()) != 4 {
		t.Fatalf("r1 alone owns %v", r1.g.Owned())
	}
	r2 := newGroupReplica(t, "r2", store, shards, clock)
	r2.g.Step(t.Context()) // r2 joins; its shards are held by r1 still
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r1.g.Run(ctx) }() // its first round hands two shards off
	testenv.WaitFor(t, 10*time.Second, "r1 to hand two shards off", func() error {
		if n := handed.Load(); n != 2 {
			return fmt.Errorf("%d pollers cancelled", n)
		}
		return nil
	})
	beats := counted.beats.Load()
	gate.Done() // the handed-off pollers return
	testenv.WaitFor(t, 10*time.Second, "the two leases released", func() error {
		free := 0
		for _, l := range mustLeases(t, store, shards) {
			if l.Owner == "" {
				free++
			}
		}
		if free != 2 {
			return fmt.Errorf("%d leases released", free)
		}
		return nil
	})
	if n := counted.beats.Load(); n != beats {
		t.Errorf("the leases were released by a later round (%d heartbeats since), not at once", n-beats)
	}
	r2.g.Step(t.Context())
	if len(r2.g.Owned()) != 2 {
		t.Errorf("r2 owns %v after the release", r2.g.Owned())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// earlierVersion is a store whose other members are of an earlier
// version: their heartbeats say only a digest of their shards.
type earlierVersion struct {
	poller.LeaseStore
	self string
}

func (e earlierVersion) Heartbeat(ctx context.Context, m checkpoint.Member, ttl time.Duration, now time.Time) (checkpoint.Roster, error) {
	r, err := e.LeaseStore.Heartbeat(ctx, m, ttl, now)
	for i := range r.Members {
		if r.Members[i].ID != e.self {
			r.Members[i].Lists, r.Members[i].Excluded = nil, nil
		}
	}
	return r, err
}

// TestUpgradingFromAnEarlierVersionMovesNothing: a replica of an earlier
// version says no list; it is taken to list what this one lists, so the
// group assigns as the earlier version does and nothing moves while one
// configuration is upgraded replica by replica.
func TestUpgradingFromAnEarlierVersionMovesNothing(t *testing.T) {
	store := redisStore(t)
	shards := regionShards("a", "r1", "r2", "r3", "r4", "r5", "r6", "r7")
	clock := &fakeClock{t: time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)}
	a := newGroupReplica(t, "a", earlierVersion{store, "a"}, shards, clock)
	b := newGroupReplica(t, "b", earlierVersion{store, "b"}, shards, clock)
	c := newGroupReplica(t, "c", store, shards, clock)
	want := poller.Assign(map[string][]diff.Shard{"a": shards, "b": shards, "c": shards})
	loads := map[string]int{}
	for _, m := range want {
		loads[m]++
	}
	settle(t, []*groupReplica{a, b, c}, 7, loads)
	for s, owner := range owners(a, b, c) {
		if want[s] != owner {
			t.Errorf("%s is %s's, the earlier versions' assignment gives it to %s", s, owner, want[s])
		}
	}
}

// TestADeadReplicasShardsAreTakenWhenItsLeasesEnd: a replica whose peer
// died takes the peer's shards the moment their leases expire, not at its
// next tick. The peer's rounds are placed just after the survivor's, so
// that its leases expire just after one of the survivor's rounds: waiting
// for the next would take most of a tick.
func TestADeadReplicasShardsAreTakenWhenItsLeasesEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("ten seconds of a group on the real clock")
	}
	store := redisStore(t)
	shards := regionShards("a", "r1", "r2", "r3", "r4")
	const ttl = 10 * time.Second // a tick of 2s
	counted := &countingStore{LeaseStore: store}
	survivor, err := poller.NewGroup(poller.GroupOptions{Replica: checkpoint.Member{ID: "survivor"}, Store: counted, Shards: shards, LeaseTTL: ttl,
		Poll: func(ctx context.Context, _ diff.Shard, _ *poller.Claim) error { <-ctx.Done(); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	dead, err := poller.NewGroup(poller.GroupOptions{Replica: checkpoint.Member{ID: "dead"}, Store: store, Shards: shards, LeaseTTL: ttl,
		Poll: func(ctx context.Context, _ diff.Shard, _ *poller.Claim) error { <-ctx.Done(); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- survivor.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rounds := func(n int32) {
		t.Helper()
		testenv.WaitFor(t, 3*ttl, fmt.Sprintf("the survivor's round %d", n), func() error {
			if got := counted.beats.Load(); got < n {
				return fmt.Errorf("%d rounds", got)
			}
			return nil
		})
	}
	rounds(1)
	dead.Step(t.Context()) // joins just after the survivor's first round
	rounds(2)              // the survivor hands the dead one its share
	testenv.WaitFor(t, ttl, "the dead replica to take its share", func() error {
		dead.Step(t.Context()) // just after the survivor's second round
		if n := len(dead.Owned()); n != 2 {
			return fmt.Errorf("it owns %d", n)
		}
		return nil
	})
	var expires time.Time
	for _, l := range mustLeases(t, store, shards) {
		if l.Owner == "dead" && l.Expires.After(expires) {
			expires = l.Expires
		}
	}
	// The dead replica makes no more rounds.
	testenv.WaitFor(t, 2*ttl, "the survivor to take the dead replica's shards", func() error {
		if n := len(survivor.Owned()); n != 4 {
			return fmt.Errorf("it owns %d", n)
		}
		return nil
	})
	var taken time.Time
	for _, l := range mustLeases(t, store, shards) {
		if l.Owner == "survivor" && l.Acquired.After(taken) {
			taken = l.Acquired
		}
	}
	t.Logf("the dead replica's last lease expired at %s; the survivor took its shards %v later", expires.Format(time.StampMilli), taken.Sub(expires))
	if late := taken.Sub(expires); late < 0 || late > ttl/5/2 {
		t.Errorf("the survivor took the shards %v after their leases expired: it waited for its next tick", late)
	}
}
