package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/poller/truthcheck"
)

// Report is what `capoller chaos` found.
type Report struct {
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

	Latency    Latency            `json:"detectionLatency"`
	AfterFault map[string]Latency `json:"detectionLatencyWithin30sAfter"`
	API        API                `json:"api"`
	// Partitions are the network partitions and what the replicas did
	// in them.
	Partitions   PartitionReport `json:"partitions"`
	Schedule     []Fault         `json:"schedule"`
	KeptDir      string          `json:"keptDir,omitempty"`
	EngineErrors []string        `json:"engineErrors,omitempty"`
}

// Latency sums up detection latencies: from a state change in the
// emulator to its event stored in the stream.
type Latency struct {
	P50     float64 `json:"p50Seconds"`
	P99     float64 `json:"p99Seconds"`
	Max     float64 `json:"maxSeconds"`
	Samples int     `json:"samples"`
}

// API is what the replicas asked of the emulator.
type API struct {
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

// latencyOf sums detection latencies up.
func latencyOf(xs []float64) Latency {
	l := Latency{Samples: len(xs)}
	if len(xs) > 0 {
		l.P50, l.P99, l.Max = harness.Percentile(xs, 0.5), harness.Percentile(xs, 0.99), slices.Max(xs)
	}
	return l
}

// report checks the stream and fills in the report.
func (c *run) report(rep *Report) {
	res := truthcheck.Check(truthcheck.ByRecord(c.sim.Truth()), c.stream.evs, truthcheck.Options{MinVisible: c.o.Interval})
	rep.Records, rep.Generated, rep.Observable, rep.Published, rep.Announced = res.Records, res.Generated, res.Observable, res.Published, res.Announced
	rep.ObservableAnnounced = res.ObservableAnnounced
	rep.Violations = res.Counts
	rep.Details = res.Violations[:min(len(res.Violations), 50)]
	c.checkPartitions(&rep.Partitions)
	rep.OK = res.OK() && rep.CaughtUp && len(rep.Partitions.Violations) == 0
	rep.Faults, rep.Skipped, rep.HookArms, rep.HookHits = c.faults, c.skipped, c.hookArmed, c.hookHits
	rep.UnexpectedExits, rep.Behaviours, rep.Schedule, rep.EngineErrors = c.unexpected, c.behaviours, c.schedule, c.engineErrs
	rep.Latency, rep.AfterFault = c.latencies(res.Latencies)
	rep.API = c.apiCalls()
}

// latencies sums up the detection latencies, overall and within 30s
// after each kind of fault.
func (c *run) latencies(latencies []truthcheck.Latency) (Latency, map[string]Latency) {
	var all []float64
	after := map[string][]float64{}
	for _, l := range latencies {
		all = append(all, l.Seconds)
		hit := map[string]bool{}
		for _, f := range c.applied {
			kind := f.kind
			if strings.HasPrefix(kind, FaultHook) {
				kind = FaultHook
			}
			if !hit[kind] && !l.At.Before(f.at) && l.At.Before(f.at.Add(30*time.Second)) {
				hit[kind] = true
				after[kind] = append(after[kind], l.Seconds)
			}
		}
	}
	afterFault := map[string]Latency{}
	for k, xs := range after {
		afterFault[k] = latencyOf(xs)
	}
	return latencyOf(all), afterFault
}

// apiCalls are the calls the emulator served and refused, and the peaks
// per minute of each account and action.
func (c *run) apiCalls() API {
	api := API{QuotaPerMinute: c.o.Quota, QPS: c.o.QPS, Calls: c.sim.Calls(), Throttled: c.sim.Throttled(), PeakPerMinute: map[string]int{}, Regions: len(emulatorRegions())}
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
			api.PeakPerMinute[name+"/"+action] = peak
		}
	}
	return api
}

// WriteJSONFile writes the report as JSON to a file.
func (r Report) WriteJSONFile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	if err := r.WriteJSON(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("write the report: %w", err)
	}
	return f.Close()
}

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
