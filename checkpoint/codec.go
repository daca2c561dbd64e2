package checkpoint

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/capoller/capoller/diff"
)

// ErrCorrupt marks a stored value that cannot be decoded. It is reported,
// never silently treated as "no state", which would re-announce records.
var ErrCorrupt = errors.New("checkpoint: corrupt stored state")

// The checkpoint encoding round-trips any string: ids and statuses come
// from the API and may hold any byte ("/", "|", "\n", "!known"…), so no
// value is ever split on a separator it could contain.
//
//   - a record's field is "<len(invokeId)>:<invokeId><instanceId>": the
//     length says where the invocation id ends, and an empty rest is the
//     aggregate;
//   - a state is "<repeats>|<observedAt>|<goneAt>|<status>": the status
//     comes last and is the whole rest, times are Unix nanoseconds, empty
//     for a zero time, and goneAt is empty for a live record;
//   - sequences (a KV segment, a staged batch) are binary: each string is
//     a uvarint length and its bytes, each integer a varint.

// encodeKey is a record's field name.
func encodeKey(k diff.Key) string {
	return strconv.Itoa(len(k.InvokeID)) + ":" + k.InvokeID + k.InstanceID
}

func decodeKey(f string) (diff.Key, error) {
	n, rest, ok := strings.Cut(f, ":")
	size, err := strconv.Atoi(n)
	if !ok || err != nil || size < 0 || size > len(rest) || n != strconv.Itoa(size) {
		return diff.Key{}, fmt.Errorf("%w: field %q", ErrCorrupt, f)
	}
	return diff.Key{InvokeID: rest[:size], InstanceID: rest[size:]}, nil
}

func encodeTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

func decodeTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, n).UTC(), nil
}

// encodeState is a record's stored state.
func encodeState(s diff.State) string {
	gone := ""
	if s.Gone {
		gone = encodeTime(s.GoneAt)
		if gone == "" {
			gone = "0"
		}
	}
	return strconv.Itoa(s.Repeats) + "|" + encodeTime(s.ObservedAt) + "|" + gone + "|" + string(s.Status)
}

func decodeState(v string) (diff.State, error) {
	repeats, rest, ok1 := strings.Cut(v, "|")
	observed, rest, ok2 := strings.Cut(rest, "|")
	gone, status, ok3 := strings.Cut(rest, "|")
	r, err1 := strconv.Atoi(repeats)
	at, err2 := decodeTime(observed)
	st := diff.State{Status: diff.Status(status), Repeats: r, ObservedAt: at, Gone: gone != ""}
	var err3 error
	if st.Gone && gone != "0" {
		st.GoneAt, err3 = decodeTime(gone)
	}
	if !ok1 || !ok2 || !ok3 || err1 != nil || err2 != nil || err3 != nil {
		return diff.State{}, fmt.Errorf("%w: state %q", ErrCorrupt, v)
	}
	return st, nil
}

// decodeLegacyField and decodeLegacyState read the first encoding
// ("invokeId/instanceId" and "status|repeats|observedAt[|gone]"), which
// checkpoints written before are migrated from. A legacy tombstone has no
// time of its own; it is given the migration's.
func decodeLegacyField(f string) diff.Key {
	invoke, instance, _ := strings.Cut(f, "/")
	return diff.Key{InvokeID: invoke, InstanceID: instance}
}

// The legacy state is read from the right: its numbers come last, and a
// status holding "|" (which made it undecodable before) is the rest.
func decodeLegacyState(v string, now time.Time) (diff.State, error) {
	rest, gone := strings.CutSuffix(v, "|gone")
	i := strings.LastIndexByte(rest, '|')
	j := -1
	if i > 0 {
		j = strings.LastIndexByte(rest[:i], '|')
	}
	if j < 0 {
		return diff.State{}, fmt.Errorf("%w: legacy state %q", ErrCorrupt, v)
	}
	r, err1 := strconv.Atoi(rest[j+1 : i])
	n, err2 := strconv.ParseInt(rest[i+1:], 10, 64)
	if err1 != nil || err2 != nil {
		return diff.State{}, fmt.Errorf("%w: legacy state %q", ErrCorrupt, v)
	}
	st := diff.State{Status: diff.Status(rest[:j]), Repeats: r, ObservedAt: time.Unix(0, n).UTC(), Gone: gone}
	if st.Gone {
		st.GoneAt = now
	}
	return st, nil
}

