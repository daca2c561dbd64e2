package publisher

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/publisher/events"
)

// HintSubject is the subject of a shard's hints:
//
//	<prefix>-hints.<account>.<source>.<region>
//
// beside the events' "<prefix>.>", so that the stream never stores one.
// Any replica takes a hint; the shard's owner answers on this subject.
func HintSubject(prefix string, shard diff.Shard) string {
	return prefix + "-hints." + events.Token(diff.AccountOf(shard.Account)) + "." + events.Token(string(shard.Source)) + "." + events.Token(shard.Region)
}

// HintMessage is a hint as the replica that took it hands it to the
// shard's owner.
type HintMessage struct {
	InvokeID   string    `json:"invokeId"`
	InstanceID string    `json:"instanceId"`
	Received   time.Time `json:"received"`
}

// ForwardHint hands m to the owner of the shard of subject, over NATS core
// request/reply, and waits for its acknowledgement until ctx ends. It
// fails with nats.ErrNoResponders while no replica holds the shard (its
// owner is changing): the caller retries.
func ForwardHint(ctx context.Context, nc *nats.Conn, subject string, m HintMessage) error {
	body, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("publisher: encode a hint: %w", err)
	}
	if _, err := nc.RequestWithContext(ctx, subject, body); err != nil {
		return fmt.Errorf("publisher: forward a hint to %s: %w", subject, err)
	}
	return nil
}

// ServeHints has the owner of a shard take the hints sent to subject:
// take gets each, and the sender its acknowledgement. A body that is not
// a hint is acknowledged and dropped. Unsubscribe when the shard is no
// longer the replica's.
func ServeHints(nc *nats.Conn, subject string, take func(HintMessage)) (*nats.Subscription, error) {
	sub, err := nc.Subscribe(subject, func(msg *nats.Msg) {
		var m HintMessage
		if json.Unmarshal(msg.Data, &m) == nil && m.InvokeID != "" {
			take(m)
		}
		_ = msg.Respond(nil)
	})
	if err != nil {
		return nil, fmt.Errorf("publisher: serve hints on %s: %w", subject, err)
	}
	return sub, nil
}
