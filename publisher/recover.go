package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/diff"
)

// LastStates reads the stream's events of one shard and returns, per
// record, the state its last event announced: what the checkpoint held
// after publishing it. It is how a lost checkpoint (Redis restarted
// without persistence, a flushed database, a new bucket) is rebuilt
// instead of silently taken for a new shard. An empty map means the shard
// never published (or its events aged out of the stream). Events whose
// ids were cut to fit max_payload cannot name their record and are
// skipped.
func (p *NATS) LastStates(ctx context.Context, shard diff.Shard) (map[diff.Key]diff.State, error) {
	filter := p.opts.SubjectPrefix + "." + Token(string(shard.Source)) + "." + Token(shard.Region) + ".>"
	cons, err := p.js.OrderedConsumer(ctx, p.opts.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("publisher: read the events of %s from stream %s: %w", shard, p.opts.Stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("publisher: read the events of %s from stream %s: %w", shard, p.opts.Stream, err)
	}
	out := map[diff.Key]diff.State{}
	for read := uint64(0); read < info.NumPending; {
		batch, err := cons.Fetch(int(min(1000, info.NumPending-read)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("publisher: read the events of %s: %w", shard, err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			var ev Event
			if err := json.Unmarshal(msg.Data(), &ev); err != nil {
				continue // not one of ours
			}
			d := ev.Data
			if d.InvokeID == "" || d.Status == "" || slices.Contains(d.Truncated, "invokeId") || slices.Contains(d.Truncated, "instanceId") {
				continue
			}
			st := diff.State{Status: diff.Status(d.Status)}
			if d.Repeats != nil {
				st.Repeats = *d.Repeats
			}
			if at, err := time.Parse(time.RFC3339Nano, d.ObservedAt); err == nil {
				st.ObservedAt = at
			}
			out[diff.Key{InvokeID: d.InvokeID, InstanceID: d.InstanceID}] = st
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("publisher: read the events of %s: %w", shard, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("publisher: read the events of %s: %d of %d events arrived", shard, read, info.NumPending)
		}
		read += uint64(n)
	}
	return out, nil
}
