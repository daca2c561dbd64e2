package checkpoint_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

// replicaStore is a replica's store: the checkpoint and the group.
type replicaStore interface {
	store
	checkpoint.Leases
}

// backends gives, for each kind of store, a function that sets up one
// backend for a test and returns how to open a store on it: each store
// opened is another process, with its own memory.
func backends() map[string]func(t *testing.T) func() replicaStore {
	return map[string]func(t *testing.T) func() replicaStore{
		"redis": func(t *testing.T) func() replicaStore {
			client, prefix := testenv.Redis(t)
			return func() replicaStore {
				s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix, ChunkSize: 100})
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
		},
		"natskv": func(t *testing.T) func() replicaStore {
			bucket := testenv.Name("CAPOLLER_CKPT")
			_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
			return func() replicaStore {
				s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
		},
	}
}

// leaseEpoch is on a millisecond: the stores keep times in milliseconds.
func leaseEpoch() time.Time { return time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC) }

const ttl = 10 * time.Second

func sameLease(a, b checkpoint.Lease) bool {
	return a.Shard == b.Shard && a.Owner == b.Owner && a.Token == b.Token &&
		a.Acquired.Equal(b.Acquired) && a.Renewed.Equal(b.Renewed) && a.Expires.Equal(b.Expires)
}

// TestLeases walks a shard's lease through owners: taken, held against
// another, kept by its holder, renewed, taken over after expiry, released.
func TestLeases(t *testing.T) {
	t0 := leaseEpoch()
	shard := diff.Shard{Account: "acme", Source: diff.SourceECS, Region: "cn-hangzhou"}
	other := diff.Shard{Account: "acme", Source: diff.SourceECS, Region: "cn-beijing"}
	never := diff.Shard{Account: "acme", Source: diff.SourceSWAS, Region: "cn-hangzhou"}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			opener := open(t)
			s := opener()
			expect := func(step string, got checkpoint.Lease, err error, want checkpoint.Lease, wantErr error) {
				t.Helper()
				if !errors.Is(err, wantErr) || (wantErr == nil && err != nil) {
					t.Fatalf("%s: error %v, want %v", step, err, wantErr)
				}
				if !sameLease(got, want) {
					t.Fatalf("%s:\n got %+v\nwant %+v", step, got, want)
				}
			}
			ls, err := s.Leases(ctx, []diff.Shard{shard})
			if err != nil || len(ls) != 1 || !sameLease(ls[0], checkpoint.Lease{Shard: shard}) {
				t.Fatalf("a shard never leased: %+v, %v", ls, err)
			}

			a1 := checkpoint.Lease{Shard: shard, Owner: "a", Token: tokenAt(t0), Acquired: t0, Renewed: t0, Expires: at(ttl)}
			got, err := s.Acquire(ctx, shard, "a", ttl, t0)
			expect("a free shard", got, err, a1, nil)
			got, err = s.Acquire(ctx, shard, "b", ttl, at(time.Second))
			expect("a second owner", got, err, a1, checkpoint.ErrLeaseHeld)

			a1.Renewed, a1.Expires = at(2*time.Second), at(2*time.Second+ttl)
			got, err = s.Acquire(ctx, shard, "a", ttl, at(2*time.Second))
			expect("the holder again", got, err, a1, nil)
			a1.Renewed, a1.Expires = at(5*time.Second), at(5*time.Second+ttl)
			got, err = s.Renew(ctx, a1, ttl, at(5*time.Second))
			expect("a renewal", got, err, a1, nil)

			got, err = s.Acquire(ctx, shard, "b", ttl, a1.Expires.Add(-time.Millisecond))
			expect("a millisecond before expiry", got, err, a1, checkpoint.ErrLeaseHeld)
			b2 := checkpoint.Lease{Shard: shard, Owner: "b", Token: tokenAt(a1.Expires), Acquired: a1.Expires, Renewed: a1.Expires, Expires: a1.Expires.Add(ttl)}
			got, err = s.Acquire(ctx, shard, "b", ttl, a1.Expires)
			expect("at expiry, another owner", got, err, b2, nil)

			got, err = s.Renew(ctx, a1, ttl, at(16*time.Second))
			expect("the old owner's renewal", got, err, b2, checkpoint.ErrLeaseLost)
			if err := s.Release(ctx, a1); err != nil {
				t.Fatal(err)
			}
			ls, err = s.Leases(ctx, []diff.Shard{shard})
			if err != nil || !sameLease(ls[0], b2) {
				t.Fatalf("the old owner's release took the new owner's lease: %+v, %v", ls, err)
			}

			if err := s.Release(ctx, b2); err != nil {
				t.Fatal(err)
			}
			released := checkpoint.Lease{Shard: shard, Token: b2.Token}
			ls, err = s.Leases(ctx, []diff.Shard{shard})
			expect("released", ls[0], err, released, nil)
			if ls[0].Live(at(17 * time.Second)) {
				t.Error("a released lease is live")
			}
			got, err = s.Renew(ctx, b2, ttl, at(17*time.Second))
			expect("renewing a released lease", got, err, released, checkpoint.ErrLeaseLost)
			a3 := checkpoint.Lease{Shard: shard, Owner: "a", Token: tokenAt(at(17 * time.Second)), Acquired: at(17 * time.Second), Renewed: at(17 * time.Second), Expires: at(17*time.Second + ttl)}
			got, err = s.Acquire(ctx, shard, "a", ttl, at(17*time.Second)) // b's lease ran until 25 s
			expect("after a release, at once", got, err, a3, nil)

			// Expired but not taken over, the token is still the shard's:
			// its holder may renew it. Acquire cannot tell the holder from
			// another process of the same id, so it takes a new token.
			late := a3.Expires.Add(time.Minute)
			a3.Renewed, a3.Expires = late, late.Add(ttl)
			got, err = s.Renew(ctx, a3, ttl, late)
			expect("renewing an expired lease", got, err, a3, nil)
			a4 := checkpoint.Lease{Shard: shard, Owner: "a", Token: tokenAt(a3.Expires), Acquired: a3.Expires, Renewed: a3.Expires, Expires: a3.Expires.Add(ttl)}
			got, err = s.Acquire(ctx, shard, "a", ttl, a3.Expires)
			expect("the holder after expiry", got, err, a4, nil)

			o1, err := s.Acquire(ctx, other, "b", ttl, t0)
			if err != nil || o1.Token != tokenAt(t0) {
				t.Fatalf("another shard: %+v, %v", o1, err)
			}
			ls, err = opener().Leases(ctx, []diff.Shard{other, shard, never}) // another process reads them
			if err != nil || len(ls) != 3 || !sameLease(ls[0], o1) || !sameLease(ls[1], a4) || !sameLease(ls[2], checkpoint.Lease{Shard: never}) {
				t.Fatalf("leases read back: %+v, %v", ls, err)
			}
		})
	}
}

