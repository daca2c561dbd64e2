package publisher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/publisher/events"
)

// ReadOptions says which of a stream's messages [ReadStream] reads.
type ReadOptions struct {
	// Stream is the stream's name; required.
	Stream string
	// Subject filters the messages, e.g. an events.Filter's Subject; ""
	// reads every subject.
	Subject string
	// From, if set, starts at the first message the server stored then or
	// later (by the server's clock); else at the stream's first.
	From time.Time
}

// ReadStream reads a stream's capoller events in stream order, from
// o.From up to the stream's last message when the read began: a bounded
// read of history, not a subscription, so it ends while events keep
// coming. A message that is not one of capoller's events is skipped. emit
// gets each event and its body as stored; its error ends the read.
func ReadStream(ctx context.Context, js jetstream.JetStream, o ReadOptions, emit func(e events.Event, raw []byte) error) error {
	occ := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if o.Subject != "" {
		occ.FilterSubjects = []string{o.Subject}
	}
	if !o.From.IsZero() {
		occ.DeliverPolicy, occ.OptStartTime = jetstream.DeliverByStartTimePolicy, &o.From
	}
	fail := func(err error) error { return fmt.Errorf("publisher: read stream %s: %w", o.Stream, err) }
	cons, err := js.OrderedConsumer(ctx, o.Stream, occ)
	if err != nil {
		return fail(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fail(err)
	}
	last := info.Delivered.Stream + info.NumPending
	if s, err := js.Stream(ctx, o.Stream); err == nil {
		if si, err := s.Info(ctx); err == nil {
			last = si.State.LastSeq
		}
	}
	for left := info.NumPending; left > 0; {
		batch, err := cons.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fail(err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			if meta, err := msg.Metadata(); err == nil {
				left = meta.NumPending
				if meta.Sequence.Stream >= last {
					left = 0
				}
			}
			if e, err := events.Decode(msg.Data()); err == nil {
				if err := emit(e, msg.Data()); err != nil {
					return err
				}
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fail(err)
		}
		if n == 0 {
			return fail(fmt.Errorf("no message within 5s while %d were pending", left))
		}
	}
	return nil
}
