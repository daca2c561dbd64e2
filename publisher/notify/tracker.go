package notify

import (
	"context"
	"sync"
	"time"
)

// Msg is what notify needs of a consumed message; a jetstream.Msg is one.
type Msg interface {
	Data() []byte
	Ack() error
	DoubleAck(context.Context) error
	NakWithDelay(time.Duration) error
	InProgress() error
	Term() error
}

// held is one event not yet acknowledged: grouped, queued or being
// delivered. msgs has more than one message when the server redelivered
// the event while it was held (all are acknowledged together).
type held struct {
	id         string
	msgs       []Msg
	progressed time.Time
}

// tracker holds every unacknowledged event, keeps them alive with
// InProgress, and acknowledges or gives them back. It also remembers the
// ids acknowledged lately, so that a redelivery of an event whose ack was
// lost is acknowledged without a second message. Safe for concurrent use:
// the consumer loop holds events, webhook workers release them.
type tracker struct {
	mu      sync.Mutex
	held    map[string]*held
	done    *idSet
	ackWait time.Duration
	metrics *Metrics
	swept   time.Time // the last progress pass
}

func newTracker(ackWait time.Duration, m *Metrics) *tracker {
	return &tracker{held: map[string]*held{}, done: newIDSet(100_000), ackWait: ackWait, metrics: m}
}

// hold starts holding an event. known is true when the event is already
// held (this message joins it) or was acknowledged lately (this message
// was acknowledged at once).
func (t *tracker) hold(id string, msg Msg, now time.Time) (h *held, known bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if h, ok := t.held[id]; ok {
		h.msgs = append(h.msgs, msg)
		return h, true
	}
	if t.done.has(id) {
		_ = msg.Ack()
		t.metrics.add(&t.metrics.redelivered, 1)
		t.metrics.add(&t.metrics.acked, 1)
		return nil, true
	}
	h = &held{id: id, msgs: []Msg{msg}, progressed: now}
	t.held[id] = h
	return h, false
}

// progress tells the server, every third of the ack wait, that held
// events are still being worked on.
func (t *tracker) progress(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.swept) < t.ackWait/6 {
		return // a pass looks at every held event: not on every fetch
	}
	t.swept = now
	for _, h := range t.held {
		if now.Sub(h.progressed) >= t.ackWait/3 {
			for _, m := range h.msgs {
				_ = m.InProgress()
			}
			h.progressed = now
		}
	}
}

// ack acknowledges events whose message was delivered (or
// dead-lettered); the last one waits for the server's confirmation,
// which confirms every ack sent before it on the connection.
func (t *tracker) ack(ctx context.Context, hs []*held) error {
	t.mu.Lock()
	var msgs []Msg
	for _, h := range hs {
		delete(t.held, h.id)
		t.done.add(h.id)
		msgs = append(msgs, h.msgs...)
	}
	t.mu.Unlock()
	var first error
	for i, m := range msgs {
		var err error
		if i == len(msgs)-1 {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = m.DoubleAck(ctx)
			cancel()
		} else {
			err = m.Ack()
		}
		if err != nil && first == nil {
			first = err
		}
	}
	t.metrics.add(&t.metrics.acked, int64(len(hs)))
	return first
}

// ackNow acknowledges one event that is worth no message.
func (t *tracker) ackNow(msg Msg) {
	_ = msg.Ack()
	t.metrics.add(&t.metrics.acked, 1)
}

// giveBack returns events to the server for a later delivery: their
// message could be neither delivered nor dead-lettered, or notify is
// stopping.
func (t *tracker) giveBack(hs []*held, delay time.Duration) {
	t.mu.Lock()
	var msgs []Msg
	for _, h := range hs {
		if _, ok := t.held[h.id]; !ok {
			continue
		}
		delete(t.held, h.id)
		msgs = append(msgs, h.msgs...)
	}
	t.mu.Unlock()
	for _, m := range msgs {
		_ = m.NakWithDelay(delay)
	}
}

// giveBackAll gives back, at once, every event still held, and says how
// many: for a notifier that stopped, nothing holds them any more.
func (t *tracker) giveBackAll() int {
	t.mu.Lock()
	hs := make([]*held, 0, len(t.held))
	for _, h := range t.held {
		hs = append(hs, h)
	}
	t.mu.Unlock()
	t.giveBack(hs, 0)
	return len(hs)
}

func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.held)
}

// idSet is a bounded set of the latest ids.
type idSet struct {
	seen map[string]struct{}
	ring []string
	next int
}

func newIDSet(limit int) *idSet {
	return &idSet{seen: map[string]struct{}{}, ring: make([]string, 0, limit)}
}

func (s *idSet) has(id string) bool { _, ok := s.seen[id]; return ok }

func (s *idSet) add(id string) { s.push(id) }

// push adds id, and says which id it forgot to make room, if any.
func (s *idSet) push(id string) (evicted string, ok bool) {
	if s.has(id) {
		return "", false
	}
	if len(s.ring) < cap(s.ring) {
		s.ring = append(s.ring, id)
	} else {
		evicted, ok = s.ring[s.next], true
		delete(s.seen, evicted)
		s.ring[s.next] = id
		s.next = (s.next + 1) % len(s.ring)
	}
	s.seen[id] = struct{}{}
	return evicted, ok
}