// writer builds a binary sequence.
type writer struct{ b []byte }

func (w *writer) str(s string) {
	w.b = binary.AppendUvarint(w.b, uint64(len(s)))
	w.b = append(w.b, s...)
}

func (w *writer) int(n int64) { w.b = binary.AppendVarint(w.b, n) }

// time writes seconds and nanoseconds apart, so that any year
// round-trips (Unix nanoseconds only cover 1678 to 2262).
func (w *writer) time(t time.Time) {
	if t.IsZero() {
		w.b = append(w.b, 0)
		return
	}
	w.b = append(w.b, 1)
	w.int(t.Unix())
	w.int(int64(t.Nanosecond()))
}

// reader reads what a writer wrote; the first failure sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated or malformed sequence", ErrCorrupt)
	}
}

func (r *reader) str() string {
	n, size := binary.Uvarint(r.b)
	if size <= 0 || n > uint64(len(r.b)-size) {
		r.fail()
		r.b = nil
		return ""
	}
	s := string(r.b[size : size+int(n)])
	r.b = r.b[size+int(n):]
	return s
}

func (r *reader) int() int64 {
	n, size := binary.Varint(r.b)
	if size <= 0 {
		r.fail()
		r.b = nil
		return 0
	}
	r.b = r.b[size:]
	return n
}

func (r *reader) time() time.Time {
	if len(r.b) == 0 {
		r.fail()
		return time.Time{}
	}
	flag := r.b[0]
	r.b = r.b[1:]
	switch flag {
	case 0:
		return time.Time{}
	case 1:
		sec := r.int()
		nsec := r.int()
		if nsec < 0 || nsec >= 1e9 {
			r.fail()
			return time.Time{}
		}
		return time.Unix(sec, nsec).UTC()
	}
	r.fail()
	return time.Time{}
}

func (r *reader) more() bool { return r.err == nil && len(r.b) > 0 }

// hasOutput, in a transition's cut field, says its output fields follow
// its times. A batch without output is written as earlier versions wrote
// it, so they can still read it; one with output makes them discard it as
// corrupt, and diff its records again from the checkpoint (the events
// keep their ids).
const hasOutput = 1 << 16

// hasTrace, in a transition's cut field, says its trace context follows
// its output fields. The daemon traces by default (only
// OTEL_SDK_DISABLED=true writes batches as earlier versions did), and
// versions before tracing discard a staged batch with it as corrupt, as
// they do one with output they do not know: a replica of such a version
// that takes a shard over from a newer one re-reads what the batch held
// from the API (its events are announced again with the same ids, or for
// the statuses the API shows by then).
const hasTrace = 1 << 17

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// encodeBatch is a staged batch: its transitions, whole (with their
// trace context), and its updates.
func encodeBatch(b diff.Result) []byte { return encodeBatchOf(b, true) }

// encodeHistory is a commit's entry in the audit history: its
// transitions, without their trace context, which would cost a third
// more for every transition kept.
func encodeHistory(ts []diff.Transition) []byte {
	return encodeBatchOf(diff.Result{Transitions: ts}, false)
}

func encodeBatchOf(b diff.Result, withTrace bool) []byte {
	w := writer{b: make([]byte, 0, 256*len(b.Transitions)+64*len(b.Updates))}
	w.int(int64(len(b.Transitions)))
	for _, t := range b.Transitions {
		r := t.Record
		for _, s := range []string{t.ID, string(t.Source), t.Region, string(t.Previous), r.InvokeID, r.InstanceID,
			r.CommandID, r.CommandName, string(r.Status), r.ErrorCode, r.ErrorInfo} {
			w.str(s)
		}
		w.int(int64(r.Repeats))
		w.int(r.ExitCode)
		output := r.Output != "" || r.OutputDropped != 0 || r.OutputURI != "" || r.OutputMissing
		cut := int64(r.Cut)
		if output {
			cut |= hasOutput
		}
		traced := withTrace && t.Trace != (diff.TraceContext{})
		if traced {
			cut |= hasTrace
		}
		w.int(cut)
		for _, at := range []time.Time{r.StartTime, r.FinishTime, t.PreviousObservedAt, t.ObservedAt} {
			w.time(at)
		}
		if output {
			text, missing := r.Output, r.OutputMissing
			if r.OutputRaw { // never vetted: never stored
				text, missing = "", true
			}
			w.str(text)
			w.int(r.OutputDropped)
			w.str(r.OutputURI)
			w.int(boolInt(missing))
		}
		if traced {
			w.str(t.Trace.Parent)
			w.str(t.Trace.State)
		}
	}
	for _, u := range b.Updates {
		w.str(encodeKey(u.Key))
		if u.Forget {
			w.int(1)
			continue
		}
		w.int(0)
		w.str(encodeState(u.State))
	}
	return w.b
}

