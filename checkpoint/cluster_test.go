package checkpoint_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

// clusterShards returns n shards of several accounts (the default one
// among them), sources and regions.
func clusterShards(n int) []diff.Shard {
	accounts := []string{"", "acct-a", "acct-b", "acct-c"}
	sources := []diff.Source{diff.SourceECS, diff.SourceSWAS}
	shards := make([]diff.Shard, n)
	for i := range shards {
		shards[i] = diff.Shard{Account: accounts[i%len(accounts)], Source: sources[i/len(accounts)%len(sources)], Region: fmt.Sprintf("cn-%d", i)}
	}
	return shards
}

// masters maps each shard to the address of the master holding its slot.
func masters(t *testing.T, client *redis.ClusterClient, prefix string, shards []diff.Shard) map[diff.Shard]string {
	t.Helper()
	out := map[diff.Shard]string{}
	for _, s := range shards {
		addr, err := testenv.MasterOf(t.Context(), client, prefix+"records:{"+s.String()+"}")
		if err != nil {
			t.Fatal(err)
		}
		out[s] = addr
	}
	return out
}

// exerciseShard runs a shard through every write and read of the store:
// load, stage, commit with transitions and forgotten records, history,
// mark known, load again and absent.
func exerciseShard(ctx context.Context, s *checkpoint.Redis, shard diff.Shard) error {
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	var keys []diff.Key
	var updates []diff.Update
	for i := range 120 { // more than one HMGET chunk
		k := diff.Key{InvokeID: fmt.Sprintf("t-%03d", i/4)}
		if i%4 != 0 {
			k.InstanceID = fmt.Sprintf("i-%d", i%4)
		}
		keys = append(keys, k)
		updates = append(updates, diff.Update{Key: k, State: diff.State{Status: diff.StatusRunning, ObservedAt: t0}})
	}
	if prev, err := s.Load(ctx, shard, keys); err != nil || prev.Known || len(prev.States) != 0 {
		return fmt.Errorf("load, empty: known=%v %d states, %w", prev.Known, len(prev.States), err)
	}
	if err := s.Commit(ctx, shard, updates, nil); err != nil {
		return fmt.Errorf("first commit: %w", err)
	}
	var transitions []diff.Transition
	next := []diff.Update{{Key: keys[0], Forget: true}}
	for i, k := range keys[1:4] {
		tr := diff.Transition{Account: shard.Account, Source: shard.Source, Region: shard.Region, Previous: diff.StatusRunning,
			Record: diff.Record{Key: k, Status: diff.StatusSuccess}, ObservedAt: t0.Add(time.Duration(i+1) * time.Second)}
		tr.ID = diff.EventID(tr)
		transitions = append(transitions, tr)
		next = append(next, diff.Update{Key: k, State: diff.State{Status: diff.StatusSuccess, ObservedAt: tr.ObservedAt}})
	}
	if err := s.Stage(ctx, shard, diff.Result{Transitions: transitions, Updates: next}); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	if batch, ok, err := s.Staged(ctx, shard); err != nil || !ok || len(batch.Transitions) != len(transitions) {
		return fmt.Errorf("staged: %v %d transitions, %w", ok, len(batch.Transitions), err)
	}
	if err := s.Commit(ctx, shard, next, transitions); err != nil {
		return fmt.Errorf("commit with transitions: %w", err)
	}
	if err := s.MarkKnown(ctx, shard); err != nil {
		return fmt.Errorf("mark known: %w", err)
	}
	if _, ok, err := s.Staged(ctx, shard); err != nil || ok {
		return fmt.Errorf("staged after the commit: %v, %w", ok, err)
	}
	entries, _, err := s.History(ctx, shard, "", 10)
	if err != nil || len(entries) != len(transitions) {
		return fmt.Errorf("history: %d entries, %w", len(entries), err)
	}
	for i, e := range entries {
		if e.ID != transitions[i].ID || e.Account != diff.AccountOf(shard.Account) {
			return fmt.Errorf("history entry %d: %+v, want %s of account %s", i, e, transitions[i].ID, diff.AccountOf(shard.Account))
		}
	}
	prev, err := s.Load(ctx, shard, keys)
	if err != nil || !prev.Known || len(prev.States) != len(keys)-1 || prev.States[keys[2]].Status != diff.StatusSuccess {
		return fmt.Errorf("load after the commits: known=%v %d states, %w", prev.Known, len(prev.States), err)
	}
	absent, err := s.Absent(ctx, shard, func(k diff.Key) bool { return k != keys[5] })
	if err != nil || len(absent) != 1 {
		return fmt.Errorf("absent: %v, %w", absent, err)
	}
	return nil
}

