package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for a reader: the replica group's lines,
// the strategies' table, and the throughput's lines.
func (r Report) WriteText(w io.Writer) {
	if r.Replicas != nil {
		r.Replicas.writeText(w)
	}
	if len(r.Strategies) > 0 {
		writeStrategies(w, r.Strategies)
	}
	if r.Throughput != nil {
		r.Throughput.writeText(w)
	}
}

func (r ReplicaReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "replicas: %d replicas, %d shards, interval %v, lease TTL %v\n", r.Replicas, r.Shards,
		time.Duration(r.IntervalSeconds*float64(time.Second)), time.Duration(r.LeaseTTLSeconds*float64(time.Second)))
	for id, n := range r.APICallsPerMinute {
		fmt.Fprintf(w, "  %s: %.0f API calls/min in steady state\n", id, n)
	}
	fmt.Fprintf(w, "  detection latency, steady: p50 %.2fs, p99 %.2fs (%d changes)\n", r.SteadyP50, r.SteadyP99, r.SteadySamples)
	fmt.Fprintf(w, "  a replica killed: its shards moved in %.1fs; detection latency p99 %.2fs (%d changes)\n", r.FailoverMoveSeconds, r.FailoverP99, r.FailoverSamples)
	for id, m := range r.PeakRSSMiB {
		fmt.Fprintf(w, "  %s: peak RSS %.0f MiB\n", id, m)
	}
}

func writeStrategies(w io.Writer, reports []StrategyReport) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "strategy\tAPI\trecords\tAPI calls/cycle\tlatency p50\tlatency p99\tevents/s\tRedis trips/cycle\tNATS batches/cycle\tNATS publishes/cycle\tCPU/cycle\tpeak RSS\tstore/record\tstore/history entry\tbackoffs (throttled/transient)\tquota refusals")
	for _, r := range reports {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f\t%.2fs\t%.2fs\t%.1f\t%.1f\t%.1f\t%.1f\t%.3fs\t%.0f MiB\t%.0f B\t%.0f B\t%.0f (%.1fs) / %.0f (%.1fs)\t%d\n",
			r.Strategy, r.Behaviour, r.Records, r.APICallsPerCycle, r.LatencyP50, r.LatencyP99, r.EventsPerSecond, r.RedisTripsPerCycle,
			r.NATSBatchesPerCycle, r.NATSPublishPerCycle, r.CPUSecondsPerCycle, r.PeakRSSMiB, r.Store.BytesPerRecord, r.Store.BytesPerHistoryEntry,
			r.Backoffs["throttled"], r.BackoffSeconds["throttled"], r.Backoffs["transient"], r.BackoffSeconds["transient"], r.QuotaRefusals)
	}
	_ = tw.Flush()
	for _, r := range reports {
		fmt.Fprintf(w, "%s: terminal instance statuses detected in p50 %.2fs, p99 %.2fs (%d), hints %v; %.0f API calls a minute\n",
			r.Strategy, r.TerminalP50, r.TerminalP99, r.TerminalSamples, r.Hints, r.APICallsPerMinute)
	}
	if len(reports) == 2 && reports[1].APICallsPerCycle > 0 && reports[0].Strategy != reports[1].Strategy {
		fmt.Fprintf(w, "\n%s makes %.1f× fewer API calls per steady-state cycle than %s.\n",
			reports[1].Strategy, reports[0].APICallsPerCycle/reports[1].APICallsPerCycle, reports[0].Strategy)
	}
}

func (tp ThroughputReport) writeText(w io.Writer) {
	tracing := "off"
	if tp.Tracing {
		tracing = "on, OTLP/HTTP to a collector in process"
	}
	fmt.Fprintf(w, "tracing %s\n", tracing)
	fmt.Fprintf(w, "throughput (median of %d rounds): %d transitions diffed, published (acked) and committed in %.2fs: %.0f transitions/s, %d Redis round trips\n",
		tp.Rounds, tp.Transitions, tp.Seconds, tp.PerSecond, tp.RedisRoundTrips)
	fmt.Fprintf(w, "raw JetStream async publish (600 B, msg id, acks awaited), one subject: %.0f messages/s; the pipeline runs at %.2f× that\n",
		tp.RawPerSecond, tp.Ratio)
	fmt.Fprintf(w, "raw JetStream async publish, a subject per message as events have: %.0f messages/s; the pipeline runs at %.2f× that\n",
		tp.RawSubjectsPerSecond, tp.RatioSubjects)
}
