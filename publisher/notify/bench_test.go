package notify_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/notify"
)

// benchClock is a manual clock whose timers fire as it is moved.
type benchClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []benchWaiter
}

type benchWaiter struct {
	at time.Time
	ch chan time.Time
}

func (c *benchClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *benchClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, benchWaiter{c.now.Add(d), ch})
	return ch
}

func (c *benchClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.ch <- c.now
	}
	c.waiters = kept
}

// benchMsg is an in-memory message.
type benchMsg struct {
	data  []byte
	acked *atomic.Int64
}

func (m benchMsg) Data() []byte                     { return m.data }
func (m benchMsg) Ack() error                       { m.acked.Add(1); return nil }
func (m benchMsg) DoubleAck(context.Context) error  { m.acked.Add(1); return nil }
func (m benchMsg) NakWithDelay(time.Duration) error { return nil }
func (m benchMsg) InProgress() error                { return nil }
func (m benchMsg) Term() error                      { return nil }

// benchHTTP answers every webhook with its service's success.
type benchHTTP struct{ posts sync.Map } // host → *atomic.Int64

func (h *benchHTTP) Do(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	n, _ := h.posts.LoadOrStore(r.URL.Host, new(atomic.Int64))
	n.(*atomic.Int64).Add(1)
	body := map[string]string{"dingtalk": `{"errcode":0,"errmsg":"ok"}`, "slack": "ok", "feishu": `{"code":0,"msg":"success"}`, "generic": ""}[r.URL.Host]
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(body)), Header: http.Header{}}, nil
}

func (h *benchHTTP) count(host string) int64 {
	n, ok := h.posts.Load(host)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

// BenchmarkNotify1000FailingInvocationsAMinute feeds notify, minute after
// minute of an injected clock, 1,000 failing invocations on 30 instances
// each (31,000 events a minute), for a DingTalk, a Slack, a Feishu and a
// generic webhook at their default limits. It reports the events handled
// per second of wall time and the messages each webhook was sent per
// minute of the clock. One iteration is one minute of events; it ends
// when every event of it is acknowledged.
func BenchmarkNotify1000FailingInvocationsAMinute(b *testing.B) {
	const perMinute, instances = 1000, 30
	env := map[string]string{"DT": "http://dingtalk/robot/send?access_token=x", "SLACK": "http://slack/services/x", "FS": "http://feishu/hook/x"}
	s, err := notify.ParseConfig([]byte(`
webhooks:
  - {name: dt, kind: dingtalk, url_env: DT, secret_env: DT}
  - {name: slack, kind: slack, url_env: SLACK}
  - {name: feishu, kind: feishu, url_env: FS}
  - {name: sink, kind: generic, url: "http://generic/hook"}
`), func(k string) string { return env[k] }, nil)
	if err != nil {
		b.Fatal(err)
	}
	clock := &benchClock{now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	hc := &benchHTTP{}
	n, err := notify.New(notify.Options{Settings: s, HTTP: hc, Now: clock.Now, After: clock.After})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.Start(ctx)
	defer func() { cancel(); n.Stop() }()
	var acked atomic.Int64
	step := time.Minute / perMinute
	var handled int64
	seq := 0
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		msgs := make([]benchMsg, 0, perMinute*(instances+1))
		for range perMinute {
			for _, tr := range failingInvocation("prod", "cn-hangzhou", fmt.Sprintf("t-%08d", seq), "deploy", instances, clock.Now()) {
				body, err := publisher.NewEvent(tr).Marshal()
				if err != nil {
					b.Fatal(err)
				}
				msgs = append(msgs, benchMsg{data: body, acked: &acked})
			}
			seq++
		}
		b.StartTimer()
		for i, m := range msgs {
			n.Handle(m)
			if (i+1)%(instances+1) == 0 { // an invocation a 60ms tick, as fetches would come
				clock.Advance(step)
				n.Sweep()
			}
		}
		handled += int64(len(msgs))
		// The minute's last groups settle; the webhooks drain.
		for acked.Load() < handled {
			clock.Advance(time.Second)
			n.Sweep()
			time.Sleep(100 * time.Microsecond) // let the webhook workers run
		}
	}
	b.StopTimer()
	minutes := clock.Now().Sub(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)).Minutes()
	b.ReportMetric(float64(handled)/b.Elapsed().Seconds(), "events/s")
	for _, h := range []string{"dingtalk", "slack", "feishu", "generic"} {
		b.ReportMetric(float64(hc.count(h))/minutes, h+"-msgs/min")
	}
	snap := n.Metrics().Snapshot()
	for name, w := range snap.Webhooks {
		if w.Covered != int64(seq) {
			b.Errorf("%s covered %d of %d invocations", name, w.Covered, seq)
		}
	}
	if hc.count("dingtalk") > int64(20*(minutes+1)) {
		b.Errorf("DingTalk was sent %d messages in %.1f minutes", hc.count("dingtalk"), minutes)
	}
}
