// Package castest is an emulator of the Alibaba Cloud Cloud Assistant APIs,
// in the spirit of net/http/httptest: tests, the demo and the casim binary run
// it in process and talk to it over HTTP with the real SDK.
//
// It owns the wire protocol (RPC style, parameters in the query string,
// HMAC-SHA1 signature v1 verified on every request, nonce replay and
// timestamp skew rejected, Alibaba's JSON error shape and HTTP statuses), a
// simulated fleet of instances that run a tiny script language (echo, sleep,
// exit, hang), and a control plane under /_casim/ that exposes the ground
// truth of every status change it made, changes instances and injects faults.
//
// Where the documents are silent (listing order, ties within a second,
// NextToken drift and expiry, undocumented filter values) a [Behaviour]
// chooses what the emulator does; its zero value is the ideal API. Set it
// with Options.Behaviour, SetBehaviour, POST /_casim/behaviour or casim's
// flags; RandomBehaviour mixes them from a seed.
//
// The emulator is the ground truth of capoller's tests: its state changes are
// recorded with the instant they happened, whether or not anyone polled.
package castest
