package bench

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/publisher"
)

// ThroughputReport is the pipeline's throughput, held against raw
// JetStream publishing.
type ThroughputReport struct {
	Rounds          int     `json:"rounds"`
	Transitions     int     `json:"transitions"`
	Seconds         float64 `json:"seconds"`
	PerSecond       float64 `json:"transitionsPerSecond"`
	RedisRoundTrips int64   `json:"redisRoundTrips"`
	// RawPerSecond is JetStream's own rate on the same connection: as many
	// 600-byte messages with a message id, on one subject, published
	// asynchronously, every ack awaited. Ratio is the median of each
	// round's pipeline rate over its raw rate.
	RawPerSecond float64 `json:"rawPublishesPerSecond"`
	Ratio        float64 `json:"ratioToRawPublish"`
	// RawSubjectsPerSecond is the same, each message on a subject of its
	// own shaped like the pipeline's (one per record, as the event
	// contract has it): what JetStream itself does with such subjects.
	RawSubjectsPerSecond float64 `json:"rawPublishesOnRecordSubjectsPerSecond"`
	RatioSubjects        float64 `json:"ratioToRawPublishOnRecordSubjects"`
	// Tracing: the pipeline exported its spans (Options.Tracing).
	Tracing bool `json:"tracing"`
}

// throughputRounds is how many times the throughput phase measures the
// pipeline and each raw rate, alternating, to report their medians: one
// run on a shared 2-core machine varies by a third.
const throughputRounds = 5

// benchThroughput diffs, publishes (acked) and commits o.Burst changed
// invocations (2×Burst transitions) in one cycle, against real Redis and
// NATS, with the history and the fencing of a replica's commits, and
// measures raw JetStream publishing beside it. Each measurement has a
// stream of its own and starts from a collected heap, so that none pays
// for the garbage of the one before. The ratios are the medians of each
// round's own: a round's three measurements run back to back, under the
// same load from the rest of the machine.
func benchThroughput(ctx context.Context, o Options, e *engines) (ThroughputReport, error) {
	tp := ThroughputReport{Rounds: throughputRounds}
	var secs, raw, rawSubjects, ratio, ratioSubjects []float64
	for round := range throughputRounds {
		r, err := pipelineRound(ctx, o, e)
		if err != nil {
			return tp, err
		}
		tp.Transitions, tp.RedisRoundTrips = r.Transitions, r.RedisRoundTrips
		secs = append(secs, r.Seconds)
		one, err := rawPublishRate(ctx, e.js, r.Transitions, func(int) string { return "raw" })
		if err != nil {
			return tp, err
		}
		own, err := rawPublishRate(ctx, e.js, r.Transitions, func(i int) string {
			return fmt.Sprintf("ecs.cn-hangzhou.instance.success.t-raw%d-%012x.i-bench%06d", round, i/2, i%500)
		})
		if err != nil {
			return tp, err
		}
		raw, rawSubjects = append(raw, one), append(rawSubjects, own)
		rate := float64(r.Transitions) / r.Seconds
		ratio, ratioSubjects = append(ratio, rate/one), append(ratioSubjects, rate/own)
	}
	tp.Seconds = harness.Percentile(secs, 0.5)
	tp.PerSecond = float64(tp.Transitions) / tp.Seconds
	tp.RawPerSecond, tp.RawSubjectsPerSecond = harness.Percentile(raw, 0.5), harness.Percentile(rawSubjects, 0.5)
	tp.Ratio, tp.RatioSubjects = harness.Percentile(ratio, 0.5), harness.Percentile(ratioSubjects, 0.5)
	return tp, nil
}

// replayLister serves prepared snapshots, one per cycle: the throughput
// phase measures capoller's own pipeline, not the API.
type replayLister struct {
	snaps []diff.Snapshot
	next  int
}

func (r *replayLister) Snapshot(context.Context) (diff.Snapshot, error) {
	s := r.snaps[min(r.next, len(r.snaps)-1)]
	r.next++
	return s, nil
}