// TestLeaseRace: two processes acquiring one shard at the same instant;
// exactly one wins, and the loser is told the winner's lease.
func TestLeaseRace(t *testing.T) {
	t0 := leaseEpoch()
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			opener := open(t)
			replicas := []replicaStore{opener(), opener()}
			for round := range 20 {
				shard := diff.Shard{Source: diff.SourceECS, Region: fmt.Sprintf("r-%d", round)}
				var leases [2]checkpoint.Lease
				var errs [2]error
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i, s := range replicas {
					wg.Go(func() {
						<-start
						leases[i], errs[i] = s.Acquire(ctx, shard, fmt.Sprintf("replica-%d", i), ttl, t0)
					})
				}
				close(start)
				wg.Wait()
				won := 0
				for i, err := range errs {
					switch {
					case err == nil:
						won++
					case !errors.Is(err, checkpoint.ErrLeaseHeld):
						t.Fatalf("round %d, replica %d: %v", round, i, err)
					}
				}
				if won != 1 || !sameLease(leases[0], leases[1]) || leases[0].Token != tokenAt(t0) {
					t.Fatalf("round %d: %d winners, leases %+v / %+v", round, won, leases[0], leases[1])
				}
			}
		})
	}
}

// TestMembership: heartbeats register members, sorted by id; an expired
// one is pruned by the next heartbeat; Leave removes one at once.
func TestMembership(t *testing.T) {
	t0 := leaseEpoch()
	ids := func(ms []checkpoint.Member) string {
		var out []string
		for _, m := range ms {
			out = append(out, m.ID)
		}
		return fmt.Sprint(out)
	}
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			opener := open(t)
			s := opener()
			beat := func(m checkpoint.Member, ttl time.Duration, now time.Time, want string) []checkpoint.Member {
				t.Helper()
				roster, err := s.Heartbeat(ctx, m, ttl, now)
				ms := roster.Members
				if err != nil || ids(ms) != want {
					t.Fatalf("heartbeat of %s at %v: %v, %v; want %s", m.ID, now, ids(ms), err, want)
				}
				return ms
			}
			c := checkpoint.Member{ID: "c", Host: "host-c", PID: 3, Version: "v1.2", Started: t0.Add(-time.Hour)}
			beat(c, ttl, t0, "[c]")
			ms := beat(checkpoint.Member{ID: "b", PID: 2}, 2*time.Second, t0, "[b c]")
			if !ms[0].Started.Equal(t0) || !ms[0].Expires.Equal(t0.Add(2*time.Second)) {
				t.Errorf("b without a start time: %+v", ms[0])
			}
			beat(checkpoint.Member{ID: "a"}, ttl, t0.Add(time.Second), "[a b c]")
			ms = beat(c, ttl, t0.Add(2*time.Second), "[a c]") // b's heartbeat expired at 2 s
			want := checkpoint.Member{ID: "c", Host: "host-c", PID: 3, Version: "v1.2", Started: t0.Add(-time.Hour), Seen: t0.Add(2 * time.Second), Expires: t0.Add(2*time.Second + ttl)}
			if got := ms[1]; got.ID != want.ID || got.Host != want.Host || got.PID != want.PID || got.Version != want.Version ||
				!got.Started.Equal(want.Started) || !got.Seen.Equal(want.Seen) || !got.Expires.Equal(want.Expires) {
				t.Errorf("c read back:\n got %+v\nwant %+v", got, want)
			}
			ms = beat(checkpoint.Member{ID: "a"}, ttl, t0.Add(3*time.Second), "[a c]")
			if !ms[0].Started.Equal(t0.Add(time.Second)) || !ms[0].Seen.Equal(t0.Add(3*time.Second)) {
				t.Errorf("a heartbeat without a start time lost the first one's: %+v", ms[0])
			}
			if err := s.Leave(ctx, "c"); err != nil {
				t.Fatal(err)
			}
			if err := s.Leave(ctx, "never-joined"); err != nil {
				t.Fatal(err)
			}
			beat(checkpoint.Member{ID: "a"}, ttl, t0.Add(4*time.Second), "[a]")
			if ms, err := s.Members(ctx); err != nil || ids(ms) != "[a]" || !ms[0].Seen.Equal(t0.Add(4*time.Second)) {
				t.Errorf("Members: %v %+v %v", ids(ms), ms, err)
			}

			// Two processes beating at once both stay members.
			other := opener()
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, st := range []replicaStore{s, other} {
				wg.Go(func() {
					_, errs[i] = st.Heartbeat(ctx, checkpoint.Member{ID: fmt.Sprintf("p%d", i)}, ttl, t0.Add(5*time.Second))
				})
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			beat(checkpoint.Member{ID: "a"}, ttl, t0.Add(6*time.Second), "[a p0 p1]")
		})
	}
}

