package publisher

import (
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/publisher/events"
)

// Event is an event as subscribers read it; see package events.
type Event = events.Event

// MaxErrorInfo bounds an event's errorInfo, in bytes: the API's error
// texts are short, but nothing bounds them, and an event over the
// server's max_payload could never be published.
const MaxErrorInfo = diff.MaxText

// NewEvent builds the CloudEvent of a transition. Its id is the
// transition's id; its time is when capoller observed the new status.
func NewEvent(t diff.Transition) Event {
	r := t.Record
	ev := Event{
		SpecVersion:     "1.0",
		ID:              t.ID,
		Source:          "/capoller/" + string(t.Source) + "/" + t.Region,
		Type:            events.TypeInvocation,
		Subject:         r.InvokeID,
		Time:            t.ObservedAt.UTC(),
		DataContentType: "application/json",
		DataSchema:      events.SchemaInvocation,
		Data: events.Data{
			Account: diff.AccountOf(t.Account), Source: string(t.Source), RegionID: t.Region, Level: t.Level(),
			InvokeID: r.InvokeID, CommandID: r.CommandID, CommandName: r.CommandName,
			PreviousStatus: t.Previous, Status: r.Status, Terminal: r.Status.Terminal(),
			ObservedAt: events.Stamp(t.ObservedAt), PreviousObservedAt: events.Stamp(t.PreviousObservedAt),
		},
	}
	ev.TraceParent, ev.TraceState = t.Trace.Parent, t.Trace.State
	ev.Data.Truncated = r.Cut.Names() // cut at the edge (see diff.Record.BoundTexts)
	if r.InstanceID != "" {
		repeats, exit := r.Repeats, r.ExitCode
		ev.Type, ev.DataSchema = events.TypeInstance, events.SchemaInstance
		ev.Subject = r.InvokeID + "/" + r.InstanceID
		ev.Data.InstanceID, ev.Data.Repeats, ev.Data.ExitCode = r.InstanceID, &repeats, &exit
		ev.Data.ErrorCode = r.ErrorCode
		var cutInfo bool
		if ev.Data.ErrorInfo, cutInfo = diff.Cut(r.ErrorInfo, MaxErrorInfo); cutInfo {
			r.Cut |= diff.FieldErrorInfo
		}
		ev.Data.StartTime, ev.Data.FinishTime = events.Stamp(r.StartTime), events.Stamp(r.FinishTime)
		ev.Data.Output, ev.Data.OutputDropped, ev.Data.OutputURI, ev.Data.OutputMissing = r.Output, r.OutputDropped, r.OutputURI, r.OutputMissing
		if r.OutputRaw { // never vetted (redacted, bounded): never published
			ev.Data.Output, ev.Data.OutputMissing = "", true
		}
		ev.Data.Truncated = r.Cut.Names()
	}
	return ev
}
