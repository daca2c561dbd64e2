// Package notify turns capoller's status-change events into chat
// messages: it owns the rules that choose what is worth a message, the
// grouping of an invocation's instance events into one message, the
// webhook formats (DingTalk, Slack, Feishu/Lark, generic JSON) with their
// signatures and success checks, per-webhook rate limits with digests in
// a storm, retries with backoff, the dead-letter record of what could not
// be delivered, and its metrics.
//
// It reads events through a small [Msg] interface (a JetStream message
// satisfies it) and acknowledges an event only once every webhook its
// message goes to accepted it, or it was dead-lettered: with a durable
// consumer and explicit acks, a restart loses no message. When one
// webhook is done and another is not (notify stops while it waits to
// retry, or its dead-letter publish fails), every event comes back; a
// [DeliveryLog] (durably, a [KVDeliveryLog]) written before any ack keeps
// the done webhook from getting the message again. Only a notify killed
// between a webhook's answer and that write may repeat a message. The
// consumer itself, and the NATS connection, are set up by the caller
// (cmd/capoller's notify command).
package notify
