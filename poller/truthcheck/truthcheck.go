// Package truthcheck holds a stream of capoller events against the
// emulator's ground truth (castest), record by record. Tests use it
// through poller/testenv, and `capoller chaos` directly, so that there is
// one definition of what capoller promises:
//
//   - each record's final status is announced;
//   - the statuses announced for a record are an in-order subsequence of
//     its true ones (states that came and went between two polls may be
//     missing; nothing may be reordered or invented);
//   - each event's previousStatus is the status of the record's previous
//     event;
//   - no event id is in the stream twice, and no transition is announced
//     again under another id.
package truthcheck

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/publisher/events"
)

// Published is one message of the stream.
type Published struct {
	// MsgID is the Nats-Msg-Id header: the event id.
	MsgID string
	// Stored is when the stream stored the message (zero if unknown).
	Stored time.Time
	Event  events.Event
}

// Kind classifies a violation.
type Kind string

// The violations.
const (
	// Lost: a record's final status was never announced (or nothing was).
	Lost Kind = "lost"
	// Duplicate: an event id is in the stream twice, or a record's
	// transition to a status of a run was announced again under another id.
	Duplicate Kind = "duplicate"
	// OutOfOrder: an announced status is not in the rest of the record's
	// true history: reordered, or never true.
	OutOfOrder Kind = "out-of-order"
	// InconsistentPrevious: an event's previousStatus is not the status of
	// the record's previous event.
	InconsistentPrevious Kind = "inconsistent-previous"
	// Unknown: an event about a record the emulator never had.
	Unknown Kind = "unknown-record"
)

// Kinds lists every kind, in report order.
func Kinds() []Kind { return []Kind{Lost, Duplicate, OutOfOrder, InconsistentPrevious, Unknown} }

// Violation is one broken promise.
type Violation struct {
	Kind   Kind     `json:"kind"`
	Record diff.Key `json:"record"`
	Detail string   `json:"detail"`
	// Truth is the record's true history and Events its announced one
	// ("previous>status#repeats id"), for the report.
	Truth  []string `json:"truth"`
	Events []string `json:"events"`
}

func (v Violation) String() string {
	return fmt.Sprintf("%s %s/%s: %s (true: %v; announced: %v)", v.Kind, v.Record.InvokeID, v.Record.InstanceID, v.Detail, v.Truth, v.Events)
}

// Latency is how long after a true transition its event was stored.
type Latency struct {
	At      time.Time // the true transition
	Seconds float64
}

// Options tune Check.
type Options struct {
	// MinVisible is how long a state must last to count as observable:
	// about a poll interval. Zero counts every true transition.
	MinVisible time.Duration
}

// Result is what Check found.
type Result struct {
	Records int `json:"records"`
	// Generated is the emulator's transitions; Observable those of them
	// that lasted at least MinVisible, plus each record's last (an
	// estimate: a poll may still see a shorter state, or miss a longer one
	// under faults); Published the stream's messages; Announced the events
	// matched to a true transition.
	Generated  int `json:"generated"`
	Observable int `json:"observable"`
	// ObservableAnnounced is how many of the observable transitions were
	// announced.
	ObservableAnnounced int          `json:"observableAnnounced"`
	Published           int          `json:"published"`
	Announced           int          `json:"announced"`
	Counts              map[Kind]int `json:"violations"`
	Violations          []Violation  `json:"details,omitempty"`
	Latencies           []Latency    `json:"-"`
}

// OK reports whether no promise was broken.
func (r Result) OK() bool { return len(r.Violations) == 0 }

// ByRecord groups the emulator's ground truth per record, in order.
func ByRecord(entries []castest.TruthEntry) map[diff.Key][]castest.TruthEntry {
	out := map[diff.Key][]castest.TruthEntry{}
	for _, e := range entries {
		k := diff.Key{InvokeID: e.InvokeID, InstanceID: e.InstanceID}
		out[k] = append(out[k], e)
	}
	return out
}

// RecordKey is the record an event is about.
func RecordKey(d events.Data) diff.Key {
	return diff.Key{InvokeID: d.InvokeID, InstanceID: d.InstanceID}
}

