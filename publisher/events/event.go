package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/capoller/capoller/diff"
)

// The CloudEvents types, one per level. The version suffix changes only
// with an incompatible change of the data schema.
const (
	TypeInvocation = "io.capoller.invocation.status.v1"
	TypeInstance   = "io.capoller.instance.status.v1"
)

// The URIs of the events' JSON Schemas, one per type, which every event
// names in its dataschema attribute. They identify the schemas and are not
// download locations: the documents ship in package
// [github.com/capoller/capoller/publisher/events/schema], and `capoller
// schema` prints them. Events published before capoller named its schemas
// carry no dataschema.
const (
	SchemaInvocation = "https://capoller.io/schemas/" + TypeInvocation + ".json"
	SchemaInstance   = "https://capoller.io/schemas/" + TypeInstance + ".json"
)

// ContentType is the Content-Type header of every message: CloudEvents
// structured mode, JSON format.
const ContentType = "application/cloudevents+json"

// Status is a Cloud Assistant status, as the API documents it. A status
// capoller does not know is passed on as the API sent it.
type Status = diff.Status

// The documented statuses. An invocation (the aggregate) is Pending,
// Scheduled, Running, Stopping, Success, Failed, PartialFailed or Stopped
// (Finished in the legacy InvokeStatus); an instance adds Invalid, Aborted,
// Error, Timeout, Cancelled and Terminated.
const (
	Pending       = diff.StatusPending
	Scheduled     = diff.StatusScheduled
	Running       = diff.StatusRunning
	Stopping      = diff.StatusStopping
	Success       = diff.StatusSuccess
	Failed        = diff.StatusFailed
	PartialFailed = diff.StatusPartialFailed
	Stopped       = diff.StatusStopped
	Finished      = diff.StatusFinished
	Invalid       = diff.StatusInvalid
	Aborted       = diff.StatusAborted
	Error         = diff.StatusError
	Timeout       = diff.StatusTimeout
	Cancelled     = diff.StatusCancelled
	Terminated    = diff.StatusTerminated
)

// Level is what changed: an invocation as a whole, or one instance's run.
type Level = diff.Level

// The levels.
const (
	LevelInvocation = diff.LevelInvocation
	LevelInstance   = diff.LevelInstance
)

// Event is a CloudEvents 1.0 event in structured JSON mode.
type Event struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	// DataSchema is the URI of the schema of the event's type
	// ([SchemaInstance], [SchemaInvocation]); empty in an event published
	// before capoller named its schemas.
	DataSchema string `json:"dataschema,omitempty"`
	Data       Data   `json:"data"`

	// TraceParent and TraceState are the W3C trace context of the publish
	// that announced the event (CloudEvents' distributed-tracing
	// extension), also sent as the message's traceparent and tracestate
	// headers; empty when capoller does not trace. They are not part of
	// the id: see [Event.TraceContext] to continue the trace.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
}

