// Package publisher owns capoller's event contract and its delivery to NATS
// JetStream: the subject scheme, the CloudEvents 1.0 envelope, stream setup,
// and a publisher that sends a batch asynchronously with Nats-Msg-Id set to
// each event id and returns only once JetStream acknowledged every message
// (a duplicate acknowledgement counts as success).
//
// It also owns the connection to NATS that every command of capoller dials:
// [Dial] authenticates as [NATSAuth] says (a creds file, an nkey seed, a
// token or a user and password; token and password files read again at
// each reconnect) over TLS when asked, logs the connection's life, and its
// [Conn] tells whether the client gave up for good ([Conn.Closed],
// [ClosedError]) and why the servers cannot be reached ([Conn.Explain]). No
// error or log line shows a secret.
//
// The embedded NATS server, for the demo and for machines without a NATS
// server, is package embedded: importing publisher does not build the
// server.
package publisher
