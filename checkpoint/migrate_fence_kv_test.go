package checkpoint_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

type pausingJS struct {
	jetstream.JetStream
	kv *pausingKV
}

func (p *pausingJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := p.JetStream.KeyValue(ctx, bucket)
	if err != nil {
		return nil, err
	}
	p.kv.KeyValue = kv
	return p.kv, nil
}

// pausingKV blocks the first write (Put or Create) of a current-layout segment.
type pausingKV struct {
	jetstream.KeyValue
	once             sync.Once
	reached, release chan struct{}
}

func (p *pausingKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if strings.HasPrefix(key, "default.ecs.r.s.") {
		p.once.Do(func() { close(p.reached); <-p.release })
	}
	return p.KeyValue.Put(ctx, key, value)
}

func (p *pausingKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if strings.HasPrefix(key, "default.ecs.r.s.") {
		p.once.Do(func() { close(p.reached); <-p.release })
	}
	return p.KeyValue.Create(ctx, key, value, opts...)
}

// TestAKVMigrationPausedPastItsLeaseWritesNothingBack is the KV twin: a
// stale owner paused before its first segment write of the move resumes
// after the new owner moved, took over and committed; it must neither
// write old segments back nor erase the new owner's token.
func TestAKVMigrationPausedPastItsLeaseWritesNothingBack(t *testing.T) {
	bucket := testenv.Name("CAPOLLER_CKPT")
	_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
	open := func(js jetstream.JetStream) *checkpoint.KV {
		s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ctx := t.Context()
	shard := diff.Shard{Source: diff.SourceECS, Region: "r"}
	key := diff.Key{InvokeID: "t-1", InstanceID: "i-1"}
	seed := open(js)
	if err := seed.Commit(ctx, shard, []diff.Update{{Key: key, State: diff.State{Status: diff.StatusPending, ObservedAt: time.Unix(7, 0).UTC()}}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := seed.MarkKnown(ctx, shard); err != nil {
		t.Fatal(err)
	}
	kv, _ := js.KeyValue(ctx, bucket)
	names := []string{"meta"}
	for i := range 64 {
		names = append(names, "s."+strconv.Itoa(i))
	}
	for _, n := range names {
		e, err := kv.Get(ctx, "default.ecs.r."+n)
		if err != nil {
			continue
		}
		if _, err := kv.Put(ctx, "ecs.r."+n, e.Value()); err != nil {
			t.Fatal(err)
		}
		_ = kv.Purge(ctx, "default.ecs.r."+n)
	}

	pk := &pausingKV{reached: make(chan struct{}), release: make(chan struct{})}
	a := open(&pausingJS{JetStream: js, kv: pk})
	b := open(js)
	t0 := time.Now()
	acquireAndFence(t, a, shard, "a", t0)
	aDone := make(chan error, 1)
	go func() { _, err := a.Load(context.Background(), shard, []diff.Key{key}); aDone <- err }()
	<-pk.reached

	lb := acquireAndFence(t, b, shard, "b", t0.Add(2*ttl))
	if _, err := b.Load(ctx, shard, []diff.Key{key}); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx, shard, []diff.Update{{Key: key, State: diff.State{Status: diff.StatusSuccess, ObservedAt: time.Unix(9, 0).UTC()}}}, nil); err != nil {
		t.Fatal(err)
	}
	close(pk.release)
	t.Logf("stale owner's Load: %v", <-aDone)

	c := open(js) // a fresh process holding b's token
	c.Fence(shard, lb.Token)
	prev, err := c.Load(ctx, shard, []diff.Key{key})
	if err != nil {
		t.Fatal(err)
	}
	if got := prev.States[key].Status; got != diff.StatusSuccess {
		t.Fatalf("the new owner's committed Success was overwritten by a fenced replica's migration: now %q", got)
	}
}