// Data is an event's payload. Times are RFC 3339 strings, empty when
// unknown (see [Data.Observed] and the other accessors). The instance-level
// fields are omitted at invocation level.
type Data struct {
	Account            string `json:"account"`
	Source             string `json:"source"`
	RegionID           string `json:"regionId"`
	Level              Level  `json:"level"`
	InvokeID           string `json:"invokeId"`
	CommandID          string `json:"commandId"`
	CommandName        string `json:"commandName"`
	PreviousStatus     Status `json:"previousStatus"`
	Status             Status `json:"status"`
	Terminal           bool   `json:"terminal"`
	ObservedAt         string `json:"observedAt"`
	PreviousObservedAt string `json:"previousObservedAt"`

	InstanceID string `json:"instanceId,omitempty"`
	Repeats    *int   `json:"repeats,omitempty"`
	ExitCode   *int64 `json:"exitCode,omitempty"`
	ErrorCode  string `json:"errorCode,omitempty"`
	ErrorInfo  string `json:"errorInfo,omitempty"`
	StartTime  string `json:"startTime,omitempty"`
	FinishTime string `json:"finishTime,omitempty"`

	// Output is what the run printed, for a status whose output is
	// announced (by default every terminal status but Success): valid
	// UTF-8, secrets redacted, and its end kept when it is long (errors
	// come last), then starting with "[cut N bytes]…" and named in
	// Truncated. It may hold any character JSON carries, control
	// characters and terminal escapes included: show it with
	// [DisplayText]. OutputDropped is what the API itself cut beyond its
	// own bound (24 KB for ECS); OutputURI is where the API delivered the
	// whole output to OSS. OutputMissing says the output could not be
	// read in time: the event went out without it, and will not again.
	Output        string `json:"output,omitempty"`
	OutputDropped int64  `json:"outputDropped,omitempty"`
	OutputURI     string `json:"outputUri,omitempty"`
	OutputMissing bool   `json:"outputMissing,omitempty"`

	// Truncated names the fields that were cut to keep the event within
	// the server's max_payload; absent when nothing was. A cut field ends
	// with "…[cut N bytes]".
	Truncated []string `json:"truncated,omitempty"`
}

// Run identifies what an event is about: one invocation, or one run of
// it on one instance (a periodic task runs again on the same instance,
// with a higher Repeats). Two events with the same Run are steps of the
// same record; their order in the stream is the order they happened.
type Run struct {
	Account, Source, Region, InvokeID, InstanceID string
	// Repeats is the run's number on its instance; 0 for an invocation.
	Repeats int
}

// Run is the event's record and run.
func (e Event) Run() Run {
	r := Run{Account: e.Data.Account, Source: e.Data.Source, Region: e.Data.RegionID, InvokeID: e.Data.InvokeID, InstanceID: e.Data.InstanceID}
	if e.Data.Repeats != nil {
		r.Repeats = *e.Data.Repeats
	}
	return r
}

// Observed is when capoller saw the new status; PreviousObserved when it
// saw the previous one (zero for a record seen for the first time).
// ExitCodeOf is the exit code of an instance's run when it is one: the
// run's process ended by itself (Success, or Failed with ErrorCode
// ExitCodeNonzero or none), or the API gave a code other than 0. The API
// gives 0 also where no process ended (Timeout, Aborted, Cancelled, a
// Failed run whose ErrorCode is DeliveryTimeout or InstanceNotExists):
// shown beside them, it would read as a success. ok is false then, and for
// an invocation.
func (d Data) ExitCodeOf() (code int64, ok bool) {
	if d.ExitCode == nil {
		return 0, false
	}
	switch {
	case *d.ExitCode != 0,
		d.Status == Success,
		d.Status == Failed && (d.ErrorCode == "" || d.ErrorCode == "ExitCodeNonzero"):
		return *d.ExitCode, true
	}
	return 0, false
}

func (d Data) Observed() time.Time         { return parseStamp(d.ObservedAt) }
func (d Data) PreviousObserved() time.Time { return parseStamp(d.PreviousObservedAt) }

// Started and Finished are the API's own times of an instance's run, zero
// when it did not give them.
func (d Data) Started() time.Time  { return parseStamp(d.StartTime) }
func (d Data) Finished() time.Time { return parseStamp(d.FinishTime) }

func parseStamp(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s) // the zero time for "" or a malformed stamp
	return t
}

// Stamp formats a time as events carry it: RFC 3339 in UTC with
// nanoseconds, "" for the zero time.
func Stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// ErrNotAnEvent marks a message that is not one of capoller's events.
var ErrNotAnEvent = errors.New("events: not a capoller event")