// TestClusterRedisCommitsOnEveryMaster runs shards whose keys fall on all
// three masters of a real Redis Cluster through every operation of the
// store, concurrently: each atomic write stays in its shard's slot, so none
// is refused with CROSSSLOT. A default-account shard in the layout from
// before accounts, whose keys lie in other slots, is moved too.
func TestClusterRedisCommitsOnEveryMaster(t *testing.T) {
	client, prefix := testenv.RedisCluster(t)
	shards := clusterShards(24)
	where := masters(t, client, prefix, shards)
	spread := map[string]int{}
	for _, addr := range where {
		spread[addr]++
	}
	if len(spread) != 3 {
		t.Fatalf("the shards fall on %d masters (%v), want 3", len(spread), spread)
	}
	s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix, ChunkSize: 50})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(shards))
	for i, shard := range shards {
		wg.Go(func() {
			if err := exerciseShard(t.Context(), s, shard); err != nil {
				errs[i] = fmt.Errorf("%s on %s: %w", shard, where[shard], err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	// The heartbeat writes the members and the shards they list in one
	// script: both keys share a slot.
	roster, err := s.Heartbeat(t.Context(), checkpoint.Member{ID: "r1", Lists: shards}, 10*time.Second, time.Now())
	if err != nil || len(roster.Members) != 1 || len(roster.Listed) != len(shards) {
		t.Fatalf("heartbeat in a cluster: %d members, %d shards listed, %v", len(roster.Members), len(roster.Listed), err)
	}

	// The layout before accounts: <prefix><kind>:<source>:<region>, no
	// hash tag. Moved there by DUMP and RESTORE, as RENAME across slots
	// is refused.
	legacy := diff.Shard{Source: diff.SourceECS, Region: "cn-legacy"}
	if err := exerciseShard(t.Context(), s, legacy); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, kind := range []string{"records", "meta", "history"} {
		from, to := prefix+kind+":{default/ecs/cn-legacy}", prefix+kind+":ecs:cn-legacy"
		dump, err := client.Dump(ctx, from).Result()
		if err != nil {
			t.Fatalf("dump %s: %v", from, err)
		}
		if err := client.Restore(ctx, to, 0, dump).Err(); err != nil {
			t.Fatalf("restore %s: %v", to, err)
		}
		if err := client.Del(ctx, from).Err(); err != nil {
			t.Fatal(err)
		}
	}
	fresh, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	key := diff.Key{InvokeID: "t-000", InstanceID: "i-2"}
	if prev, err := fresh.Load(ctx, legacy, []diff.Key{key}); err != nil || !prev.Known || prev.States[key].Status != diff.StatusSuccess {
		t.Fatalf("the shard before accounts, moved: known=%v %+v, %v", prev.Known, prev.States, err)
	}
	if entries, _, err := fresh.History(ctx, legacy, "", 10); err != nil || len(entries) != 3 {
		t.Errorf("its history after the move: %d entries, %v", len(entries), err)
	}
	for _, kind := range []string{"records", "meta", "history"} {
		if n := client.Exists(ctx, prefix+kind+":ecs:cn-legacy").Val(); n != 0 {
			t.Errorf("the old %s key is left", kind)
		}
	}
	t.Cleanup(func() {
		// The cluster goes with the test; delete the keys anyway, as
		// testenv.Redis does, should it ever be shared.
		_ = client.ForEachMaster(context.Background(), func(ctx context.Context, c *redis.Client) error {
			iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
			for iter.Next(ctx) {
				c.Del(ctx, iter.Val())
			}
			return iter.Err()
		})
	})
}

// commitRound commits repeats=round for one record of every shard,
// retrying each commit until it succeeds (reloading after a conflict: a
// commit whose acknowledgement was lost may have been applied).
func commitRound(t *testing.T, s *checkpoint.KV, shards []diff.Shard, round int) {
	t.Helper()
	key := []diff.Key{{InvokeID: "t-1", InstanceID: "i-1"}}
	start, failures := time.Now(), 0
	defer func() {
		if failures > 0 {
			t.Logf("round %d: %d failed commits, all through in %v", round, failures, time.Since(start).Round(time.Millisecond))
		}
	}()
	for _, shard := range shards {
		up := []diff.Update{{Key: key[0], State: diff.State{Status: diff.StatusRunning, Repeats: round, ObservedAt: time.Unix(int64(round), 0).UTC()}}}
		testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("commit round %d of %s", round, shard), func() error {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			err := s.Commit(ctx, shard, up, nil)
			if errors.Is(err, checkpoint.ErrConflict) {
				if _, lerr := s.Load(ctx, shard, key); lerr != nil {
					err = errors.Join(err, lerr)
				}
			}
			if err != nil {
				failures++
			}
			return err
		})
	}
}

// loadRound checks that a fresh store on nc reads every shard's record
// at round.
func loadRound(t *testing.T, nc *nats.Conn, bucket string, shards []diff.Shard, round int) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	key := diff.Key{InvokeID: "t-1", InstanceID: "i-1"}
	for _, shard := range shards {
		prev, err := s.Load(t.Context(), shard, []diff.Key{key})
		if err != nil || prev.States[key].Repeats != round {
			t.Errorf("%s read back: %+v, %v; want the record at round %d", shard, prev.States, err, round)
		}
	}
}

// connectFirstTo connects to the cluster through node first, falling
// over to the others in order when it goes.
func connectFirstTo(t *testing.T, cluster *testenv.NATSNodes, first int) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	urls := cluster.URLs()
	ordered := append([]string{urls[first]}, append(urls[:first:first], urls[first+1:]...)...)
	nc, err := nats.Connect(strings.Join(ordered, ","), nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// streamLeader waits for the stream to have a leader, and returns it.
func streamLeader(t *testing.T, cluster *testenv.NATSNodes, stream string) int {
	t.Helper()
	leader := -1
	testenv.WaitFor(t, 10*time.Second, "a leader of "+stream, func() error {
		if leader = cluster.StreamLeader(stream); leader < 0 {
			return errors.New("none")
		}
		return nil
	})
	return leader
}

// TestClusterKVCommitsSurviveANodeLoss commits to a bucket with three
// replicas on a three-node JetStream cluster while the node leading the
// bucket, which the store's connection is to, is shut down, and after it
// came back: every commit goes through, and fresh stores read the last
// one, through the survivors and through the node that came back.
func TestClusterKVCommitsSurviveANodeLoss(t *testing.T) {
	cluster := testenv.NATSCluster(t, 3)
	bucket := testenv.Name("CAPOLLER_CKPT")
	stream := "KV_" + bucket
	nc, setup := testenv.NATS(t, cluster.URL(), bucket)
	if _, err := checkpoint.NewKV(t.Context(), setup, checkpoint.KVOptions{Bucket: bucket, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	info, err := setup.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().Config.Replicas; got != 3 {
		t.Fatalf("bucket created with %d replicas, want 3", got)
	}
	leader := streamLeader(t, cluster, stream)
	conn, js := connectFirstTo(t, cluster, leader)
	s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	shards := clusterShards(4)
	for _, shard := range shards {
		if _, err := s.Load(t.Context(), shard, []diff.Key{{InvokeID: "t-1", InstanceID: "i-1"}}); err != nil {
			t.Fatal(err)
		}
	}
	round := 0
	for range 5 {
		round++
		commitRound(t, s, shards, round)
	}
	cluster.Shutdown(leader)
	for range 10 {
		round++
		commitRound(t, s, shards, round)
	}
	if conn.ConnectedUrl() == cluster.URLs()[leader] {
		t.Errorf("the store's connection is still to the node shut down")
	}
	if now := cluster.StreamLeader(stream); now == leader || now < 0 {
		t.Errorf("stream leader %d after node %d was shut down", now, leader)
	}
	loadRound(t, nc, bucket, shards, round)
	cluster.Restart(leader)
	for range 5 {
		round++
		commitRound(t, s, shards, round)
	}
	back, err := nats.Connect(cluster.URLs()[leader])
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	loadRound(t, back, bucket, shards, round)
}
