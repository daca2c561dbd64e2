package publisher

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/publisher/events"
)

// Options configures a [NATS] publisher. Zero values get the documented
// defaults.
type Options struct {
	// Stream is the JetStream stream name; default CAPOLLER.
	Stream string
	// SubjectPrefix is the first token(s) of every subject; default capoller.
	// The stream captures "<prefix>.>".
	SubjectPrefix string
	// DuplicateWindow is how long JetStream remembers event ids to drop
	// re-publishes; default 10m (or MaxAge, if shorter), longer than the
	// poller's longest retry pause (5m). A re-publish later than that (an
	// outage longer than the window between publish and checkpoint) is
	// stored again, with the same id, so consumers should still deduplicate
	// on id.
	DuplicateWindow time.Duration
	// MaxAge bounds how long events are kept; default 0, forever.
	MaxAge time.Duration
	// MaxBytes bounds the stream's size, the oldest events going first;
	// default 0, unlimited.
	MaxBytes int64
	// Replicas of the stream; default 1.
	Replicas int
	// AckTimeout bounds the wait for a batch's acknowledgements; default 30s.
	AckTimeout time.Duration
}

func (o Options) withDefaults() (Options, error) {
	if o.Stream == "" {
		o.Stream = "CAPOLLER"
	}
	if err := ValidStreamName(o.Stream); err != nil {
		return o, err
	}
	if o.SubjectPrefix == "" {
		o.SubjectPrefix = "capoller"
	}
	if err := ValidPrefix(o.SubjectPrefix); err != nil {
		return o, err
	}
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = 10 * time.Minute
		if o.MaxAge > 0 && o.MaxAge < o.DuplicateWindow {
			o.DuplicateWindow = o.MaxAge // the server refuses a window over the age
		}
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.AckTimeout == 0 {
		o.AckTimeout = 30 * time.Second
	}
	if o.DuplicateWindow < 0 || o.MaxAge < 0 || o.MaxBytes < 0 || o.Replicas < 0 || o.AckTimeout < 0 {
		return o, errors.New("publisher: durations, max bytes and replicas must not be negative")
	}
	if o.MaxAge > 0 && o.DuplicateWindow > o.MaxAge {
		return o, fmt.Errorf("publisher: duplicate window %v exceeds max age %v", o.DuplicateWindow, o.MaxAge)
	}
	return o, nil
}

// NATS publishes transitions to a JetStream stream.
type NATS struct {
	js      jetstream.JetStream
	opts    Options
	batches atomic.Int64
	msgs    atomic.Int64
	// maxMsgSize is the stream's own bound on a message (0: none), as
	// SetupStream found it.
	maxMsgSize atomic.Int64
}

// Requests counts the batches this publisher waited for (one wait per
// batch) and the messages it published (each acknowledged; pipelined).
func (p *NATS) Requests() (batches, messages int64) { return p.batches.Load(), p.msgs.Load() }

// New builds a publisher on a JetStream context. Call EnsureStream before
// the first Publish.
func New(js jetstream.JetStream, opts Options) (*NATS, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &NATS{js: js, opts: o}, nil
}

// StreamConfig is the configuration a stream is created with, by
// [NATS.SetupStream] and `capoller setup` alike. A MaxBytes of 0 is
// unlimited (the server stores it as -1).
func (p *NATS) StreamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        p.opts.Stream,
		Description: "capoller: Cloud Assistant status-change events",
		Subjects:    []string{p.opts.SubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  p.opts.DuplicateWindow,
		Discard:     jetstream.DiscardOld,
		MaxAge:      p.opts.MaxAge,
		MaxBytes:    p.opts.MaxBytes,
		Replicas:    p.opts.Replicas,
	}
}

// EnsureStream creates the stream if it does not exist, and checks an
// existing one without rewriting it: [NATS.SetupStream], without its report.
func (p *NATS) EnsureStream(ctx context.Context) error {
	_, err := p.SetupStream(ctx)
	return err
}

// Result counts what a Publish did.
type Result struct {
	Published  int // stored for the first time
	Duplicates int // already in the stream: a re-publish of the same event id
}

// Publish sends every transition, in order, with its event id as
// Nats-Msg-Id and the stream as Nats-Expected-Stream, and returns once JetStream acknowledged all of them. It
// fails if any message was not acknowledged: the caller must then not
// checkpoint, and will re-publish the same ids next cycle.
func (p *NATS) Publish(ctx context.Context, batch []diff.Transition) (Result, error) {
	var res Result
	if len(batch) == 0 {
		return res, nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.AckTimeout)
	defer cancel()
	p.batches.Add(1)
	p.msgs.Add(int64(len(batch)))
	futures := make([]jetstream.PubAckFuture, 0, len(batch))
	for _, t := range batch {
		msg, err := p.message(t)
		if err != nil {
			return res, err
		}
		f, err := p.js.PublishMsgAsync(msg)
		if err != nil {
			return res, fmt.Errorf("publisher: publish %s: %w", t.ID, err)
		}
		futures = append(futures, f)
	}
	var failed int
	var first error
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				res.Duplicates++
			} else {
				res.Published++
			}
		case err := <-f.Err():
			failed++
			if first == nil {
				first = fmt.Errorf("event %s: %w", batch[i].ID, err)
			}
		case <-ctx.Done():
			return res, fmt.Errorf("publisher: %d of %d events not acknowledged within %v (is NATS reachable?): %w",
				len(futures)-i+failed, len(batch), p.opts.AckTimeout, ctx.Err())
		}
	}
	if failed > 0 {
		return res, fmt.Errorf("publisher: %d of %d events not acknowledged, first: %w", failed, len(batch), first)
	}
	return res, nil
}

func (p *NATS) message(t diff.Transition) (*nats.Msg, error) {
	subject, err := Subject(p.opts.SubjectPrefix, t)
	if err != nil {
		return nil, err
	}
	// The body, with the headers, must fit the server's max_payload and
	// the stream's max_msg_size.
	limit := int(p.js.Conn().MaxPayload())
	if limit <= 0 {
		limit = 1 << 20 // not connected yet: the server's default
	}
	if m := int(p.maxMsgSize.Load()); m > 0 && m < limit {
		limit = m
	}
	limit -= 512 + 2*(len(t.Trace.Parent)+len(t.Trace.State)) // in the headers and the body
	data, err := NewEvent(t).MarshalWithin(limit)
	if err != nil {
		return nil, err
	}
	// The headers are written whole: what jetstream.WithMsgID and
	// WithExpectStream would set, without their per-message work.
	h := nats.Header{
		"Content-Type":                 {events.ContentType},
		jetstream.MsgIDHeader:          {t.ID},
		jetstream.ExpectedStreamHeader: {p.opts.Stream},
	}
	if t.Trace.Parent != "" { // as the envelope has it, for a subscriber that reads headers only
		h[events.HeaderTraceParent] = []string{t.Trace.Parent}
		if t.Trace.State != "" {
			h[events.HeaderTraceState] = []string{t.Trace.State}
		}
	}
	return &nats.Msg{Subject: subject, Data: data, Header: h}, nil
}
