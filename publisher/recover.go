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
	"github.com/capoller/capoller/publisher/events"
)

// LastStates reads the stream's events of one shard and returns, per
// record, the state its last event announced: what the checkpoint held
// after publishing it. It reads the last event of each subject only (a
// subject is a record and a status), in stream order, so the last one read
// for a record is its last event. It is how a lost checkpoint (Redis restarted
// without persistence, a flushed database, a new bucket) is rebuilt
// instead of silently taken for a new shard. An empty map means the shard
// never published (or its events aged out of the stream). Events whose
// ids were cut to fit max_payload cannot name their record and are
// skipped.
func (p *NATS) LastStates(ctx context.Context, shard diff.Shard) (map[diff.Key]diff.State, error) {
	filter := p.opts.SubjectPrefix + "." + events.Token(string(shard.Source)) + "." + events.Token(shard.Region) + ".>"
	cons, err := p.js.OrderedConsumer(ctx, p.opts.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("publisher: read the events of %s from stream %s: %w", shard, p.opts.Stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("publisher: read the events of %s from stream %s: %w", shard, p.opts.Stream, err)
	}
	out := map[diff.Key]diff.State{}
	if info.NumPending == 0 {
		return out, nil
	}
	// Each message says how many are left after it (the last says 0), so
	// every fetch but the first asks for exactly what is there.
	want := 1
	for {
		batch, err := cons.Fetch(want, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("publisher: read the events of %s: %w", shard, err)
		}
		n, left := 0, uint64(1)
		for msg := range batch.Messages() {
			n++
			if meta, err := msg.Metadata(); err == nil {
				left = meta.NumPending
			}
			var ev Event
			if err := json.Unmarshal(msg.Data(), &ev); err != nil {
				continue // not one of ours
			}
			d := ev.Data
			if diff.AccountOf(d.Account) != diff.AccountOf(shard.Account) {
				continue // another account's, in the same source and region
			}
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
		if left == 0 {
			return out, nil
		}
		want = int(min(left, 1000))
		if n == 0 {
			return nil, fmt.Errorf("publisher: read the events of %s: the stream stopped delivering after %d records", shard, len(out))
		}
	}
}
