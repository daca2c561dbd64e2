package poller_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/testenv"
)

// TestABusOutageMovesNothingWithClocksHalfASecondApart: when NATS goes
// down for every replica, nothing moves (the group's rule: nobody can do
// better). A replica steps back when another's last good probe was sent
// after its own first failed one. On the replicas' own clocks, with b's
// half a second ahead of a's, b's last good probe, sent just before the
// outage, looked sent after a's first failed one, sent just after it, and
// a stepped back, handing its shards to b, which could not publish
// either: both times are now written on the store's clock.
func TestABusOutageMovesNothingWithClocksHalfASecondApart(t *testing.T) {
	store := redisStore(t)
	shards := regionShards("a", "r1", "r2", "r3", "r4", "r5", "r6")
	clock := &fakeClock{t: time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)}
	pa, pb := &gatedProbe{}, &gatedProbe{}
	a := newGroupReplica(t, "a", store, shards, clock, func(o *poller.GroupOptions) { o.Probe = pa.probe })
	b := newGroupReplica(t, "b", store, shards, clock, func(o *poller.GroupOptions) {
		o.Probe = pb.probe
		o.Now = func() time.Time { return clock.Now().Add(500 * time.Millisecond) }
	})
	settle(t, []*groupReplica{a, b}, 6, map[string]int{"a": 3, "b": 3})
	for range 3 { // a's rounds come 100ms after b's
		clock.Add(2900 * time.Millisecond)
		b.g.Step(t.Context())
		clock.Add(100 * time.Millisecond)
		a.g.Step(t.Context())
	}
	// b's round: a good probe. Then NATS goes down for both, and a's
	// round 100ms later fails its probe.
	clock.Add(2900 * time.Millisecond)
	b.g.Step(t.Context())
	pa.down.Store(true)
	pb.down.Store(true)
	for range 4 {
		clock.Add(100 * time.Millisecond)
		a.g.Step(t.Context())
		clock.Add(2900 * time.Millisecond)
		b.g.Step(t.Context())
		waitPollers(t, a, b)
	}
	if la, lb := len(a.g.Owned()), len(b.g.Owned()); la != 3 || lb != 3 {
		t.Errorf("with NATS down for every replica, the shards moved: a owns %d, b %d", la, lb)
	}
}

// TestAnExclusionLastsAtLeastItsFirstTime: a shard whose lease this
// replica's store keeps refusing, while another replica takes it, is
// left to the others for a TTL, then 10 lease TTLs, doubled each time it
// fails again after, up to 160. The doubling was a shift by the exclusions so far:
// past about 60 of them it overflowed, and the exclusion ended as it
// began, handing the shard back to a replica that cannot take it every
// few rounds. It is said at warn once, not at every exclusion.
func TestAnExclusionLastsAtLeastItsFirstTime(t *testing.T) {
	store := redisStore(t)
	clock := &fakeClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	core, logs := observer.New(zapcore.DebugLevel)
	shards := regionShards("a", "cn-hangzhou", "cn-beijing", "cn-shanghai", "cn-shenzhen")
	good := newGroupReplica(t, "good", store, shards, clock)
	bad := newGroupReplica(t, "bad", failingAcquire{store}, shards, clock,
		func(o *poller.GroupOptions) { o.Logger = zap.New(core) })
	const ttl = 15 * time.Second
	var shard string // the first shard excluded: its exclusions are followed
	var lasts []time.Duration
	for range 4000 {
		now := clock.Now()
		good.g.Step(t.Context())
		bad.g.Step(t.Context())
		waitPollers(t, good, bad)
		clock.Add(3 * time.Second)
		for _, e := range logs.TakeAll() {
			if !strings.Contains(e.Message, "leaving it to the other replicas") {
				continue
			}
			if shard == "" {
				shard = e.ContextMap()["shard"].(string)
			}
			if e.ContextMap()["shard"] != shard {
				continue
			}
			until := e.ContextMap()["until"].(time.Time)
			lasts = append(lasts, until.Sub(now))
			clock.Add(until.Sub(clock.Now()) - 2*time.Second) // to just before it ends
			if e.Level != zapcore.WarnLevel && len(lasts) == 1 || e.Level == zapcore.WarnLevel && len(lasts) > 1 {
				t.Errorf("exclusion %d said at %v: want warn for the first only", len(lasts), e.Level)
			}
		}
		if len(lasts) == 7 {
			break
		}
	}
	// The first exclusion is a TTL's (nobody held the shard: it might
	// have been a failover); another replica took it meanwhile, so the
	// refusal is this replica's own: 10 TTLs, doubled each time after.
	want := []time.Duration{ttl, 10 * ttl, 20 * ttl, 40 * ttl, 80 * ttl, 160 * ttl, 160 * ttl}
	if fmt.Sprint(lasts) != fmt.Sprint(want) {
		t.Errorf("the exclusions of %s lasted %v, want %v", shard, lasts, want)
	}
}

