package checkpoint_test

import (
	"testing"
	"time"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
)

// BenchmarkRedisReplicaWait measures what waiting for the replicas costs
// a commit (one event, or a batch of 1000) and a lease renewal, on a
// redis-server of the benchmark's own: without a replica (the wait then
// only reads INFO replication in the same pipeline), and with one replica,
// the wait off and on.
//
//	go test -run '^$' -bench BenchmarkRedisReplicaWait -benchtime 2000x ./checkpoint
func BenchmarkRedisReplicaWait(b *testing.B) {
	for _, setup := range []struct {
		name     string
		replicas int
		wait     time.Duration
	}{
		{"no-replica/wait-off", 0, -1},
		{"no-replica/wait-on", 0, time.Second},
		{"one-replica/wait-off", 1, -1},
		{"one-replica/wait-on", 1, time.Second},
	} {
		for _, op := range []string{"commit-1", "commit-1000", "renew"} {
			b.Run(setup.name+"/"+op, func(b *testing.B) {
				master, _ := testenv.RedisReplicated(b, setup.replicas)
				s, err := checkpoint.NewRedis(master.Client(), checkpoint.RedisOptions{KeyPrefix: testenv.Name("bench") + ":",
					HistoryMaxLen: 100_000, ReplicaWait: setup.wait})
				if err != nil {
					b.Fatal(err)
				}
				ctx := b.Context()
				shard := diff.Shard{Account: "acme", Source: diff.SourceECS, Region: "cn-hangzhou"}
				t0 := time.Now()
				l, err := s.Acquire(ctx, shard, "a", time.Hour, t0)
				if err != nil {
					b.Fatal(err)
				}
				s.Fence(shard, l.Token)
				n := 1
				if op == "commit-1000" {
					n = 1000
				}
				_, updates, transitions := benchUpdates(n)
				run := func() error { return s.Commit(ctx, shard, updates, transitions) }
				if op == "renew" {
					run = func() error { _, err := s.Renew(ctx, l, time.Hour, t0); return err }
				}
				if err := run(); err != nil { // the script loaded, the replicas seen
					b.Fatal(err)
				}
				before := s.RoundTrips()
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if err := run(); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(s.RoundTrips()-before)/float64(b.N), "trips/op")
			})
		}
	}
}