// TestMembersListTheirShards: a heartbeat carries the member's shards,
// exclusions, withdrawal and last probe, read back by the others; the
// group remembers which shards were listed, by whom and when, for
// ListedMemory after the last heartbeat listing each, also once the
// member that listed it is gone.
func TestMembersListTheirShards(t *testing.T) {
	t0 := leaseEpoch()
	a := diff.Shard{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}
	b := diff.Shard{Account: "prod", Source: diff.SourceSWAS, Region: "cn-hangzhou"}
	c := diff.Shard{Account: "default", Source: diff.SourceECS, Region: "ap-southeast-1"}
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			s := open(t)()
			one := checkpoint.Member{ID: "one", Lists: []diff.Shard{b, a}, Excluded: []diff.Shard{b}, Withdrawn: "cannot reach the bus", BusOK: t0.Add(-time.Second)}
			if _, err := s.Heartbeat(ctx, one, ttl, t0); err != nil {
				t.Fatal(err)
			}
			roster, err := s.Heartbeat(ctx, checkpoint.Member{ID: "two", Shards: "abc", Lists: []diff.Shard{c}}, 2*time.Second, t0.Add(time.Second))
			if err != nil || len(roster.Members) != 2 {
				t.Fatalf("roster %+v, %v", roster, err)
			}
			got := roster.Members[0]
			if fmt.Sprint(got.Lists) != fmt.Sprint([]diff.Shard{a, b}) || fmt.Sprint(got.Excluded) != fmt.Sprint([]diff.Shard{b}) ||
				got.Withdrawn != one.Withdrawn || !got.BusOK.Equal(one.BusOK) {
				t.Errorf("member one read back as %+v", got)
			}
			listed := func(ls []checkpoint.ListedShard) string {
				var out []string
				for _, l := range ls {
					out = append(out, fmt.Sprintf("%s by %s at %s", l.Shard, l.By, l.At.Sub(t0)))
				}
				return fmt.Sprint(out)
			}
			want := "[default/ecs/ap-southeast-1 by two at 1s prod/ecs/cn-hangzhou by one at 0s prod/swas/cn-hangzhou by one at 0s]"
			if got := listed(roster.Listed); got != want {
				t.Errorf("listed:\n got %s\nwant %s", got, want)
			}
			// A member listing nothing says so ([] is not an earlier
			// version's absent list), also through Redis's re-encoding of a
			// heartbeat that keeps the first start time (cjson writes [] as {}).
			for range 2 {
				roster, err = s.Heartbeat(ctx, checkpoint.Member{ID: "empty", Lists: []diff.Shard{}}, ttl, t0.Add(time.Second))
				if err != nil {
					t.Fatal(err)
				}
			}
			for _, m := range roster.Members {
				if m.ID == "empty" && (m.Lists == nil || len(m.Lists) != 0) {
					t.Errorf("a member listing nothing read back with lists %#v", m.Lists)
				}
				if m.ID == "two" && m.Lists == nil {
					t.Errorf("two's list was lost")
				}
			}
			if err := s.Leave(ctx, "empty"); err != nil {
				t.Fatal(err)
			}
			// two's heartbeat expires; the shard it listed is still remembered,
			// and forgotten ListedMemory after its last listing.
			later := t0.Add(checkpoint.ListedMemory / 2)
			roster, err = s.Heartbeat(ctx, checkpoint.Member{ID: "one", Lists: []diff.Shard{a, b}}, ttl, later)
			if err != nil || len(roster.Members) != 1 || roster.Members[0].Excluded != nil || roster.Members[0].Withdrawn != "" {
				t.Fatalf("roster %+v, %v", roster, err)
			}
			if got := listed(roster.Listed); !strings.Contains(got, "default/ecs/ap-southeast-1 by two at 1s") {
				t.Errorf("the shard of a member gone is not remembered: %s", got)
			}
			if ls, err := s.Listed(ctx, later); err != nil || listed(ls) != listed(roster.Listed) {
				t.Errorf("Listed: %s, %v; the heartbeat said %s", listed(ls), err, listed(roster.Listed))
			}
			end := t0.Add(checkpoint.ListedMemory + 2*time.Second)
			roster, err = s.Heartbeat(ctx, checkpoint.Member{ID: "one", Lists: []diff.Shard{a, b}}, ttl, end)
			if err != nil || strings.Contains(listed(roster.Listed), "ap-southeast-1") || len(roster.Listed) != 2 {
				t.Errorf("after ListedMemory: %s, %v", listed(roster.Listed), err)
			}
		})
	}
}

