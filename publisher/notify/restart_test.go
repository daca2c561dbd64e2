package notify_test

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/capoller/capoller/poller/testenv"
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
