package notify_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher/notify"
)

// A bad deploy failing 200 invocations within a minute, against webhooks
// allowed 20 messages a minute: the first go one by one, the backlog goes
// as digests, no webhook ever exceeds its limit, and every invocation is
// in exactly one message of each webhook: nothing dropped.
func TestNotifyStormDigest(t *testing.T) {
	e := newEnv(t)
	clock := newFastClock(t0.Add(time.Hour), 60) // a minute is a second
	gen, dt := newHookStub(t, notify.KindGeneric, clock.Now), newHookStub(t, notify.KindDingTalk, clock.Now)
	s := settings(t, `
webhooks:
  - {name: sink, kind: generic, url_env: GEN, limits: [{messages: 20, per: 1m}]}
  - {name: dt, kind: dingtalk, url_env: DT, digest_items: 10}
`, map[string]string{"GEN": gen.srv.URL, "DT": dt.srv.URL})
	n, _, _ := e.start(t, s, notify.Options{Now: clock.Now, After: clock.After})

	const invocations = 200
	var all []diff.Transition
	for i := range invocations {
		command := "deploy"
		if i%4 == 3 {
			command = "migrate"
		}
		all = append(all, failingInvocation("prod", "cn-hangzhou", fmt.Sprintf("t-%03d", i), command, 30, t0)...)
	}
	began := clock.Now()
	e.publish(t, all)
	t.Logf("published %d events in %v of the fast clock", len(all), clock.Now().Sub(began))

	testenv.WaitFor(t, 60*time.Second, "every invocation notified on both webhooks and every event acked", func() error {
		snap := n.Metrics().Snapshot()
		for _, name := range []string{"sink", "dt"} {
			if c := snap.Webhooks[name].Covered; c != invocations {
				return fmt.Errorf("%s covered %d invocations", name, c)
			}
		}
		if pending, ack := e.consumerState(t); pending != 0 || ack != 0 {
			return fmt.Errorf("%d pending, %d unacknowledged", pending, ack)
		}
		return nil
	})

	// Generic: every invocation exactly once, in singles and digests.
	seen := map[string]int{}
	digests := 0
	for _, r := range gen.received() {
		var p struct {
			Type      string
			Summaries []notify.Summary
		}
		if err := json.Unmarshal([]byte(r.Body), &p); err != nil {
			t.Fatal(err)
		}
		if p.Type == "digest" {
			digests++
		}
		for _, s := range p.Summaries {
			seen[s.InvokeID]++
			if s.Failed != 30 || len(s.EventIDs) != 31 {
				t.Errorf("%s: %d failed, %d events", s.InvokeID, s.Failed, len(s.EventIDs))
			}
		}
	}
	for i := range invocations {
		if id := fmt.Sprintf("t-%03d", i); seen[id] != 1 {
			t.Errorf("%s is in %d messages", id, seen[id])
		}
	}
	if digests == 0 {
		t.Error("no digest in a storm")
	}
	t.Logf("generic webhook: %d messages, %d digests; DingTalk: %d messages", len(gen.received()), digests, len(dt.received()))

	// DingTalk: bounded digests that count what they do not list; the
	// listed and the counted add up to every invocation.
	total := 0
	more := regexp.MustCompile(`… and (\d+) more: `)
	for _, r := range dt.received() {
		var p struct{ Markdown struct{ Title, Text string } }
		if err := json.Unmarshal([]byte(r.Body), &p); err != nil {
			t.Fatal(err)
		}
		if len(p.Markdown.Text) > 4000 {
			t.Errorf("a DingTalk message of %d bytes", len(p.Markdown.Text))
		}
		listed := strings.Count(p.Markdown.Text, "\n- ")
		if !strings.Contains(p.Markdown.Title, "failing invocations") {
			total++ // a single invocation's message
			continue
		}
		total += listed
		if m := more.FindStringSubmatch(p.Markdown.Text); m != nil {
			k, _ := strconv.Atoi(m[1])
			total += k
			if !regexp.MustCompile(`\d+ × (deploy|migrate) Failed`).MatchString(p.Markdown.Text) {
				t.Errorf("the digest does not count the rest by command:\n%s", p.Markdown.Text)
			}
		}
	}
	if total != invocations {
		t.Errorf("DingTalk messages account for %d invocations, want %d", total, invocations)
	}

	// Neither webhook ever exceeded 20 messages in a minute.
	for _, h := range []*hookStub{gen, dt} {
		got := h.received()
		for i := 20; i < len(got); i++ {
			if gap := got[i].At.Sub(got[i-20].At); gap < time.Minute {
				t.Errorf("%s: 21 messages within %v", h.kind, gap)
			}
		}
	}
	// Once the storm is over, one message per invocation again.
	before := len(gen.received())
	e.publish(t, failingInvocation("prod", "cn-hangzhou", "t-after", "deploy", 30, t0))
	testenv.WaitFor(t, 30*time.Second, "the next failure alone", func() error {
		if got := gen.received(); len(got) != before+1 {
			return fmt.Errorf("%d messages after the storm", len(got)-before)
		}
		return nil
	})
	if last := gen.received()[before]; !strings.Contains(last.Body, `"type":"invocation"`) || !strings.Contains(last.Body, `"invokeId":"t-after"`) {
		t.Errorf("after the storm: %.200s", last.Body)
	}
}