// TestStatuses: a report is read back; a failed cycle's report keeps the
// last success; a shard never reported has only its shard.
func TestStatuses(t *testing.T) {
	t0 := leaseEpoch()
	shard := diff.Shard{Account: "acme", Source: diff.SourceECS, Region: "cn-hangzhou"}
	other := diff.Shard{Account: "acme", Source: diff.SourceECS, Region: "cn-beijing"}
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			s := open(t)()
			check := func(step string, want ...checkpoint.ShardStatus) {
				t.Helper()
				got, err := s.Statuses(ctx, []diff.Shard{shard, other})
				if err != nil || len(got) != len(want) {
					t.Fatalf("%s: %+v, %v", step, got, err)
				}
				for i := range want {
					g, w := got[i], want[i]
					if g.Shard != w.Shard || g.Replica != w.Replica || g.LastError != w.LastError ||
						!g.LastSuccess.Equal(w.LastSuccess) || !g.LastCycle.Equal(w.LastCycle) {
						t.Fatalf("%s: status %d\n got %+v\nwant %+v", step, i, g, w)
					}
				}
			}
			check("none reported", checkpoint.ShardStatus{Shard: shard}, checkpoint.ShardStatus{Shard: other})
			ok := checkpoint.ShardStatus{Shard: shard, Replica: "a", LastSuccess: t0, LastCycle: t0}
			if err := s.Report(ctx, ok); err != nil {
				t.Fatal(err)
			}
			check("a success", ok, checkpoint.ShardStatus{Shard: other})
			failed := checkpoint.ShardStatus{Shard: shard, Replica: "b", LastCycle: t0.Add(time.Minute), LastError: "throttled: retry after 60s"}
			if err := s.Report(ctx, failed); err != nil {
				t.Fatal(err)
			}
			failed.LastSuccess = t0
			check("a failure after it", failed, checkpoint.ShardStatus{Shard: other})
			again := checkpoint.ShardStatus{Shard: shard, Replica: "b", LastSuccess: t0.Add(2 * time.Minute), LastCycle: t0.Add(2 * time.Minute)}
			if err := s.Report(ctx, again); err != nil {
				t.Fatal(err)
			}
			check("a success again", again, checkpoint.ShardStatus{Shard: other})
		})
	}
}

