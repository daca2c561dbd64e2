package checkpoint_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

func benchUpdates(n int) ([]diff.Key, []diff.Update, []diff.Transition) {
	keys := make([]diff.Key, n)
	updates := make([]diff.Update, n)
	transitions := make([]diff.Transition, n)
	for i := range n {
		k := diff.Key{InvokeID: fmt.Sprintf("t-hz%016x", i/2)}
		if i%2 == 1 {
			k.InstanceID = fmt.Sprintf("i-bp%018x", i%500)
		}
		keys[i] = k
		updates[i] = diff.Update{Key: k, State: diff.State{Status: diff.StatusSuccess, Repeats: 1, ObservedAt: time.Unix(1000, 0)}}
		transitions[i] = diff.Transition{ID: fmt.Sprintf("%032x", i), Source: diff.SourceECS, Region: "cn-hangzhou",
			Previous: diff.StatusRunning, Record: diff.Record{Key: k, Status: diff.StatusSuccess, Repeats: 1}, ObservedAt: time.Unix(1000, 0)}
	}
	return keys, updates, transitions
}

// seededRedis is a Redis store whose shard holds n checkpointed records.
func seededRedis(b *testing.B, n int) (*checkpoint.Redis, diff.Shard, []diff.Key, []diff.Update) {
	b.Helper()
	client, prefix := testenv.Redis(b)
	s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	shard := diff.Shard{Source: diff.SourceECS, Region: "cn-hangzhou"}
	keys, updates, _ := benchUpdates(n)
	if err := s.Commit(b.Context(), shard, updates, nil); err != nil {
		b.Fatal(err)
	}
	return s, shard, keys, updates
}

// BenchmarkRedisLoad loads the states of a 100,000-record snapshot.
func BenchmarkRedisLoad(b *testing.B) {
	s, shard, keys, _ := seededRedis(b, 100_000)
	b.ReportAllocs()
	b.ResetTimer()
	trips := s.RoundTrips()
	for b.Loop() {
		prev, err := s.Load(b.Context(), shard, keys)
		if err != nil || len(prev.States) != len(keys) {
			b.Fatalf("%d states, %v", len(prev.States), err)
		}
	}
	b.ReportMetric(float64(len(keys))*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(s.RoundTrips()-trips)/float64(b.N), "roundtrips/op")
}

// BenchmarkRedisAbsent scans a whole 100,000-record shard for records a
// complete listing did not hold (here: none).
func BenchmarkRedisAbsent(b *testing.B) {
	s, shard, _, updates := seededRedis(b, 100_000)
	b.ReportAllocs()
	b.ResetTimer()
	trips := s.RoundTrips()
	for b.Loop() {
		absent, err := s.Absent(b.Context(), shard, func(diff.Key) bool { return true })
		if err != nil || len(absent) != 0 {
			b.Fatalf("%d absent, %v", len(absent), err)
		}
	}
	b.ReportMetric(float64(len(updates))*float64(b.N)/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(s.RoundTrips()-trips)/float64(b.N), "roundtrips/op")
}

// BenchmarkRedisCommit commits 10,000 changed states with their history.
func BenchmarkRedisCommit(b *testing.B) {
	client, prefix := testenv.Redis(b)
	s, err := checkpoint.NewRedis(client, checkpoint.RedisOptions{KeyPrefix: prefix, HistoryMaxLen: 100_000})
	if err != nil {
		b.Fatal(err)
	}
	shard := diff.Shard{Source: diff.SourceECS, Region: "cn-hangzhou"}
	_, updates, transitions := benchUpdates(10_000)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := s.Commit(b.Context(), shard, updates, transitions); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(transitions))*float64(b.N)/b.Elapsed().Seconds(), "transitions/s")
}

// seededKV is a KV store whose shard holds n checkpointed records.
func seededKV(b *testing.B, n int) (*checkpoint.KV, jetstream.JetStream, string, diff.Shard, []diff.Key, []diff.Update) {
	b.Helper()
	bucket := testenv.Name("CAPOLLER_BENCH")
	_, js := testenv.NATS(b, testenv.NATSURL(b), bucket)
	s, err := checkpoint.NewKV(b.Context(), js, checkpoint.KVOptions{Bucket: bucket})
	if err != nil {
		b.Fatal(err)
	}
	shard := diff.Shard{Source: diff.SourceECS, Region: "cn-hangzhou"}
	keys, updates, _ := benchUpdates(n)
	if _, err := s.Load(b.Context(), shard, nil); err != nil {
		b.Fatal(err)
	}
	if err := s.Commit(b.Context(), shard, updates, nil); err != nil {
		b.Fatal(err)
	}
	return s, js, bucket, shard, keys, updates
}

// BenchmarkKVColdLoad opens a 100,000-record shard in a new store (as a
// restarted process does) and loads every state.
func BenchmarkKVColdLoad(b *testing.B) {
	_, js, bucket, shard, keys, _ := seededKV(b, 100_000)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s, err := checkpoint.NewKV(b.Context(), js, checkpoint.KVOptions{Bucket: bucket})
		if err != nil {
			b.Fatal(err)
		}
		prev, err := s.Load(b.Context(), shard, keys)
		if err != nil || len(prev.States) != len(keys) {
			b.Fatalf("%d states, %v", len(prev.States), err)
		}
	}
	b.ReportMetric(float64(len(keys))*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkKVLoadPage loads the states of one page (50 records) of a
// 100,000-record shard, as every chunk of a cycle does.
func BenchmarkKVLoadPage(b *testing.B) {
	s, _, _, shard, keys, _ := seededKV(b, 100_000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		page := keys[(i*50)%len(keys):][:50]
		if prev, err := s.Load(b.Context(), shard, page); err != nil || len(prev.States) != 50 {
			b.Fatalf("%d states, %v", len(prev.States), err)
		}
	}
}

// BenchmarkKVCommitPage commits the changes of one page (50 records) to a
// 100,000-record shard.
func BenchmarkKVCommitPage(b *testing.B) {
	s, _, _, shard, _, updates := seededKV(b, 100_000)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		page := updates[(i*50)%len(updates):][:50]
		for j := range page {
			page[j].State.Repeats++
		}
		if err := s.Commit(b.Context(), shard, page, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKVCommitAll commits a change of every record of a
// 100,000-record shard at once (a baseline, or a full listing after an
// outage).
func BenchmarkKVCommitAll(b *testing.B) {
	s, _, _, shard, _, updates := seededKV(b, 100_000)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for j := range updates {
			updates[j].State.Repeats++
		}
		if err := s.Commit(b.Context(), shard, updates, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(updates))*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
