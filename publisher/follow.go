package publisher

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Follower follows the event stream from the moment it started, as the
// stream stores it: a re-publish JetStream dropped as a duplicate is not
// seen.
type Follower struct {
	stream jetstream.Stream
	cc     jetstream.ConsumeContext
	mu     sync.Mutex
	seq    uint64 // stream sequence of the last message printed, or the last before it started
	count  int
}

// Follow creates the stream of o if needed (as the daemon would) and
// follows it with an ordered consumer from the next message on, handing
// each to show.
func Follow(ctx context.Context, nc *nats.Conn, o Options, show func(jetstream.Msg)) (*Follower, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("publisher: follow: %w", err)
	}
	pub, err := New(js, o)
	if err != nil {
		return nil, err
	}
	if err := pub.EnsureStream(ctx); err != nil {
		return nil, err
	}
	stream, err := js.Stream(ctx, o.Stream)
	if err != nil {
		return nil, fmt.Errorf("publisher: follow: %w", err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return nil, fmt.Errorf("publisher: follow: %w", err)
	}
	p := &Follower{stream: stream, seq: stream.CachedInfo().State.LastSeq}
	p.cc, err = cons.Consume(func(m jetstream.Msg) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if md, err := m.Metadata(); err == nil {
			p.seq = md.Sequence.Stream
		}
		p.count++
		show(m)
	})
	if err != nil {
		return nil, fmt.Errorf("publisher: follow: %w", err)
	}
	return p, nil
}

// Finish waits, up to timeout, until every message stored when it was
// called was shown, stops following, and returns how many were shown.
func (p *Follower) Finish(timeout time.Duration) int {
	defer p.cc.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	info, err := p.stream.Info(ctx)
	for err == nil && ctx.Err() == nil {
		p.mu.Lock()
		done := p.seq >= info.State.LastSeq
		p.mu.Unlock()
		if done {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}
