package notify_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/notify"
)

// goodAndSlow is two generic webhooks: good accepts every post, slow
// answers 503 until healthy is set.
func goodAndSlow(t *testing.T) (good, slow *hookStub, healthy *atomic.Bool) {
	good = newHookStub(t, notify.KindGeneric, time.Now)
	slow = newHookStub(t, notify.KindGeneric, time.Now)
	healthy = new(atomic.Bool)
	slow.respond = func(_ int, w http.ResponseWriter) bool {
		if healthy.Load() {
			return true
		}
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return false
	}
	return good, slow, healthy
}

// goodAndSlowSettings sends every message to both; slow retries only
// after an hour, so a test stops notify while slow waits to retry.
func goodAndSlowSettings(t *testing.T, good, slow *hookStub, extra string) *notify.Settings {
	return settings(t, `
settle: 10ms
`+extra+`
webhooks:
  - {name: good, kind: generic, url_env: GOOD}
  - {name: slow, kind: generic, url_env: SLOW, retry: {initial: 1h, max_interval: 2h, max_elapsed: 100h}}
`, map[string]string{"GOOD": good.srv.URL, "SLOW": slow.srv.URL})
}

// stopWhileSlowRetries runs a notifier until good accepted the message of
// one failing invocation and slow refused it once, then stops it
// gracefully (a deploy, a restart).
func stopWhileSlowRetries(t *testing.T, e *env, s *notify.Settings, good, slow *hookStub) {
	n, stop, done := e.start(t, s, notify.Options{Logger: zaptest.NewLogger(t)})
	e.publish(t, failingInvocation("prod", "cn-hangzhou", "t-1", "deploy", 3, t0))
	testenv.WaitFor(t, 15*time.Second, "the good webhook's message and the slow one's first refusal", func() error {
		if g, c := len(good.received()), slow.callCount(); g != 1 || c != 1 {
			return fmt.Errorf("good has %d messages, slow %d calls", g, c)
		}
		return nil
	})
	stop()
	<-done
	t.Logf("first notifier: %+v", n.Metrics().Snapshot())
}

// waitSlowDelivered waits for the slow webhook's one message and every
// event acknowledged.
func waitSlowDelivered(t *testing.T, e *env, n *notify.Notifier, slow *hookStub, within time.Duration) {
	defer func() {
		t.Logf("second notifier: %+v; slow calls %d; consumer %v", n.Metrics().Snapshot(), slow.callCount(), fmt.Sprint(e.consumerState(t)))
	}()
	testenv.WaitFor(t, within, "the slow webhook's message and every event acked", func() error {
		if got := len(slow.received()); got != 1 {
			return fmt.Errorf("slow has %d messages", got)
		}
		if _, ack := e.consumerState(t); ack != 0 {
			return fmt.Errorf("%d unacknowledged", ack)
		}
		return nil
	})
}

// A graceful stop hands every held event back at once: the next notifier
// gets them without waiting for the ack wait (30s here). Workers that
// ended before the last fetch did would have handed their job back into
// that fetch, which grouped the events again and queued them for workers
// already gone, where they stayed until the ack wait ran out.
func TestNotifyGracefulStopHandsEventsBackAtOnce(t *testing.T) {
	e := newEnv(t)
	good, slow, healthy := goodAndSlow(t)
	s := goodAndSlowSettings(t, good, slow, "ack_wait: 30s")
	stopWhileSlowRetries(t, e, s, good, slow)
	healthy.Store(true)
	n, _, _ := e.start(t, s, notify.Options{})
	waitSlowDelivered(t, e, n, slow, 15*time.Second)
}

