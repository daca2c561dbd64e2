package checkpoint_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/publisher/embedded"
)

// An auditor's program reads the history of every shard as one, in the
// order the transitions were committed, from a JetStream KV store (a
// Redis store reads the same way).
func ExampleHistoryReader() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "capoller-history-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	srv, err := embedded.Run(embedded.Options{StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		panic(err)
	}
	store, err := checkpoint.NewKV(ctx, js, checkpoint.KVOptions{Bucket: "CAPOLLER_HISTORY_EXAMPLE"})
	if err != nil {
		panic(err)
	}

	// What pollers committed: two shards, three commits.
	commit := func(region, invokeID string, from, to diff.Status) {
		shard := diff.Shard{Source: diff.SourceECS, Region: region}
		t := diff.Transition{Source: shard.Source, Region: region, Previous: from, ObservedAt: time.Now(),
			Record: diff.Record{Key: diff.Key{InvokeID: invokeID}, Status: to}}
		t.ID = diff.EventID(t)
		if err := store.Commit(ctx, shard, nil, []diff.Transition{t}); err != nil {
			panic(err)
		}
		time.Sleep(2 * time.Millisecond) // pacing: a history id counts milliseconds
	}
	commit("cn-hangzhou", "t-1", "", diff.StatusRunning)
	commit("cn-hangzhou", "t-1", diff.StatusRunning, diff.StatusSuccess)
	commit("cn-shanghai", "t-9", diff.StatusRunning, diff.StatusFailed)

	shards, err := store.HistoryShards(ctx)
	if err != nil {
		panic(err)
	}
	r := checkpoint.ReadHistory(store, shards, time.Time{})
	for {
		c, ok, err := r.Next(ctx)
		if err != nil {
			panic(err)
		}
		if !ok {
			break
		}
		for _, t := range c.Transitions {
			fmt.Println(t.Region, t.Record.InvokeID, t.Previous, "→", t.Record.Status)
		}
	}
	// Output:
	// cn-hangzhou t-1  → Running
	// cn-hangzhou t-1 Running → Success
	// cn-shanghai t-9 Running → Failed
}

func ExampleCompareHistoryIDs() {
	fmt.Println(checkpoint.CompareHistoryIDs("999-7", "1000-0"), checkpoint.CompareHistoryIDs("1000-10", "1000-9"), checkpoint.CompareHistoryIDs("5-0", "5-0"))
	// Output: -1 1 0
}