// burstSnapshot is n invocations on one instance each, all with status.
func burstSnapshot(shard diff.Shard, n int, status diff.Status, at time.Time) diff.Snapshot {
	s := diff.Snapshot{Source: shard.Source, Region: shard.Region, ObservedAt: at, Records: make([]diff.Record, 0, 2*n)}
	for i := range n {
		inv := fmt.Sprintf("t-bench%012x", i)
		s.Records = append(s.Records,
			diff.Record{Key: diff.Key{InvokeID: inv}, CommandID: "c-bench", CommandName: "bench", Status: status},
			diff.Record{Key: diff.Key{InvokeID: inv, InstanceID: fmt.Sprintf("i-bench%06d", i%500)}, CommandID: "c-bench",
				CommandName: "bench", Status: status, Repeats: 1})
	}
	return s
}

// pipelineRound is one measurement of the pipeline, on a stream and key
// prefix of its own.
func pipelineRound(ctx context.Context, o Options, e *engines) (ThroughputReport, error) {
	var tp ThroughputReport
	name, prefix := harness.RunName("BENCH_TP")
	keyPrefix := prefix + ":"
	defer harness.Clean(harness.Leftovers{JetStream: e.js, Stream: name, Redis: e.rdb, KeyPrefix: keyPrefix})
	shard := diff.Shard{Source: diff.SourceECS, Region: "cn-hangzhou"}
	now := time.Now()
	lister := &replayLister{snaps: []diff.Snapshot{burstSnapshot(shard, o.Burst, diff.StatusRunning, now), burstSnapshot(shard, o.Burst, diff.StatusSuccess, now.Add(time.Second))}}
	store, err := checkpoint.NewRedis(e.rdb, checkpoint.RedisOptions{KeyPrefix: keyPrefix})
	if err != nil {
		return tp, err
	}
	pub, err := ensureStream(ctx, e.js, name, prefix)
	if err != nil {
		return tp, err
	}
	// Fenced, as a replica's commits are: each write checks the lease.
	lease, err := store.Acquire(ctx, shard, "bench", time.Hour, time.Now())
	if err != nil {
		return tp, err
	}
	store.Fence(shard, lease.Token)
	p, err := poller.New(lister, store, o.PollerPublisher(pub), poller.Options{Shard: shard, Tracing: e.provider()})
	if err != nil {
		return tp, err
	}
	if rep := p.RunOnce(ctx); rep.Err != nil { // the baseline: everything Running
		return tp, rep.Err
	}
	trips := store.RoundTrips()
	runtime.GC()          // see benchThroughput
	rep := p.RunOnce(ctx) // everything finished
	if rep.Err != nil {
		return tp, rep.Err
	}
	tp.Transitions, tp.Seconds = len(rep.Transitions), rep.Duration.Seconds()
	tp.RedisRoundTrips = store.RoundTrips() - trips
	return tp, nil
}

// ensureStream creates the stream of a measurement, configured as the
// pipeline's.
func ensureStream(ctx context.Context, js jetstream.JetStream, name, prefix string) (*publisher.NATS, error) {
	pub, err := publisher.New(js, publisher.Options{Stream: name, SubjectPrefix: prefix})
	if err != nil {
		return nil, err
	}
	return pub, pub.EnsureStream(ctx)
}

// rawPublishRate publishes n 600-byte messages with message ids, on the
// subjects subject(i) names, asynchronously to a stream of its own
// (configured as the pipeline's), awaits every ack, and returns the rate:
// what JetStream itself does on this machine, to hold the pipeline
// against.
func rawPublishRate(ctx context.Context, js jetstream.JetStream, n int, subject func(i int) string) (float64, error) {
	name, prefix := harness.RunName("BENCH_RAW")
	if _, err := ensureStream(ctx, js, name, prefix); err != nil {
		return 0, err
	}
	defer harness.Clean(harness.Leftovers{JetStream: js, Stream: name})
	body := []byte(strings.Repeat("x", 600))
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = prefix + "." + subject(i)
	}
	runtime.GC() // see benchThroughput
	start := time.Now()
	futures := make([]jetstream.PubAckFuture, 0, n)
	for i := range n {
		f, err := js.PublishAsync(subjects[i], body, jetstream.WithMsgID(fmt.Sprintf("raw-%d-%d", start.UnixNano(), i)))
		if err != nil {
			return 0, err
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return 0, err
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
