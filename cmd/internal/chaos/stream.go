package chaos

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/truthcheck"
	"github.com/capoller/capoller/publisher/events"
)

// streamReader reads the stream as it grows. follow polls it in the
// background, so that an engine down never holds up the harness's loop.
type streamReader struct {
	js     jetstream.JetStream
	stream string

	mu   sync.Mutex
	next uint64
	evs  []truthcheck.Published
	last map[diff.Key]string // each record's last announced status
	err  error               // of the last poll
}

// follow polls the stream every second until ctx ends.
func (s *streamReader) follow(ctx context.Context) {
	for {
		err := s.poll(ctx)
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second): // pacing the polls
		}
	}
}

// count is how many events were read.
func (s *streamReader) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.evs)
}

// poll reads what the stream holds beyond what was read.
func (s *streamReader) poll(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, s.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // no replica created it yet
	}
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.LastSeq < max(s.next, 1) {
		return nil
	}
	cons, err := s.js.OrderedConsumer(ctx, s.stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: max(s.next, 1)})
	if err != nil {
		return err
	}
	for s.next <= info.State.LastSeq {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		n := 0
		for msg := range batch.Messages() {
			meta, err := msg.Metadata()
			if err != nil || meta.Sequence.Stream < s.next {
				continue
			}
			s.next = meta.Sequence.Stream + 1
			n++
			e, err := events.Decode(msg.Data())
			if err != nil {
				continue
			}
			s.evs = append(s.evs, truthcheck.Published{MsgID: msg.Headers().Get(jetstream.MsgIDHeader), Stored: meta.Timestamp, Event: e})
			s.last[truthcheck.RecordKey(e.Data)] = string(e.Data.Status)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return err
		}
		if n == 0 {
			return fmt.Errorf("no message within 2s while reading up to %d", info.State.LastSeq)
		}
	}
	return nil
}

// complete checks that every message of the stream was read.
func (s *streamReader) complete(ctx context.Context) error {
	st, err := s.js.Stream(ctx, s.stream)
	if err != nil {
		return fmt.Errorf("read the stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("read the stream: %w", err)
	}
	if info.State.Msgs != uint64(len(s.evs)) {
		return fmt.Errorf("read %d events, the stream holds %d messages", len(s.evs), info.State.Msgs)
	}
	return nil
}

// behind counts the records whose last true status is not final yet, or
// not the last one announced.
func (s *streamReader) behind(truth []castest.TruthEntry) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	last := map[diff.Key]string{}
	for _, e := range truth {
		last[diff.Key{InvokeID: e.InvokeID, InstanceID: e.InstanceID}] = e.To
	}
	n := 0
	for k, st := range last {
		if !diff.Status(st).Terminal() || s.last[k] != st {
			n++
		}
	}
	return n
}