// Check holds the stream's messages, in stream order, against the truth
// grouped by record (see ByRecord).
func Check(truth map[diff.Key][]castest.TruthEntry, evs []Published, opts Options) Result {
	res := Result{Records: len(truth), Published: len(evs), Counts: map[Kind]int{}}
	for _, k := range Kinds() {
		res.Counts[k] = 0
	}
	seen := map[string]bool{}
	chains := map[diff.Key][]Published{}
	labels := map[diff.Key][]string{}
	for _, e := range evs {
		k := RecordKey(e.Event.Data)
		label := fmt.Sprintf("%s>%s#%s %s", e.Event.Data.PreviousStatus, e.Event.Data.Status, repeats(e.Event.Data), e.MsgID)
		labels[k] = append(labels[k], label)
		if seen[e.MsgID] {
			res.add(Violation{Kind: Duplicate, Record: k, Detail: "event id " + e.MsgID + " is in the stream twice"})
			continue
		}
		seen[e.MsgID] = true
		chains[k] = append(chains[k], e)
	}
	observable := func(entries []castest.TruthEntry, i int) bool {
		return i == len(entries)-1 || entries[i+1].Time.Sub(entries[i].Time) >= opts.MinVisible
	}
	for _, entries := range truth {
		res.Generated += len(entries)
		for i := range entries {
			if observable(entries, i) {
				res.Observable++
			}
		}
	}
	keys := make([]diff.Key, 0, len(truth))
	for k := range truth {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b diff.Key) int {
		return strings.Compare(a.InvokeID+"/"+a.InstanceID, b.InvokeID+"/"+b.InstanceID)
	})
	for _, k := range keys {
		entries := truth[k]
		var statuses []string
		for _, e := range entries {
			statuses = append(statuses, e.To)
		}
		viol := func(kind Kind, format string, args ...any) {
			res.add(Violation{Kind: kind, Record: k, Detail: fmt.Sprintf(format, args...), Truth: statuses, Events: labels[k]})
		}
		chain := chains[k]
		if len(chain) == 0 {
			viol(Lost, "nothing announced")
			continue
		}
		pos, prev := 0, ""
		announced := map[string]bool{}
		for i, e := range chain {
			d := e.Event.Data
			from, to := string(d.PreviousStatus), string(d.Status)
			if i > 0 && from != prev {
				viol(InconsistentPrevious, "event %d (%s): previousStatus %q, but the previous event said %q", i, e.MsgID, from, prev)
			}
			prev = to
			run := repeats(d) + "/" + to
			at := slices.Index(statuses[pos:], to)
			switch {
			case at < 0 && announced[run]:
				viol(Duplicate, "event %d (%s): %q of run %s announced again under another id", i, e.MsgID, to, repeats(d))
			case at < 0:
				viol(OutOfOrder, "event %d (%s): %q is not in the rest of the true history %v", i, e.MsgID, to, statuses[pos:])
			default:
				pos += at
				res.Announced++
				if observable(entries, pos) {
					res.ObservableAnnounced++
				}
				if !e.Stored.IsZero() {
					res.Latencies = append(res.Latencies, Latency{At: entries[pos].Time, Seconds: e.Stored.Sub(entries[pos].Time).Seconds()})
				}
				pos++
			}
			announced[run] = true
		}
		if last := statuses[len(statuses)-1]; prev != last {
			viol(Lost, "last announced %q, the emulator ended %q", prev, last)
		}
	}
	var unknown []diff.Key
	for k := range chains {
		if _, ok := truth[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	for _, k := range unknown {
		res.add(Violation{Kind: Unknown, Record: k, Detail: "announced, but the emulator has no such record", Events: labels[k]})
	}
	return res
}

func (r *Result) add(v Violation) {
	r.Violations = append(r.Violations, v)
	r.Counts[v.Kind]++
}

func repeats(d events.Data) string {
	if d.Repeats == nil {
		return "-"
	}
	return fmt.Sprint(*d.Repeats)
}
