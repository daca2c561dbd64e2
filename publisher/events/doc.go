// Package events is the subscribers' side of capoller's event contract,
// for the services that consume the stream: it decodes an event into
// typed values, builds NATS subject filters with the same escaping the
// publisher uses, matches events against filters, and deduplicates on
// event id.
//
// It owns the envelope ([Event], [Data]) and the subject tokens
// ([Token], [EscapeToken]); package publisher builds and sends events
// with them. It depends only on the standard library, package diff and
// OpenTelemetry's API (trace and propagation, not its SDK: see
// [Event.TraceContext]), so importing it pulls neither the Alibaba Cloud
// SDK nor a NATS server (nor the NATS client) into a build.
package events