// TestAShardNoReplicaCanTakeIsExcludedBriefly: in a Redis Cluster
// failover every replica is refused a slot's shards, and each excludes
// them. Exclusions that doubled through a long failover outlasted one
// another: if the slot came back while one replica's had ended and the
// other's had not, all the slot's shards gathered on the first, for up
// to 160 lease TTLs. A refusal that no replica escapes (none holds the
// shard's lease) is excluded for a TTL, not doubled, so the shards are
// back where the assignment puts them soon after.
func TestAShardNoReplicaCanTakeIsExcludedBriefly(t *testing.T) {
	store := redisStore(t)
	clock := &fakeClock{t: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)}
	shards := regionShards("a", "r1", "r2", "r3", "r4", "r5", "r6")
	down := &atomic.Bool{}
	a := newGroupReplica(t, "a", slotDown{store, down}, shards, clock)
	b := newGroupReplica(t, "b", slotDown{store, down}, shards, clock)
	a.expire.Store(true)
	b.expire.Store(true)
	settle(t, []*groupReplica{a, b}, 6, map[string]int{"a": 3, "b": 3})
	want := owners(a, b)
	step := func() {
		clock.Add(3 * time.Second)
		a.g.Step(t.Context())
		b.g.Step(t.Context())
		waitPollers(t, a, b)
	}
	excluding := func() map[string][]diff.Shard {
		members, err := store.Members(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string][]diff.Shard{}
		for _, m := range members {
			out[m.ID] = m.Excluded
		}
		return out
	}
	worst := func(e map[string][]diff.Shard) bool { // b leaves a shard that a does not
		return slices.ContainsFunc(e["b"], func(s diff.Shard) bool { return !slices.Contains(e["a"], s) })
	}
	down.Store(true) // the slots' masters fail over: every lease write refused
	for range 300 {  // a quarter of an hour
		step()
	}
	// The slots come back at the worst moment: when b leaves a shard to
	// a, which does not leave it.
	rounds := 0
	for e := excluding(); !worst(e); e = excluding() {
		if rounds++; rounds > 2000 {
			t.Fatalf("never a round where b excludes a shard a does not: %v", e)
		}
		step()
	}
	down.Store(false)
	for rounds = 0; fmt.Sprint(owners(a, b)) != fmt.Sprint(want); rounds++ {
		if rounds > 200 {
			t.Fatalf("200 rounds after the failover the shards are %v, the assignment's were %v", owners(a, b), want)
		}
		step()
	}
	t.Logf("the shards were back where the assignment puts them %d rounds after the failover", rounds)
	if rounds > 12 { // a TTL's exclusion (5 rounds), and a few to take the shards
		t.Errorf("the shards took %d rounds to come back after the failover: the exclusions grew during it", rounds)
	}
}

// slotDown is a store whose lease writes all fail while down is set.
type slotDown struct {
	poller.LeaseStore
	down *atomic.Bool
}

func (s slotDown) Acquire(ctx context.Context, shard diff.Shard, owner string, ttl time.Duration, now time.Time) (checkpoint.Lease, error) {
	if s.down.Load() {
		return checkpoint.Lease{Shard: shard}, errors.New("CLUSTERDOWN The cluster is down")
	}
	return s.LeaseStore.Acquire(ctx, shard, owner, ttl, now)
}

func (s slotDown) Renew(ctx context.Context, l checkpoint.Lease, ttl time.Duration, now time.Time) (checkpoint.Lease, error) {
	if s.down.Load() {
		return l, errors.New("CLUSTERDOWN The cluster is down")
	}
	return s.LeaseStore.Renew(ctx, l, ttl, now)
}

// downStore is a store whose heartbeats fail while down, counting them,
// and which counts the releases.
type downStore struct {
	poller.LeaseStore
	down             atomic.Bool
	failed, released atomic.Int32
}

