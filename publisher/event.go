package publisher

import (
	"encoding/json"
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

// ContentType is the Content-Type header of every message: CloudEvents
// structured mode, JSON format.
const ContentType = "application/cloudevents+json"

// Event is a CloudEvents 1.0 event in structured JSON mode.
type Event struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Subject         string    `json:"subject"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Data            Data      `json:"data"`
}

// Data is an event's payload. Times are RFC 3339 strings, empty when
// unknown. The instance-level fields are omitted at invocation level.
type Data struct {
	Account            string `json:"account"`
	Source             string `json:"source"`
	RegionID           string `json:"regionId"`
	Level              string `json:"level"`
	InvokeID           string `json:"invokeId"`
	CommandID          string `json:"commandId"`
	CommandName        string `json:"commandName"`
	PreviousStatus     string `json:"previousStatus"`
	Status             string `json:"status"`
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

	// Truncated names the fields that were cut to keep the event within
	// the server's max_payload (see [MaxErrorInfo]); absent when nothing
	// was. A cut field ends with "…[cut N bytes]".
	Truncated []string `json:"truncated,omitempty"`
}

// MaxErrorInfo bounds an event's errorInfo, in bytes: the API's error
// texts are short, but nothing bounds them, and an event over the
// server's max_payload could never be published.
const MaxErrorInfo = diff.MaxText

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// NewEvent builds the CloudEvent of a transition. Its id is the
// transition's id; its time is when capoller observed the new status.
func NewEvent(t diff.Transition) Event {
	r := t.Record
	ev := Event{
		SpecVersion:     "1.0",
		ID:              t.ID,
		Source:          "/capoller/" + string(t.Source) + "/" + t.Region,
		Type:            TypeInvocation,
		Subject:         r.InvokeID,
		Time:            t.ObservedAt.UTC(),
		DataContentType: "application/json",
		Data: Data{
			Account: diff.AccountOf(t.Account), Source: string(t.Source), RegionID: t.Region, Level: string(t.Level()),
			InvokeID: r.InvokeID, CommandID: r.CommandID, CommandName: r.CommandName,
			PreviousStatus: string(t.Previous), Status: string(r.Status), Terminal: r.Status.Terminal(),
			ObservedAt: stamp(t.ObservedAt), PreviousObservedAt: stamp(t.PreviousObservedAt),
		},
	}
	ev.Data.Truncated = r.Cut.Names() // cut at the edge (see diff.Record.BoundTexts)
	if r.InstanceID != "" {
		repeats, exit := r.Repeats, r.ExitCode
		ev.Type = TypeInstance
		ev.Subject = r.InvokeID + "/" + r.InstanceID
		ev.Data.InstanceID, ev.Data.Repeats, ev.Data.ExitCode = r.InstanceID, &repeats, &exit
		ev.Data.ErrorCode = r.ErrorCode
		var cutInfo bool
		if ev.Data.ErrorInfo, cutInfo = diff.Cut(r.ErrorInfo, MaxErrorInfo); cutInfo {
			r.Cut |= diff.FieldErrorInfo
		}
		ev.Data.StartTime, ev.Data.FinishTime = stamp(r.StartTime), stamp(r.FinishTime)
		ev.Data.Truncated = r.Cut.Names()
	}
	return ev
}

// Marshal encodes the event as JSON.
func (e Event) Marshal() ([]byte, error) {
	if b, ok := e.appendJSON(make([]byte, 0, 1024)); ok {
		return b, nil
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("publisher: encode event %s: %w", e.ID, err)
	}
	return b, nil
}

// MarshalWithin encodes the event in at most limit bytes: while it is too
// large, the longest of its free-text and id fields is halved (and marked,
// see [Data.Truncated]). Ids are cut last, and only an id of hundreds of
// kilobytes ever is; the event id, subject and time are never cut.
func (e Event) MarshalWithin(limit int) ([]byte, error) {
	for {
		b, err := e.Marshal()
		if err != nil || len(b) <= limit {
			return b, err
		}
		d := &e.Data
		fields := []struct {
			name string
			v    *string
		}{
			{"errorInfo", &d.ErrorInfo}, {"commandName", &d.CommandName}, {"errorCode", &d.ErrorCode},
			{"commandId", &d.CommandID}, {"previousStatus", &d.PreviousStatus}, {"status", &d.Status},
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
			return nil, fmt.Errorf("publisher: event %s is %d bytes, over the limit of %d even with every field cut", e.ID, len(b), limit)
		}
		*f.v, _ = diff.Cut(*f.v, len(*f.v)/2)
		if !slices.Contains(d.Truncated, f.name) {
			d.Truncated = append(d.Truncated, f.name)
		}
	}
}
