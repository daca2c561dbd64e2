// Package publisher owns capoller's event contract and its delivery to NATS
// JetStream: the subject scheme, the CloudEvents 1.0 envelope, stream setup,
// and a publisher that sends a batch asynchronously with Nats-Msg-Id set to
// each event id and returns only once JetStream acknowledged every message
// (a duplicate acknowledgement counts as success).
//
// It also runs an embedded NATS server with JetStream for the demo and for
// machines without a NATS server.
package publisher
