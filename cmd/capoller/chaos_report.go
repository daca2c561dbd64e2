package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/poller/truthcheck"
)

// chaosReport is what `capoller chaos` found.
type chaosReport struct {
	Seed            int64   `json:"seed"`
	Replay          string  `json:"replay"`
	DurationSeconds float64 `json:"durationSeconds"`
	Replicas        int     `json:"replicas"`
	Checkpoint      string  `json:"checkpoint"`
	Redis           string  `json:"redis"`
	NATS            string  `json:"nats"`
	OK              bool    `json:"ok"`
	CaughtUp        bool    `json:"caughtUp"`
	CatchUpSeconds  float64 `json:"catchUpSeconds"`

	Records    int `json:"records"`
	Generated  int `json:"transitionsGenerated"`
	Observable int `json:"transitionsObservable"`
	Published  int `json:"eventsPublished"`
	Announced  int `json:"transitionsAnnounced"`
	// ObservableAnnounced is how many of the observable ones were.
	ObservableAnnounced int `json:"observableAnnounced"`
	// Violations counts each broken promise by kind (lost, duplicate,
	// out-of-order, inconsistent-previous, unknown-record); Details
	// lists the first ones.
	Violations map[truthcheck.Kind]int `json:"violations"`
	Details    []truthcheck.Violation  `json:"details,omitempty"`

	// Faults injected by kind ("hook" for the replicas' own kills and
	// stops), the scheduled ones skipped (target down), and the hooks
	// armed and hit by action and cycle step ("kill@published").
	Faults   map[string]int `json:"faults"`
	Skipped  map[string]int `json:"faultsSkipped,omitempty"`
	HookArms map[string]int `json:"hookArmed"`
	HookHits map[string]int `json:"hookHits"`
	// UnexpectedExits are replica exits the harness did not cause.
	UnexpectedExits []string `json:"unexpectedExits,omitempty"`
	Behaviours      []string `json:"behaviours"`

	Latency    chaosLatency            `json:"detectionLatency"`
	AfterFault map[string]chaosLatency `json:"detectionLatencyWithin30sAfter"`
	API        chaosAPI                `json:"api"`
	// Partitions are the network partitions and what the replicas did
	// in them.
	Partitions   chaosPartitionReport `json:"partitions"`
	Schedule     []chaosFault         `json:"schedule"`
	KeptDir      string               `json:"keptDir,omitempty"`
	EngineErrors []string             `json:"engineErrors,omitempty"`
}

type chaosLatency struct {
	P50     float64 `json:"p50Seconds"`
	P99     float64 `json:"p99Seconds"`
	Max     float64 `json:"maxSeconds"`
	Samples int     `json:"samples"`
}

type chaosAPI struct {
	// QuotaPerMinute is the emulator's quota per account, action and
	// region; QPS the replicas' --qps for their group.
	QuotaPerMinute int            `json:"quotaPerMinute"`
	QPS            float64        `json:"replicaQps"`
	Calls          map[string]int `json:"calls"`
	// Throttled are the calls the quota refused (not the injected
	// throttling).
	Throttled map[string]int `json:"throttledByQuota"`
	// PeakPerMinute is the most calls of an account and action in one
	// minute window, over all its regions (at most quota × regions).
	PeakPerMinute map[string]int `json:"peakPerMinute"`
	Regions       int            `json:"regions"`
}

func latencyOf(xs []float64) chaosLatency {
	l := chaosLatency{Samples: len(xs)}
	if len(xs) > 0 {
		l.P50, l.P99, l.Max = harness.Percentile(xs, 0.5), harness.Percentile(xs, 0.99), slices.Max(xs)
	}
	return l
}

// report checks the stream and fills in the report.
func (c *chaosRun) report(rep *chaosReport, s *chaosStream) {
	res := truthcheck.Check(truthcheck.ByRecord(c.sim.Truth()), s.evs, truthcheck.Options{MinVisible: c.o.interval})
	rep.Records, rep.Generated, rep.Observable, rep.Published, rep.Announced = res.Records, res.Generated, res.Observable, res.Published, res.Announced
	rep.ObservableAnnounced = res.ObservableAnnounced
	rep.Violations = res.Counts
	rep.Details = res.Violations[:min(len(res.Violations), 50)]
	c.checkPartitions(&rep.Partitions)
	rep.OK = res.OK() && rep.CaughtUp && len(rep.Partitions.Violations) == 0
	rep.Faults, rep.Skipped, rep.HookArms, rep.HookHits = c.faults, c.skipped, c.hookArmed, c.hookHits
	rep.UnexpectedExits, rep.Behaviours, rep.Schedule, rep.EngineErrors = c.unexpected, c.behaviours, c.schedule, c.engineErrs

	var all []float64
	after := map[string][]float64{}
	for _, l := range res.Latencies {
		all = append(all, l.Seconds)
		hit := map[string]bool{}
		for _, f := range c.applied {
			kind := f.kind
			if strings.HasPrefix(kind, faultHook) {
				kind = faultHook
			}
			if !hit[kind] && !l.At.Before(f.at) && l.At.Before(f.at.Add(30*time.Second)) {
				hit[kind] = true
				after[kind] = append(after[kind], l.Seconds)
			}
		}
	}
	rep.Latency = latencyOf(all)
	rep.AfterFault = map[string]chaosLatency{}
	for k, xs := range after {
		rep.AfterFault[k] = latencyOf(xs)
	}

	rep.API = chaosAPI{QuotaPerMinute: c.o.quota, QPS: c.o.qps, Calls: c.sim.Calls(), Throttled: c.sim.Throttled(), PeakPerMinute: map[string]int{}, Regions: 3}
	for _, name := range c.sim.Accounts() {
		acct := c.sim.Account(name)
		for action := range acct.Calls() {
			perMinute := map[int64]int{}
			for _, at := range acct.CallLog(action) {
				perMinute[at.Unix()/60]++
			}
			peak := 0
			for _, n := range perMinute {
				peak = max(peak, n)
			}
			rep.API.PeakPerMinute[name+"/"+action] = peak
		}
	}
}

func writeChaosJSON(path string, rep chaosReport) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	if err := encodeChaosJSON(f, rep); err != nil {
		_ = f.Close()
		return fmt.Errorf("write the report: %w", err)
	}
	return f.Close()
}

func encodeChaosJSON(w io.Writer, rep chaosReport) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// printChaos writes the readable summary.
func printChaos(w io.Writer, r chaosReport) {
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
	printPartitions(w, r.Partitions)
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

// printPartitions writes the partitions' lines of the summary.
func printPartitions(w io.Writer, p chaosPartitionReport) {
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

func sumPublishes(checks []chaosPartitionRun) int {
	n := 0
	for _, c := range checks {
		n += c.PublishesAfterClaims
	}
	return n
}
