package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DeliveryLog remembers which of an invocation's events each webhook is
// done with: it accepted a message covering them, or that message was
// dead-lettered. A message goes to several webhooks, and its events are
// acknowledged only once every one of them is done; if one is not (notify
// stops while it waits to retry, or its dead-letter publish fails), every
// event is handed back and redelivered, and grouped again. The notifier
// then consults the log before each post and skips a webhook that is done
// with every event of the message, so a webhook that accepted a message
// never gets it again, whatever the other webhooks did.
//
// The log is keyed by webhook and invocation (account, source, region,
// invocation id), not by the exact set of events: a redelivery may be
// grouped a little differently (a follow-up's events joining the first
// message's, say), and a message whose events the webhook all had is not
// news. A message with one event the webhook did not have yet is posted.
//
// A webhook's entries are written right after it accepted, before any
// event is acknowledged. Record failing (the store unreachable) is
// logged; the events are acknowledged all the same when every webhook is
// done, and only a redelivery forced by another webhook could then post
// the message twice. Done failing posts (at least once, never lost).
type DeliveryLog interface {
	// Done returns the ids of the invocation's events the webhook is
	// done with.
	Done(ctx context.Context, webhook, invocation string) (map[string]bool, error)
	// Record adds ids to those the webhook is done with.
	Record(ctx context.Context, webhook, invocation string, ids []string) error
}

// memoryLog is the default [DeliveryLog]: it holds for one process (a
// redelivery after a failed dead-letter publish), not across a restart.
// It forgets the oldest invocations beyond its limit.
type memoryLog struct {
	mu    sync.Mutex
	done  map[string]map[string]bool
	order *idSet
}

func newMemoryLog(limit int) *memoryLog {
	return &memoryLog{done: map[string]map[string]bool{}, order: newIDSet(limit)}
}

func (l *memoryLog) Done(_ context.Context, webhook, invocation string) (map[string]bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]bool{}
	for id := range l.done[deliveryKey(webhook, invocation)] {
		out[id] = true
	}
	return out, nil
}

func (l *memoryLog) Record(_ context.Context, webhook, invocation string, ids []string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := deliveryKey(webhook, invocation)
	if l.done[key] == nil {
		if evicted, ok := l.order.push(key); ok {
			delete(l.done, evicted)
		}
		l.done[key] = map[string]bool{}
	}
	for _, id := range ids {
		l.done[key][id] = true
	}
	return nil
}

// deliveryKey names one webhook's entry for one invocation: a hash (a KV
// key allows few characters; account and invocation ids may have others).
func deliveryKey(webhook, invocation string) string {
	h := sha256.Sum256([]byte(webhook + "\x00" + invocation))
	return hex.EncodeToString(h[:16])
}

// DefaultDeliveredTTL is how long a [KVDeliveryLog] remembers a delivery:
// far beyond how long events stay unacknowledged (a redelivery comes
// within the ack wait, or a minute after a failed dead-letter publish).
const DefaultDeliveredTTL = 24 * time.Hour

// KVDeliveryLogOptions configures a [KVDeliveryLog].
type KVDeliveryLogOptions struct {
	// Bucket is the JetStream key-value bucket; see [DeliveredBucket].
	Bucket string
	// TTL is how long an entry lives after its last write (the bucket's
	// max age); default DefaultDeliveredTTL. It applies to a bucket this
	// creates; an existing bucket is used as it is.
	TTL time.Duration
}

// KVDeliveryLog is a [DeliveryLog] in a JetStream key-value bucket: it
// survives a restart. One notify writes it (one per durable): an entry is
// read, merged and written again without a compare-and-set.
type KVDeliveryLog struct {
	kv jetstream.KeyValue
}

// DeliveredBucket is the bucket notify's delivery log uses for a durable
// consumer on a stream: "<stream>_<durable>_DELIVERED".
func DeliveredBucket(stream, durable string) string { return stream + "_" + durable + "_DELIVERED" }

// NewKVDeliveryLog opens the bucket, creating it if it is missing.
func NewKVDeliveryLog(ctx context.Context, js jetstream.JetStream, o KVDeliveryLogOptions) (*KVDeliveryLog, error) {
	if o.TTL <= 0 {
		o.TTL = DefaultDeliveredTTL
	}
	kv, err := js.KeyValue(ctx, o.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: o.Bucket, TTL: o.TTL, History: 1,
			Description: "capoller notify: the events each webhook accepted, so a redelivery is not posted again"})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, o.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("notify: open key-value bucket %s: %w", o.Bucket, err)
	}
	return &KVDeliveryLog{kv: kv}, nil
}

type deliveryEntry struct {
	Webhook  string   `json:"webhook"`
	EventIDs []string `json:"eventIds"`
}

func (l *KVDeliveryLog) get(ctx context.Context, key string) (deliveryEntry, error) {
	var e deliveryEntry
	v, err := l.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return e, nil
	case err != nil:
		return e, fmt.Errorf("get %s: %w", key, err)
	}
	if err := json.Unmarshal(v.Value(), &e); err != nil {
		return e, fmt.Errorf("decode %s: %w", key, err)
	}
	return e, nil
}

// Done reads the webhook's entry for the invocation.
func (l *KVDeliveryLog) Done(ctx context.Context, webhook, invocation string) (map[string]bool, error) {
	e, err := l.get(ctx, deliveryKey(webhook, invocation))
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(e.EventIDs))
	for _, id := range e.EventIDs {
		out[id] = true
	}
	return out, nil
}

// Record merges ids into the webhook's entry for the invocation.
func (l *KVDeliveryLog) Record(ctx context.Context, webhook, invocation string, ids []string) error {
	key := deliveryKey(webhook, invocation)
	e, err := l.get(ctx, key)
	if err != nil {
		return err
	}
	have := make(map[string]bool, len(e.EventIDs))
	for _, id := range e.EventIDs {
		have[id] = true
	}
	e.Webhook = webhook
	for _, id := range ids {
		if !have[id] {
			have[id] = true
			e.EventIDs = append(e.EventIDs, id)
		}
	}
	body, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	if _, err := l.kv.Put(ctx, key, body); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}
