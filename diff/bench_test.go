package diff

import (
	"fmt"
	"testing"
	"time"
)

// benchShard builds n invocations on one instance each (2n records) and
// their checkpointed states.
func benchShard(n int) (Previous, Snapshot) {
	prev := Previous{Known: true, States: make(map[Key]State, 2*n)}
	snap := Snapshot{Source: SourceECS, Region: "cn-hangzhou", ObservedAt: time.Unix(1000, 0), Records: make([]Record, 0, 2*n)}
	for i := range n {
		inv := fmt.Sprintf("t-hz%016x", i)
		for _, k := range []Key{{InvokeID: inv}, {InvokeID: inv, InstanceID: fmt.Sprintf("i-bp%018x", i%500)}} {
			prev.States[k] = State{Status: StatusSuccess, Repeats: 1, ObservedAt: time.Unix(1, 0)}
			snap.Records = append(snap.Records, Record{Key: k, CommandID: "c-1", Status: StatusSuccess, Repeats: 1})
		}
	}
	return prev, snap
}

// BenchmarkComputeUnchanged measures the steady state: nothing changed.
// Target: at least 5 million records a second on one core, no allocation.
func BenchmarkComputeUnchanged(b *testing.B) {
	prev, snap := benchShard(50_000) // 100,000 records
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if res := Compute(prev, snap, Options{}); len(res.Transitions) != 0 {
			b.Fatal("unexpected transitions")
		}
	}
	b.ReportMetric(float64(len(snap.Records))*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkComputeChanged measures a cycle where 10% of the records changed.
func BenchmarkComputeChanged(b *testing.B) {
	prev, snap := benchShard(50_000)
	for i := 0; i < len(snap.Records); i += 10 {
		snap.Records[i].Status = StatusFailed
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if res := Compute(prev, snap, Options{}); len(res.Transitions) != len(snap.Records)/10 {
			b.Fatalf("%d transitions", len(res.Transitions))
		}
	}
	b.ReportMetric(float64(len(snap.Records)/10)*float64(b.N)/b.Elapsed().Seconds(), "transitions/s")
}

// BenchmarkComputeAllChanged measures the throughput phase's diff: every
// record of a large shard changed at once.
func BenchmarkComputeAllChanged(b *testing.B) {
	prev, snap := benchShard(20_000)
	for i := range snap.Records {
		snap.Records[i].Status = StatusFailed
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if res := Compute(prev, snap, Options{}); len(res.Transitions) != len(snap.Records) {
			b.Fatalf("%d transitions", len(res.Transitions))
		}
	}
	b.ReportMetric(float64(len(snap.Records))*float64(b.N)/b.Elapsed().Seconds(), "transitions/s")
}