// One invocation's message goes to two webhooks; the first accepts it,
// the second is waiting to retry when notify is stopped. Every event is
// handed back, as the second webhook is not done; the next notifier posts
// to the second only: the first is done with those events, as its
// delivery log (the durable's key-value bucket) says.
func TestNotifyRestartDoesNotPostAgainWhereAccepted(t *testing.T) {
	e := newEnv(t)
	good, slow, healthy := goodAndSlow(t)
	s := goodAndSlowSettings(t, good, slow, "ack_wait: 1s")
	stopWhileSlowRetries(t, e, s, good, slow)
	healthy.Store(true)
	n, _, _ := e.start(t, s, notify.Options{})
	waitSlowDelivered(t, e, n, slow, 15*time.Second)
	if got := len(good.received()); got != 1 {
		t.Errorf("the good webhook got %d messages for one invocation, want 1", got)
	}
	if got := n.Metrics().Snapshot().Webhooks["good"].Skipped; got != 1 {
		t.Errorf("the second notifier skipped %d messages for the good webhook, want 1", got)
	}
}

// fakeMsg is an in-memory message that counts its acks and naks.
type fakeMsg struct {
	data       []byte
	acks, naks *atomic.Int64
}

func (m fakeMsg) Data() []byte                     { return m.data }
func (m fakeMsg) Ack() error                       { m.acks.Add(1); return nil }
func (m fakeMsg) DoubleAck(context.Context) error  { m.acks.Add(1); return nil }
func (m fakeMsg) NakWithDelay(time.Duration) error { m.naks.Add(1); return nil }
func (m fakeMsg) InProgress() error                { return nil }
func (m fakeMsg) Term() error                      { return nil }

// failingOnce is a dead-letter store whose first publish fails.
type failingOnce struct {
	mu    sync.Mutex
	calls int
	kept  []notify.DeadLetter
}

func (d *failingOnce) DeadLetter(_ context.Context, r notify.DeadLetter) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if d.calls == 1 {
		return errors.New("no responders")
	}
	d.kept = append(d.kept, r)
	return nil
}

func (d *failingOnce) state() (calls, kept int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls, len(d.kept)
}

// One webhook accepts the message, the other refuses it for good and its
// dead-letter publish fails: the events are handed back (to come again a
// minute later). Redelivered, they are dead-lettered for the second
// webhook, and not posted again to the first.
func TestNotifyDeadLetterFailureDoesNotPostAgainWhereAccepted(t *testing.T) {
	good := newHookStub(t, notify.KindGeneric, time.Now)
	bad := newHookStub(t, notify.KindGeneric, time.Now)
	bad.respond = func(_ int, w http.ResponseWriter) bool {
		http.Error(w, "no such hook", http.StatusNotFound)
		return false
	}
	s := settings(t, `
settle: 10ms
webhooks:
  - {name: good, kind: generic, url_env: GOOD}
  - {name: bad, kind: generic, url_env: BAD}
`, map[string]string{"GOOD": good.srv.URL, "BAD": bad.srv.URL})
	dead := &failingOnce{}
	n, err := notify.New(notify.Options{Settings: s, DeadLetter: dead, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.Start(ctx)
	defer func() { cancel(); n.Stop() }()
	var acks, naks atomic.Int64
	var msgs []fakeMsg
	for _, tr := range failingInvocation("prod", "cn-hangzhou", "t-1", "deploy", 3, t0) {
		body, err := publisher.NewEvent(tr).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, fakeMsg{data: body, acks: &acks, naks: &naks})
	}
	deliver := func(what string, cond func() error) {
		for _, m := range msgs {
			n.Handle(m)
		}
		testenv.WaitFor(t, 10*time.Second, what, func() error { n.Sweep(); return cond() })
	}
	deliver("good's message, bad's refusal and every event handed back", func() error {
		if g, calls, k := len(good.received()), bad.callCount(), naks.Load(); g != 1 || calls != 1 || k != int64(len(msgs)) {
			return fmt.Errorf("good has %d messages, bad %d calls, %d events handed back", g, calls, k)
		}
		return nil
	})
	deliver("the redelivered events dead-lettered for bad and acknowledged", func() error {
		if calls, kept := dead.state(); calls != 2 || kept != 1 {
			return fmt.Errorf("%d dead-letter publishes, %d kept", calls, kept)
		}
		if a := acks.Load(); a != int64(len(msgs)) {
			return fmt.Errorf("%d of %d acknowledged", a, len(msgs))
		}
		return nil
	})
	if got := len(good.received()); got != 1 {
		t.Errorf("the good webhook got %d messages for one invocation, want 1", got)
	}
}
