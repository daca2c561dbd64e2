package chaos

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/capoller/capoller/poller/truthcheck"
)

// WriteText writes the readable summary.
func (r Report) WriteText(w io.Writer) {
	verdict := "PASS"
	if !r.OK {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "capoller chaos: %s — seed %d, %v of faults, %d replicas (checkpoint %s)\n", verdict, r.Seed,
		time.Duration(r.DurationSeconds*float64(time.Second)), r.Replicas, r.Checkpoint)
	fmt.Fprintf(w, "  replay:       %s\n", r.Replay)
	fmt.Fprintf(w, "  engines:      Redis %s; NATS %s\n", r.Redis, r.NATS)
	fmt.Fprintf(w, "  transitions:  %d generated, %d observable (the state lasted ≥ one interval, or is final), %d announced (%d of the observable); %d events in the stream; %d records\n",
		r.Generated, r.Observable, r.Announced, r.ObservableAnnounced, r.Published, r.Records)
	catch := fmt.Sprintf("caught up %.1fs after the faults", r.CatchUpSeconds)
	if !r.CaughtUp {
		catch = "NOT caught up within the catch-up time"
	}
	fmt.Fprintf(w, "  violations:   lost %d, duplicated %d, out of order %d, inconsistent previousStatus %d, unknown records %d; %s\n",
		r.Violations[truthcheck.Lost], r.Violations[truthcheck.Duplicate], r.Violations[truthcheck.OutOfOrder],
		r.Violations[truthcheck.InconsistentPrevious], r.Violations[truthcheck.Unknown], catch)
	for _, v := range r.Details[:min(len(r.Details), 10)] {
		fmt.Fprintf(w, "    %s\n", v)
	}
	fmt.Fprintf(w, "  faults:       %s\n", formatCounts(r.Faults))
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, "  skipped:      %s (target already down or restarting, or a partition in effect)\n", formatCounts(r.Skipped))
	}
	r.Partitions.writeText(w)
	fmt.Fprintf(w, "  hook steps:   hit %s\n", formatCounts(r.HookHits))
	fmt.Fprintf(w, "                armed %s\n", formatCounts(r.HookArms))
	fmt.Fprintf(w, "  latency:      p50 %.2fs, p99 %.2fs, max %.2fs (%d transitions)\n", r.Latency.P50, r.Latency.P99, r.Latency.Max, r.Latency.Samples)
	kinds := make([]string, 0, len(r.AfterFault))
	for k := range r.AfterFault {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		l := r.AfterFault[k]
		fmt.Fprintf(w, "    ≤30s after %-18s p50 %.2fs, p99 %.2fs (%d)\n", k+":", l.P50, l.P99, l.Samples)
	}
	fmt.Fprintf(w, "  API:          %s calls; quota %d/min per account, action and region (%d regions), replicas' --qps %g;\n", formatCounts(r.API.Calls), r.API.QuotaPerMinute, r.API.Regions, r.API.QPS)
	fmt.Fprintf(w, "                peak per minute %s; refused by the quota %s\n", formatCounts(r.API.PeakPerMinute), formatCounts(r.API.Throttled))
	fmt.Fprintf(w, "  behaviours:   %s\n", strings.Join(r.Behaviours, "; "))
	for _, u := range r.UnexpectedExits {
		fmt.Fprintf(w, "  unexpected:   %s\n", u)
	}
	if r.KeptDir != "" {
		fmt.Fprintf(w, "  kept:         %s (replica logs)\n", r.KeptDir)
	}
}

// formatCounts lists counts by name, in the names' order.
func formatCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// writeText writes the partitions' lines of the summary.
func (p PartitionReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "  partitions:   %s\n", p.Injected)
	if len(p.Checks) == 0 {
		return
	}
	losses, takeovers, rejoins := 0, 0, 0
	var notJudged []string
	for _, c := range p.Checks {
		if c.Lost == "judged" && c.LostSeconds >= 0 {
			losses++
		}
		if c.Takeover == "judged" && c.TakeoverSeconds >= 0 {
			takeovers++
		}
		if c.Rejoin == "judged" && c.RejoinSeconds >= 0 {
			rejoins++
		}
		if strings.HasPrefix(c.Lost, "not judged") || strings.HasPrefix(c.Takeover, "not judged") || strings.HasPrefix(c.Rejoin, "not judged") {
			notJudged = append(notJudged, c.Replica+" at "+c.At)
		}
	}
	fmt.Fprintf(w, "                %d replica partitions checked: shards lost in at most %.2fs (%d judged), taken over in at most %.2fs (%d), rejoined in at most %.2fs (%d); %d publishes after claims expired; %d not judged (others killed or stopped meanwhile); lease reads %d (%d failed)\n",
		len(p.Checks), p.MaxLostSeconds, losses, p.MaxTakeoverSeconds, takeovers, p.MaxRejoinSeconds, rejoins, sumPublishes(p.Checks), len(notJudged), p.LeaseReads, p.LeaseReadErrors)
	for _, c := range p.Checks {
		take := c.Takeover
		if c.TakeoverSeconds >= 0 {
			take = fmt.Sprintf("%.2fs", c.TakeoverSeconds)
		}
		rejoin := c.Rejoin
		if c.RejoinSeconds >= 0 {
			rejoin = fmt.Sprintf("%.2fs", c.RejoinSeconds)
		}
		lost := c.Lost
		if c.LostSeconds >= 0 {
			lost = fmt.Sprintf("%.2fs", c.LostSeconds)
		}
		fmt.Fprintf(w, "    %-7s %-26s %-10s %-13s for %-7s held %2d; lost %s; taken over %s; rejoined %s; last publish %.2fs in\n",
			c.At, c.Fault, c.Link, c.Replica, c.For, c.Held, lost, take, rejoin, c.LastPublishSeconds)
	}
	for _, v := range p.Violations {
		fmt.Fprintf(w, "    VIOLATION %s\n", v)
	}
}

// sumPublishes adds the publishes seen after the claims expired.
func sumPublishes(checks []PartitionCheck) int {
	n := 0
	for _, c := range checks {
		n += c.PublishesAfterClaims
	}
	return n
}