func (d *downStore) Heartbeat(ctx context.Context, m checkpoint.Member, ttl time.Duration, now time.Time) (checkpoint.Roster, error) {
	if d.down.Load() {
		d.failed.Add(1)
		return checkpoint.Roster{}, errors.New("dial tcp 10.0.0.7:6379: connect: connection refused")
	}
	return d.LeaseStore.Heartbeat(ctx, m, ttl, now)
}

func (d *downStore) Release(ctx context.Context, l checkpoint.Lease) error {
	d.released.Add(1)
	return d.LeaseStore.Release(ctx, l)
}

// TestAFailedHeartbeatDoesNotSpinRun: a round plans the next one early
// when another member's heartbeat expires within a tick. If the store
// then fails (a restart, a partition), the rounds that fail keep that
// plan, passed by now: Run started round after round with no pause,
// hammering the store (with KV, or a refused connection, at full CPU)
// until it answered again. The clock is frozen and the tick an hour, so
// that a second round can only come from such a plan; a poller that
// stops by itself then wakes Run, and by the time its lease is released
// Run must have made the one round.
func TestAFailedHeartbeatDoesNotSpinRun(t *testing.T) {
	base := redisStore(t)
	store := &downStore{LeaseStore: base}
	clock := &fakeClock{t: time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)}
	const ttl = 5 * time.Hour // a tick of an hour
	stop := make(chan struct{})
	survivor, err := poller.NewGroup(poller.GroupOptions{Replica: checkpoint.Member{ID: "survivor"}, Store: store,
		Shards: regionShards("a", "r1"), LeaseTTL: ttl, Now: clock.Now,
		Poll: func(ctx context.Context, _ diff.Shard, _ *poller.Claim) error {
			select {
			case <-ctx.Done():
			case <-stop:
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	dead := newGroupReplica(t, "dead", base, regionShards("b", "r1"), clock, func(o *poller.GroupOptions) { o.LeaseTTL = ttl })
	survivor.Step(t.Context())
	dead.g.Step(t.Context()) // its heartbeat lasts 4h (a TTL less a tick)
	clock.Add(3*time.Hour + 30*time.Minute)
	survivor.Step(t.Context()) // the dead one's heartbeat expires within a tick: the next round is planned then
	clock.Add(time.Hour)       // past that plan
	store.down.Store(true)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- survivor.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testenv.WaitFor(t, 5*time.Second, "Run's first round", func() error {
		if store.failed.Load() == 0 {
			return errors.New("no heartbeat yet")
		}
		return nil
	})
	close(stop)
	testenv.WaitFor(t, 5*time.Second, "the stopped poller's lease released", func() error {
		if store.released.Load() == 0 {
			return errors.New("not released")
		}
		return nil
	})
	if n := store.failed.Load(); n != 1 {
		t.Errorf("Run made %d rounds with the store down, in a tick of an hour: the early plan of a round that succeeded made it spin", n)
	}
}

// TestAFlappingBusDoesNotBounceTheShards: a replica whose link to NATS
// loses three pings running out of every six (a lossy link) steps back,
// and came back after three good pings, every time: its share moved away
// and back every six rounds, each move a hand-off gap, for as long as the
// link flapped. It now stays back twice as long each time it steps back
// again soon after its return, so that over 100 rounds its shards move a
// few times, not 30.
func TestAFlappingBusDoesNotBounceTheShards(t *testing.T) {
	store := redisStore(t)
	shards := regionShards("a", "r1", "r2", "r3", "r4", "r5", "r6")
	clock := &fakeClock{t: time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)}
	pa, pb := &gatedProbe{}, &gatedProbe{}
	a := newGroupReplica(t, "a", store, shards, clock, func(o *poller.GroupOptions) { o.Probe = pa.probe })
	b := newGroupReplica(t, "b", store, shards, clock, func(o *poller.GroupOptions) { o.Probe = pb.probe })
	settle(t, []*groupReplica{a, b}, 6, map[string]int{"a": 3, "b": 3})
	moves, had := 0, len(a.g.Owned())
	for round := range 100 {
		pa.down.Store(round%6 < 3)
		clock.Add(2 * time.Second)
		a.g.Step(t.Context())
		clock.Add(time.Second) // b's rounds come a second after a's
		b.g.Step(t.Context())
		waitPollers(t, a, b)
		if n := len(a.g.Owned()); n != had {
			moves++
			had = n
		}
	}
	t.Logf("a's share moved %d times in 100 rounds", moves)
	if moves > 10 {
		t.Errorf("a's share moved %d times in 100 rounds of a link losing three pings in six", moves)
	}
}