// tokenAt is the token of a lease taken at a free shard at now: new tokens
// are at least the time in milliseconds, so that they keep growing should
// the lease itself be lost.
func tokenAt(now time.Time) uint64 { return uint64(now.UnixMilli()) }

// TestTokensGrowWhenTheLeaseIsLost: a lease deleted by hand (or a
// flushed database, a recreated bucket) does not bring tokens back to 1,
// so an old owner's write is still refused.
func TestTokensGrowWhenTheLeaseIsLost(t *testing.T) {
	t0 := leaseEpoch()
	shard := diff.Shard{Source: diff.SourceECS, Region: "lost"}
	run := func(t *testing.T, a, b replicaStore, forget func()) {
		la, err := a.Acquire(t.Context(), shard, "a", 10*time.Second, t0)
		if err != nil {
			t.Fatal(err)
		}
		a.Fence(shard, la.Token)
		for i := range 3 { // takeovers within one millisecond's worth of tokens
			if _, err := b.Acquire(t.Context(), shard, fmt.Sprint("x", i), 10*time.Second, t0.Add(time.Duration(i+1)*11*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		forget()
		lb, err := b.Acquire(t.Context(), shard, "b", 10*time.Second, t0.Add(time.Minute))
		if err != nil || lb.Token <= la.Token {
			t.Fatalf("after the lease was lost: %+v %v; the old owner's token was %d", lb, err, la.Token)
		}
		if err := a.MarkKnown(t.Context(), shard); !errors.Is(err, checkpoint.ErrFenced) {
			t.Fatalf("the old owner's write after the lease was lost and taken: %v", err)
		}
	}
	t.Run("redis", func(t *testing.T) {
		client, prefix := testenv.Redis(t)
		open := func() replicaStore {
			s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		run(t, open(), open(), func() { client.Del(t.Context(), prefix+"lease:{default/ecs/lost}") })
	})
	t.Run("natskv", func(t *testing.T) {
		bucket := testenv.Name("CAPOLLER_CKPT")
		_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
		open := func() replicaStore {
			s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		a, b := open(), open()
		run(t, a, b, func() {
			kv, err := js.KeyValue(t.Context(), bucket)
			if err != nil {
				t.Fatal(err)
			}
			if err := kv.Purge(t.Context(), "default.ecs.lost.lease"); err != nil {
				t.Fatal(err)
			}
		})
	})
}

// TestAConfigurationsListIsKeptOnceAndWrittenAgainIfLost: a member's
// heartbeat sends its configuration's list only while the store may lack
// it (the heartbeats stay small however many shards a replica lists), and
// sends it again once the store says it lost it (a flushed key).
func TestAConfigurationsListIsKeptOnceAndWrittenAgainIfLost(t *testing.T) {
	t0 := leaseEpoch()
	client, prefix := testenv.Redis(t)
	s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	shards := []diff.Shard{{Account: "prod", Source: diff.SourceECS, Region: "cn-hangzhou"}, {Account: "prod", Source: diff.SourceSWAS, Region: "cn-hangzhou"}}
	digest := checkpoint.ShardsDigest(shards)
	key := "{" + prefix + "group:members}configs"
	beat := func(at time.Duration) checkpoint.Roster {
		t.Helper()
		r, err := s.Heartbeat(ctx, checkpoint.Member{ID: "a", Lists: shards}, ttl, t0.Add(at))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	beat(0)
	if n, err := client.HExists(ctx, key, digest).Result(); err != nil || !n {
		t.Fatalf("the list is not kept under its digest: %v %v", n, err)
	}
	client.HDel(ctx, key, digest) // lost
	beat(time.Second)             // sent no list: the store had it
	if n, _ := client.HExists(ctx, key, digest).Result(); n {
		t.Fatal("the second heartbeat sent the list again, while the store had it")
	}
	r := beat(2 * time.Second) // told it was lost: sends it again
	if n, _ := client.HExists(ctx, key, digest).Result(); !n {
		t.Fatal("the list lost was not written again")
	}
	if len(r.Members) != 1 || fmt.Sprint(r.Members[0].Lists) != fmt.Sprint(shards) || len(r.Listed) != 2 {
		t.Errorf("roster %+v", r)
	}
	// Another process reads the list once, by its digest.
	other, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := other.Members(ctx)
	if err != nil || len(ms) != 1 || fmt.Sprint(ms[0].Lists) != fmt.Sprint(shards) {
		t.Errorf("Members of another process: %+v, %v", ms, err)
	}
}
