package notify_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher/notify"
)

var t0 = time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)

func settings(t *testing.T, yaml string, env map[string]string) *notify.Settings {
	t.Helper()
	s, err := notify.ParseConfig([]byte(yaml), func(k string) string { return env[k] }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// One invocation failing on 30 instances, then its Failed aggregate, is
// one message to each kind of webhook, with the payloads and signatures
// each service documents.
func TestNotifyOneMessagePerFailingInvocation(t *testing.T) {
	e := newEnv(t)
	clock := &manualClock{now: t0.Add(10 * time.Minute)}
	dt, sl, fs, gen := newHookStub(t, notify.KindDingTalk, clock.Now), newHookStub(t, notify.KindSlack, clock.Now),
		newHookStub(t, notify.KindFeishu, clock.Now), newHookStub(t, notify.KindGeneric, clock.Now)
	s := settings(t, `
webhooks:
  - {name: dt, kind: dingtalk, url_env: DT_URL, secret_env: DT_SECRET}
  - {name: slack, kind: slack, url_env: SLACK_URL}
  - {name: feishu, kind: feishu, url_env: FS_URL, secret_env: FS_SECRET}
  - {name: sink, kind: generic, url_env: GEN_URL}
`, map[string]string{"DT_URL": dt.srv.URL + "/robot/send?access_token=tok", "DT_SECRET": "SECdingtalk", "SLACK_URL": sl.srv.URL + "/services/T/B/x",
		"FS_URL": fs.srv.URL + "/open-apis/bot/v2/hook/abc", "FS_SECRET": "feishu-secret", "GEN_URL": gen.srv.URL + "/hook"})
	n, _, _ := e.start(t, s, notify.Options{Now: clock.Now})

	inv := failingInvocation("prod", "cn-hangzhou", "t-1", "deploy", 30, t0)
	e.publish(t, inv)
	testenv.WaitFor(t, 10*time.Second, "the 31 events to be read", func() error {
		if got := n.Metrics().Snapshot().Consumed; got != 31 {
			return fmt.Errorf("%d consumed", got)
		}
		return nil
	})
	for _, h := range []*hookStub{dt, sl, fs, gen} {
		if got := h.callCount(); got != 0 {
			t.Fatalf("%s posted before the group settled: %d", h.kind, got)
		}
	}
	clock.Advance(s.Settle) // the aggregate came: the group is sent once it settles
	sendAt := clock.Now()
	testenv.WaitFor(t, 10*time.Second, "one message per webhook and every event acked", func() error {
		for _, h := range []*hookStub{dt, sl, fs, gen} {
			if got := len(h.received()); got != 1 {
				return fmt.Errorf("%s has %d messages", h.kind, got)
			}
		}
		if pending, ack := e.consumerState(t); pending != 0 || ack != 0 {
			return fmt.Errorf("%d pending, %d unacknowledged", pending, ack)
		}
		return nil
	})

	text := "**deploy (c-deploy) Failed**\n\n30 instances failed: 27 Failed, 3 Timeout\n\naccount prod · ecs cn-hangzhou · invocation t-1\n\n" +
		"ran 1m29s, 2026-12-01T03:00:00Z → 2026-12-01T03:01:29Z\n\n" +
		"- i-000 Timeout exit 3: InvocationTimeout: the command execution exit code is not zero…\n" +
		"- i-001 Failed exit 3: ExitCodeNonzero: the command execution exit code is not zero…\n" +
		"- i-002 Failed exit 3: ExitCodeNonzero: the command execution exit code is not zero…\n- … and 27 more"

	// DingTalk: markdown, signed in the query: timestamp in ms, sign the
	// base64 HMAC-SHA256 keyed with the secret over timestamp+"\n"+secret.
	got := dt.received()[0]
	wantDT := `{"msgtype":"markdown","markdown":{"title":"capoller: deploy Failed","text":` + jsonString(text) + `}}`
	if got.Body != wantDT {
		t.Errorf("DingTalk body:\n got %s\nwant %s", got.Body, wantDT)
	}
	ms := strconv.FormatInt(sendAt.UnixMilli(), 10)
	mac := hmac.New(sha256.New, []byte("SECdingtalk"))
	mac.Write([]byte(ms + "\nSECdingtalk"))
	if q := got.Query; q.Get("access_token") != "tok" || q.Get("timestamp") != ms || q.Get("sign") != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
		t.Errorf("DingTalk query %v: want timestamp %s and its signature", q, ms)
	}

	// Slack: mrkdwn text.
	slackText := strings.ReplaceAll(strings.ReplaceAll(text, "**deploy (c-deploy) Failed**", "*deploy (c-deploy) Failed*"), "\n- ", "\n• ")
	slackText = strings.Replace(slackText, "\n\n- i-000", "\n\n• i-000", 1)
	if got, want := sl.received()[0].Body, `{"text":`+jsonString(slackText)+`}`; got != want {
		t.Errorf("Slack body:\n got %s\nwant %s", got, want)
	}

	// Feishu: text, signed in the body: timestamp in s, sign the base64
	// HMAC-SHA256 keyed with timestamp+"\n"+secret over nothing.
	secs := strconv.FormatInt(sendAt.Unix(), 10)
	fmac := hmac.New(sha256.New, []byte(secs+"\nfeishu-secret"))
	plain := "[capoller] " + strings.Replace(text, "**deploy (c-deploy) Failed**", "deploy (c-deploy) Failed", 1)
	wantFS := `{"timestamp":"` + secs + `","sign":"` + base64.StdEncoding.EncodeToString(fmac.Sum(nil)) + `","msg_type":"text","content":{"text":` + jsonString(plain) + `}}`
	if got := fs.received()[0].Body; got != wantFS {
		t.Errorf("Feishu body:\n got %s\nwant %s", got, wantFS)
	}

	// Generic: the summary as JSON, every event id with it.
	var generic struct {
		Type, Title, Text string
		Summaries         []notify.Summary
	}
	if err := json.Unmarshal([]byte(gen.received()[0].Body), &generic); err != nil {
		t.Fatal(err)
	}
	sum := generic.Summaries[0]
	if generic.Type != "invocation" || len(generic.Summaries) != 1 || sum.InvokeID != "t-1" || sum.Failed != 30 || sum.Status != diff.StatusFailed ||
		len(sum.EventIDs) != 31 || sum.Duration() != 89*time.Second || sum.ByStatus[0].Count != 27 || sum.Account != "prod" {
		t.Errorf("generic payload: %+v", generic)
	}
	ids := map[string]bool{}
	for _, id := range sum.EventIDs {
		ids[id] = true
	}
	for _, tr := range inv {
		if !ids[tr.ID] {
			t.Errorf("event %s is not in the summary", tr.ID)
		}
	}
	snap := n.Metrics().Snapshot()
	if snap.Acked != 31 || snap.Webhooks["dt"].Sent != 1 || snap.Webhooks["sink"].Covered != 1 {
		t.Errorf("metrics: %+v", snap)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return strings.NewReplacer(`\u003c`, "<", `\u003e`, ">", `\u0026`, "&").Replace(string(b))
}

// Instance failures whose aggregate never comes are sent, grouped, when
// the window ends; an invocation someone stopped is no message at all.
func TestNotifyWindowAndIgnoredOutcomes(t *testing.T) {
	e := newEnv(t)
	clock := &manualClock{now: t0.Add(10 * time.Minute)}
	gen := newHookStub(t, notify.KindGeneric, clock.Now)
	s := settings(t, "group_window: 1m\nwebhooks: [{name: sink, kind: generic, url_env: U}]\n", map[string]string{"U": gen.srv.URL})
	n, _, _ := e.start(t, s, notify.Options{Now: clock.Now})

	orphan := failingInvocation("prod", "cn-hangzhou", "t-orphan", "backup", 5, t0)
	e.publish(t, orphan[:5]) // no aggregate
	stopped := failingInvocation("prod", "cn-hangzhou", "t-stopped", "backup", 3, t0)
	for i := range stopped[:3] {
		stopped[i].Record.Status = diff.StatusCancelled
		stopped[i].ID = diff.EventID(stopped[i])
	}
	agg := &stopped[3]
	agg.Record.Status = diff.StatusStopped
	agg.ID = diff.EventID(*agg)
	e.publish(t, stopped)
	testenv.WaitFor(t, 10*time.Second, "the events to be read", func() error {
		if got := n.Metrics().Snapshot().Consumed; got != 9 {
			return fmt.Errorf("%d consumed", got)
		}
		return nil
	})
	clock.Advance(30 * time.Second)
	if got := gen.callCount(); got != 0 {
		t.Fatalf("%d posts within the window", got)
	}
	clock.Advance(31 * time.Second)
	testenv.WaitFor(t, 10*time.Second, "the orphan group's message", func() error {
		if len(gen.received()) != 1 {
			return fmt.Errorf("%d messages", len(gen.received()))
		}
		if _, ack := e.consumerState(t); ack != 0 {
			return fmt.Errorf("%d unacknowledged", ack)
		}
		return nil
	})
	var p struct{ Summaries []notify.Summary }
	_ = json.Unmarshal([]byte(gen.received()[0].Body), &p)
	if s := p.Summaries[0]; s.InvokeID != "t-orphan" || s.Failed != 5 || s.Status != "" {
		t.Errorf("summary %+v", s)
	}
	if snap := n.Metrics().Snapshot(); snap.Ignored != 4 || snap.Acked != 9 {
		t.Errorf("metrics %+v", snap)
	}
}

// A webhook answering 500 or 429 is retried; one that never recovers is
// dead-lettered, with the summary, the event ids and the last error.
func TestNotifyRetriesThenDeadLetters(t *testing.T) {
	e := newEnv(t)
	flaky := newHookStub(t, notify.KindSlack, time.Now)
	flaky.respond = func(call int, w http.ResponseWriter) bool {
		switch call {
		case 1:
			http.Error(w, "oops", http.StatusInternalServerError)
			return false
		case 2:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "rate_limited", http.StatusTooManyRequests)
			return false
		}
		return true
	}
	broken := newHookStub(t, notify.KindDingTalk, time.Now)
	broken.respond = func(call int, w http.ResponseWriter) bool {
		if call%2 == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		} else {
			w.WriteHeader(http.StatusTooManyRequests)
		}
		return false
	}
	dead := e.prefix + "-notify.dead"
	sub, err := e.nc.SubscribeSync(dead)
	if err != nil {
		t.Fatal(err)
	}
	s := settings(t, `
webhooks:
  - {name: flaky, kind: slack, url_env: FLAKY, retry: {initial: 10ms, max_interval: 50ms}}
  - {name: broken, kind: dingtalk, url_env: BROKEN, retry: {initial: 10ms, max_interval: 20ms, max_attempts: 4}}
`, map[string]string{"FLAKY": flaky.srv.URL, "BROKEN": broken.srv.URL})
	dl, err := notify.NewNATSDeadLetter(t.Context(), e.nc, e.js, dead)
	if err != nil {
		t.Fatal(err)
	}
	if dl.Stream() != "" {
		t.Fatalf("no stream should capture %s, %s does", dead, dl.Stream())
	}
	n, _, _ := e.start(t, s, notify.Options{DeadLetter: dl})
	inv := failingInvocation("prod", "cn-hangzhou", "t-dead", "deploy", 30, t0)
	e.publish(t, inv)

	msg, err := sub.NextMsg(15 * time.Second)
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	var d notify.DeadLetter
	if err := json.Unmarshal(msg.Data, &d); err != nil {
		t.Fatal(err)
	}
	if d.Webhook != "broken" || d.Kind != notify.KindDingTalk || d.Attempts != 4 || len(d.EventIDs) != 31 || d.Summary.InvokeID != "t-dead" ||
		d.Summary.Failed != 30 || !strings.Contains(d.Error, "HTTP 429") {
		t.Errorf("dead letter %+v", d)
	}
	if strings.Contains(string(msg.Data), broken.srv.URL) {
		t.Error("the dead letter quotes the webhook URL")
	}
	testenv.WaitFor(t, 15*time.Second, "the flaky webhook to take the message and every event acked", func() error {
		if got := len(flaky.received()); got != 1 {
			return fmt.Errorf("%d messages", got)
		}
		if _, ack := e.consumerState(t); ack != 0 {
			return fmt.Errorf("%d unacknowledged", ack)
		}
		return nil
	})
	if _, err := sub.NextMsg(100 * time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Errorf("a second dead letter: %v", err)
	}
	snap := n.Metrics().Snapshot()
	if b := snap.Webhooks["broken"]; b.DeadLettered != 1 || b.AttemptsFailed != 4 || b.Retries != 3 || b.Sent != 0 {
		t.Errorf("broken webhook metrics %+v", b)
	}
	if f := snap.Webhooks["flaky"]; f.Sent != 1 || f.Retries != 2 || f.DeadLettered != 0 {
		t.Errorf("flaky webhook metrics %+v", f)
	}
	rec := httptestRecorder(n)
	if !strings.Contains(rec, `capoller_notify_dead_lettered_total{kind="dingtalk",webhook="broken"} 1`) {
		t.Errorf("the metric does not count the dead letter:\n%s", rec)
	}
}
