package notify_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/notify"
)

// manualClock stands still until the test moves it.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fastClock runs speed times faster than the wall clock.
type fastClock struct {
	base, start time.Time
	speed       time.Duration
}

func newFastClock(base time.Time, speed int) *fastClock {
	return &fastClock{base: base, start: time.Now(), speed: time.Duration(speed)}
}

func (c *fastClock) Now() time.Time { return c.base.Add(time.Since(c.start) * c.speed) }
func (c *fastClock) After(d time.Duration) <-chan time.Time {
	return time.After(d / c.speed)
}

// received is one POST a stub webhook took.
type received struct {
	Query url.Values
	Body  string
	At    time.Time
}

// hookStub stands in for a chat service: it records every POST it
// answers with success, and answers as the service does.
type hookStub struct {
	t       *testing.T
	srv     *httptest.Server
	kind    string
	now     func() time.Time
	mu      sync.Mutex
	calls   int
	got     []received
	respond func(call int, w http.ResponseWriter) bool // nil: success; false: not accepted
}

func newHookStub(t *testing.T, kind string, now func() time.Time) *hookStub {
	h := &hookStub{t: t, kind: kind, now: now}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.calls++
		call, respond := h.calls, h.respond
		h.mu.Unlock()
		if r.Method != http.MethodPost || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s webhook: %s with Content-Type %q", kind, r.Method, r.Header.Get("Content-Type"))
		}
		if respond != nil && !respond(call, w) {
			return
		}
		h.mu.Lock()
		h.got = append(h.got, received{Query: r.URL.Query(), Body: string(body), At: h.now()})
		h.mu.Unlock()
		switch kind {
		case notify.KindDingTalk:
			_, _ = io.WriteString(w, `{"errcode":0,"errmsg":"ok"}`)
		case notify.KindFeishu:
			_, _ = io.WriteString(w, `{"code":0,"data":{},"msg":"success"}`)
		case notify.KindSlack:
			_, _ = io.WriteString(w, "ok")
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookStub) received() []received {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]received(nil), h.got...)
}

func (h *hookStub) callCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls
}

// env is one test's NATS stream and publisher.
type env struct {
	url, stream, prefix string
	nc                  *nats.Conn
	js                  jetstream.JetStream
	pub                 *publisher.NATS
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{url: testenv.NATSURL(t), stream: testenv.Name("NOTIFY")}
	e.prefix = strings.ToLower(e.stream)
	e.nc, e.js = testenv.NATS(t, e.url, e.stream)
	pub, err := publisher.New(e.js, publisher.Options{Stream: e.stream, SubjectPrefix: e.prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.EnsureStream(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.pub = pub
	return e
}

func (e *env) publish(t *testing.T, ts []diff.Transition) {
	t.Helper()
	for len(ts) > 0 {
		n := min(len(ts), 500)
		if _, err := e.pub.Publish(t.Context(), ts[:n]); err != nil {
			t.Fatal(err)
		}
		ts = ts[n:]
	}
}

// start runs a notifier on the env's stream until the test ends, with
// its delivery log in the durable's key-value bucket (as the command has
// it) unless opts has one.
func (e *env) start(t *testing.T, s *notify.Settings, opts notify.Options) (*notify.Notifier, context.CancelFunc, chan struct{}) {
	t.Helper()
	cons, err := notify.EnsureConsumer(t.Context(), e.js, notify.ConsumerOptions{Stream: e.stream, SubjectPrefix: e.prefix, Durable: "notify", Settings: s})
	if err != nil {
		t.Fatal(err)
	}
	if opts.Delivered == nil {
		log, err := notify.NewKVDeliveryLog(t.Context(), e.js, notify.KVDeliveryLogOptions{Bucket: notify.DeliveredBucket(e.stream, "notify")})
		if err != nil {
			t.Fatal(err)
		}
		opts.Delivered = log
	}
	opts.Settings = s
	n, err := notify.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = n.Run(ctx, cons) }()
	t.Cleanup(func() { cancel(); <-done })
	return n, cancel, done
}

// failingInvocation is one invocation failing on n instances: every tenth
// timed out, the others failed with exit code 3; the aggregate comes last.
func failingInvocation(account, region, invokeID, command string, n int, t0 time.Time) []diff.Transition {
	var out []diff.Transition
	observed := t0.Add(2 * time.Minute)
	for i := range n {
		status, code := diff.StatusFailed, "ExitCodeNonzero"
		if i%10 == 0 {
			status, code = diff.StatusTimeout, "InvocationTimeout"
		}
		tr := diff.Transition{Account: account, Source: diff.SourceECS, Region: region, Previous: diff.StatusRunning,
			PreviousObservedAt: t0, ObservedAt: observed, Record: diff.Record{
				Key: diff.Key{InvokeID: invokeID, InstanceID: fmt.Sprintf("i-%03d", i)}, CommandID: "c-" + command, CommandName: command,
				Status: status, Repeats: 1, ExitCode: 3, ErrorCode: code, ErrorInfo: "the command execution exit code is not zero\nsee the output",
				StartTime: t0, FinishTime: t0.Add(time.Minute + time.Duration(i)*time.Second)}}
		tr.ID = diff.EventID(tr)
		out = append(out, tr)
	}
	agg := diff.Transition{Account: account, Source: diff.SourceECS, Region: region, Previous: diff.StatusRunning,
		PreviousObservedAt: t0, ObservedAt: observed, Record: diff.Record{Key: diff.Key{InvokeID: invokeID},
			CommandID: "c-" + command, CommandName: command, Status: diff.StatusFailed}}
	agg.ID = diff.EventID(agg)
	return append(out, agg)
}

// consumerState is the durable consumer's pending and unacknowledged counts.
func (e *env) consumerState(t *testing.T) (pending uint64, ackPending int) {
	t.Helper()
	c, err := e.js.Consumer(t.Context(), e.stream, "notify")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumPending, info.NumAckPending
}

// httptestRecorder is the notifier's metrics as /metrics serves them.
func httptestRecorder(n *notify.Notifier) string {
	reg := prometheus.NewRegistry()
	reg.MustRegister(n.Metrics())
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}
