package notify

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrConsumerConflict marks an existing durable consumer that notify
// cannot use as it is (another filter or ack policy).
var ErrConsumerConflict = errors.New("notify: the durable consumer exists with another configuration")

// ConsumerOptions names the durable consumer notify reads through.
type ConsumerOptions struct {
	Stream, SubjectPrefix, Durable string
	Settings                       *Settings
}

// EnsureConsumer creates the durable pull consumer, or updates its ack
// wait and max ack pending: explicit acks, every redelivery allowed (an
// event is acknowledged only once its message was delivered or
// dead-lettered), filtered on "<prefix>.>" (one filter: servers before
// 2.10 know no more). Where a new consumer starts is Settings.DeliverAll;
// an existing one keeps its position.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, o ConsumerOptions) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:       o.Durable,
		Description:   "capoller notify: chat messages for failed invocations",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.Settings.AckWait,
		MaxAckPending: o.Settings.MaxAckPending,
		MaxDeliver:    -1,
		FilterSubject: o.SubjectPrefix + ".>",
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
	if o.Settings.DeliverAll {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	existing, err := js.Consumer(ctx, o.Stream, o.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		c, err := js.CreateConsumer(ctx, o.Stream, cfg)
		if err != nil {
			return nil, fmt.Errorf("notify: create consumer %s on stream %s: %w", o.Durable, o.Stream, err)
		}
		return c, nil
	case err != nil:
		return nil, fmt.Errorf("notify: look up consumer %s on stream %s: %w", o.Durable, o.Stream, err)
	}
	have := existing.CachedInfo().Config
	if have.FilterSubject != cfg.FilterSubject || have.AckPolicy != cfg.AckPolicy {
		return nil, fmt.Errorf("%w: consumer %s on stream %s filters %q with ack policy %v, not %q with explicit acks: use another durable name",
			ErrConsumerConflict, o.Durable, o.Stream, have.FilterSubject, have.AckPolicy, cfg.FilterSubject)
	}
	if have.AckWait == cfg.AckWait && have.MaxAckPending == cfg.MaxAckPending {
		return existing, nil
	}
	have.AckWait, have.MaxAckPending = cfg.AckWait, cfg.MaxAckPending
	c, err := js.UpdateConsumer(ctx, o.Stream, have)
	if err != nil {
		return nil, fmt.Errorf("notify: update consumer %s on stream %s: %w", o.Durable, o.Stream, err)
	}
	return c, nil
}