// Decode reads an event from a message body. It fails with [ErrNotAnEvent]
// for JSON that is not a capoller event of a type this package knows.
func Decode(body []byte) (Event, error) {
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		return e, fmt.Errorf("%w: %w", ErrNotAnEvent, err)
	}
	switch {
	case e.SpecVersion != "1.0":
		return e, fmt.Errorf("%w: specversion %q", ErrNotAnEvent, e.SpecVersion)
	case e.Type != TypeInvocation && e.Type != TypeInstance:
		return e, fmt.Errorf("%w: type %q", ErrNotAnEvent, e.Type)
	case e.ID == "" || e.Data.InvokeID == "" || e.Data.Status == "":
		return e, fmt.Errorf("%w: an id, an invocation and a status are required", ErrNotAnEvent)
	case e.Type == TypeInvocation && (e.Data.Level != LevelInvocation || e.Data.InstanceID != ""):
		return e, fmt.Errorf("%w: an invocation event of level %q with instance %q", ErrNotAnEvent, e.Data.Level, e.Data.InstanceID)
	case e.Type == TypeInstance && (e.Data.Level != LevelInstance || e.Data.InstanceID == ""):
		return e, fmt.Errorf("%w: an instance event of level %q without its instance", ErrNotAnEvent, e.Data.Level)
	}
	return e, nil
}

// AppendJSON appends the event's JSON encoding (that of [Event.Marshal])
// to b.
func (e Event) AppendJSON(b []byte) ([]byte, error) {
	if out, ok := e.appendJSON(b); ok {
		return out, nil
	}
	out, err := e.Marshal()
	return append(b, out...), err
}

// Marshal encodes the event as JSON.
func (e Event) Marshal() ([]byte, error) {
	var scratch [1024]byte // most events fit: encoded here, returned in a slice of their own size
	if b, ok := e.appendJSON(scratch[:0]); ok {
		return bytes.Clone(b), nil
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("events: encode event %s: %w", e.ID, err)
	}
	return b, nil
}

// MarshalWithin encodes the event in at most limit bytes: while it is too
// large, the longest of its free-text and id fields is halved (and marked,
// see [Data.Truncated]). Ids are cut last, and only an id of hundreds of
// kilobytes ever is; the event id, subject and time are never cut.
func (e Event) MarshalWithin(limit int) ([]byte, error) {
	b, err := e.Marshal()
	if err != nil || len(b) <= limit {
		return b, err
	}
	return cutWithin(e, limit, b) // a copy: the common path above keeps e off the heap
}

// cutWithin halves e's longest fields until its encoding fits limit; b
// is its encoding, found too large.
func cutWithin(e Event, limit int, b []byte) ([]byte, error) {
	for {
		d := &e.Data
		if len(d.Output) >= 64 { // the output goes first, and keeps its end
			d.Output, _ = diff.CutHead(d.Output, len(d.Output)/2)
			if !slices.Contains(d.Truncated, "output") {
				d.Truncated = append(d.Truncated, "output")
			}
			var err error
			if b, err = e.Marshal(); err != nil || len(b) <= limit {
				return b, err
			}
			continue
		}
		fields := []struct {
			name string
			v    *string
		}{
			{"errorInfo", &d.ErrorInfo}, {"commandName", &d.CommandName}, {"errorCode", &d.ErrorCode},
			{"commandId", &d.CommandID}, {"previousStatus", (*string)(&d.PreviousStatus)}, {"status", (*string)(&d.Status)},
			{"instanceId", &d.InstanceID}, {"invokeId", &d.InvokeID}, {"subject", &e.Subject},
		}
		longest := 0
		for i, f := range fields {
			if len(*f.v) > len(*fields[longest].v) {
				longest = i
			}
		}
		f := fields[longest]
		if len(*f.v) < 64 {
			return nil, fmt.Errorf("events: event %s is %d bytes, over the limit of %d even with every field cut", e.ID, len(b), limit)
		}
		*f.v, _ = diff.Cut(*f.v, len(*f.v)/2)
		if !slices.Contains(d.Truncated, f.name) {
			d.Truncated = append(d.Truncated, f.name)
		}
		var err error
		if b, err = e.Marshal(); err != nil || len(b) <= limit {
			return b, err
		}
	}
}