func decodeBatch(data []byte) (diff.Result, error) {
	r := reader{b: data}
	var out diff.Result
	n := r.int()
	if n < 0 || n > int64(len(data)/16) { // a transition takes more than 16 bytes
		return out, fmt.Errorf("%w: staged batch of %d transitions in %d bytes", ErrCorrupt, n, len(data))
	}
	for range n {
		if r.err != nil {
			return out, r.err
		}
		var t diff.Transition
		rec := &t.Record
		var source, previous, status string
		for _, s := range []*string{&t.ID, &source, &t.Region, &previous, &rec.InvokeID, &rec.InstanceID,
			&rec.CommandID, &rec.CommandName, &status, &rec.ErrorCode, &rec.ErrorInfo} {
			*s = r.str()
		}
		t.Source, t.Previous, rec.Status = diff.Source(source), diff.Status(previous), diff.Status(status)
		rec.Repeats = int(r.int())
		rec.ExitCode = r.int()
		cut := r.int()
		rec.Cut = diff.TextFields(cut &^ (hasOutput | hasTrace))
		for _, at := range []*time.Time{&rec.StartTime, &rec.FinishTime, &t.PreviousObservedAt, &t.ObservedAt} {
			*at = r.time()
		}
		if cut&hasOutput != 0 {
			rec.Output = r.str()
			rec.OutputDropped = r.int()
			rec.OutputURI = r.str()
			rec.OutputMissing = r.int() == 1
		}
		if cut&hasTrace != 0 {
			t.Trace.Parent = r.str()
			t.Trace.State = r.str()
		}
		out.Transitions = append(out.Transitions, t)
	}
	for r.more() {
		k, err := decodeKey(r.str())
		if err != nil {
			return out, err
		}
		u := diff.Update{Key: k, Forget: r.int() == 1}
		if !u.Forget {
			if u.State, err = decodeState(r.str()); err != nil {
				return out, err
			}
		}
		out.Updates = append(out.Updates, u)
	}
	if r.err != nil {
		return out, r.err
	}
	return out, nil
}

// historyTransitions decodes one entry of a history stream: a commit's
// batch, or one transition in JSON as an earlier version wrote it (that
// entry lacks the command and the error text).
func historyTransitions(values map[string]any) ([]diff.Transition, error) {
	if batch, ok := values["batch"].(string); ok {
		b, err := decodeBatch([]byte(batch))
		return b.Transitions, err
	}
	raw, _ := values["event"].(string)
	var e struct {
		ID                 string    `json:"id"`
		Source             string    `json:"source"`
		Region             string    `json:"regionId"`
		InvokeID           string    `json:"invokeId"`
		InstanceID         string    `json:"instanceId"`
		Repeats            int       `json:"repeats"`
		From               string    `json:"from"`
		To                 string    `json:"to"`
		ExitCode           int64     `json:"exitCode"`
		ErrorCode          string    `json:"errorCode"`
		ObservedAt         time.Time `json:"observedAt"`
		PreviousObservedAt time.Time `json:"previousObservedAt"`
	}
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return []diff.Transition{{
		ID: e.ID, Source: diff.Source(e.Source), Region: e.Region, Previous: diff.Status(e.From),
		Record: diff.Record{Key: diff.Key{InvokeID: e.InvokeID, InstanceID: e.InstanceID}, Status: diff.Status(e.To),
			Repeats: e.Repeats, ExitCode: e.ExitCode, ErrorCode: e.ErrorCode},
		ObservedAt: e.ObservedAt, PreviousObservedAt: e.PreviousObservedAt,
	}}, nil
}

// ofShard stamps a decoded batch's transitions with the shard's account,
// which the encoding leaves out: a staged batch belongs to one shard.
func ofShard(b diff.Result, shard diff.Shard) diff.Result {
	for i := range b.Transitions {
		b.Transitions[i].Account = diff.AccountOf(shard.Account)
	}
	return b
}
