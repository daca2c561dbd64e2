package checkpoint_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

// writeShard commits a known shard with one record and stages a batch.
func writeShard(t *testing.T, s store, shard diff.Shard) {
	t.Helper()
	ctx := t.Context()
	key := diff.Key{InvokeID: "t-1", InstanceID: "i-1"}
	if err := s.Commit(ctx, shard, []diff.Update{{Key: key, State: diff.State{Status: diff.StatusRunning, ObservedAt: time.Unix(7, 0).UTC()}}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkKnown(ctx, shard); err != nil {
		t.Fatal(err)
	}
	staged := diff.Result{Transitions: []diff.Transition{{ID: "e1", Source: shard.Source, Region: shard.Region,
		Record: diff.Record{Key: key, Status: diff.StatusSuccess}, Previous: diff.StatusRunning}}}
	if err := s.Stage(ctx, shard, staged); err != nil {
		t.Fatal(err)
	}
}

// checkMoved says whether the shard reads as writeShard left it.
func checkMoved(t *testing.T, s store, shard diff.Shard) {
	t.Helper()
	ctx := t.Context()
	key := diff.Key{InvokeID: "t-1", InstanceID: "i-1"}
	prev, err := s.Load(ctx, shard, []diff.Key{key})
	if err != nil || !prev.Known || prev.States[key].Status != diff.StatusRunning || prev.States[key].ObservedAt.Unix() != 7 {
		t.Fatalf("%s after the move: known=%v %+v %v", shard, prev.Known, prev.States, err)
	}
	batch, ok, err := s.Staged(ctx, shard)
	if err != nil || !ok || len(batch.Transitions) != 1 || batch.Transitions[0].ID != "e1" || batch.Transitions[0].Account != diff.DefaultAccount {
		t.Fatalf("%s staged batch after the move: %+v %v %v", shard, batch, ok, err)
	}
	other := diff.Shard{Account: "other", Source: shard.Source, Region: shard.Region}
	if prev, err := s.Load(ctx, other, []diff.Key{key}); err != nil || prev.Known || len(prev.States) != 0 {
		t.Fatalf("another account's shard in the same region sees the default account's states: %+v %v", prev, err)
	}
}

// TestRedisMovesTheLayoutBeforeAccounts: a shard written before accounts
// (keys <prefix><kind>:<source>:<region>) is the default account's, and
// is found under its hash-tagged keys, staged batch and history included.
func TestRedisMovesTheLayoutBeforeAccounts(t *testing.T) {
	client, prefix := testenv.Redis(t)
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	writeShard(t, newRedis(t, client, prefix), shard)
	ctx := context.Background()
	for _, kind := range []string{"records", "meta"} {
		if err := client.Rename(ctx, prefix+kind+":{default/ecs/r}", prefix+kind+":ecs:r").Err(); err != nil {
			t.Fatalf("make the old layout: %v", err)
		}
	}
	// That layout held one staged batch, a string.
	raw := client.LPop(ctx, prefix+"staged:{default/ecs/r}").Val()
	client.Set(ctx, prefix+"outbox:ecs:r", raw, 0)
	checkMoved(t, newRedis(t, client, prefix), shard)
	if n := client.Exists(ctx, prefix+"records:ecs:r", prefix+"meta:ecs:r", prefix+"outbox:ecs:r").Val(); n != 0 {
		t.Errorf("%d keys of the old layout are left", n)
	}
}

// TestKVMovesTheLayoutBeforeAccounts is the same for the key-value store
// (values <source>.<region>.…).
func TestKVMovesTheLayoutBeforeAccounts(t *testing.T) {
	bucket := testenv.Name("CAPOLLER_CKPT")
	_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
	open := func() *checkpoint.KV {
		s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	writeShard(t, open(), shard)
	kv, err := js.KeyValue(t.Context(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"meta", "outbox", "outbox.0"}
	for i := range 64 {
		names = append(names, "s."+strconv.Itoa(i))
	}
	moved := 0
	for _, name := range names {
		entry, err := kv.Get(t.Context(), "default.ecs.r."+name)
		if err != nil {
			continue // a segment no record fell in
		}
		if _, err := kv.Put(t.Context(), "ecs.r."+name, entry.Value()); err != nil {
			t.Fatal(err)
		}
		if err := kv.Purge(t.Context(), "default.ecs.r."+name); err != nil {
			t.Fatal(err)
		}
		moved++
	}
	if moved < 4 {
		t.Fatalf("only %d values to move", moved)
	}
	checkMoved(t, open(), shard)
	for _, name := range names {
		if _, err := kv.Get(t.Context(), "ecs.r."+name); err == nil {
			t.Errorf("value %s of the old layout is left", name)
		}
	}
}
