package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSDeadLetter publishes dead letters as JSON on a subject: through
// JetStream, acknowledged and deduplicated, when a stream captures the
// subject; else on core NATS, flushed to the server.
type NATSDeadLetter struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	subject string
	stream  string
}

// NewNATSDeadLetter looks up whether a stream captures subject.
func NewNATSDeadLetter(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, subject string) (*NATSDeadLetter, error) {
	d := &NATSDeadLetter{nc: nc, js: js, subject: subject}
	name, err := js.StreamNameBySubject(ctx, subject)
	switch {
	case err == nil:
		d.stream = name
	case errors.Is(err, jetstream.ErrStreamNotFound):
	default:
		return nil, fmt.Errorf("notify: look up a stream for the dead-letter subject %s: %w", subject, err)
	}
	return d, nil
}

// Stream is the stream that captures the subject, "" for core NATS.
func (d *NATSDeadLetter) Stream() string { return d.stream }

// DeadLetter publishes one record. Its message id is a hash of the
// webhook and the events, so a record published twice (a retry after a
// lost ack) is stored once.
func (d *NATSDeadLetter) DeadLetter(ctx context.Context, r DeadLetter) error {
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	if d.stream != "" {
		h := sha256.New()
		h.Write([]byte(r.Webhook))
		for _, id := range r.EventIDs {
			h.Write([]byte{0})
			h.Write([]byte(id))
		}
		if _, err := d.js.Publish(ctx, d.subject, body, jetstream.WithMsgID(hex.EncodeToString(h.Sum(nil)[:16]))); err != nil {
			return fmt.Errorf("publish to stream %s: %w", d.stream, err)
		}
		return nil
	}
	if err := d.nc.Publish(d.subject, body); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := d.nc.FlushTimeout(timeout); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}
