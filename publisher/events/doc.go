// Package events is the subscribers' side of capoller's event contract,
// for the services that consume the stream: it decodes an event into
// typed values, builds NATS subject filters with the same escaping the
// publisher uses, matches events against filters, and deduplicates on
// event id.
//
// It owns the envelope ([Event], [Data]) and the subject tokens
// ([Token], [EscapeToken]); package publisher builds and sends events
// with them. The same contract as documents, for consumers in other
// languages (a JSON Schema per event type, named by each event's
// dataschema, and an AsyncAPI document), is package
// [github.com/capoller/capoller/publisher/events/schema]. It depends only
// on the standard library, package diff and OpenTelemetry's API (trace
// and propagation, not its SDK: see [Event.TraceContext]), so importing it
// pulls neither the Alibaba Cloud SDK nor a NATS server (nor the NATS
// client) into a build.
package events
