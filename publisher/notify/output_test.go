package notify_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher/notify"
)

// hostileOutput is what a failing deploy printed: more lines than a
// message shows, colours, a progress bar redrawn with CRs, a NUL, a bidi
// override, backtick fences, markup characters and mentions of every
// service.
const hostileOutput = "step 1\nstep 2\nstep 3\nstep 4\nstep 5\n" +
	"\x1b[32mdownloading\x1b[0m 10%\rdownloading 100%\n" +
	"```\n**not bold** _not italic_ ~not struck~ a|b <b>not html</b> & &amp;\n" +
	"<!channel> <!here> <@U0123> @channel <at user_id=\"all\">everyone</at>\n" +
	"```\n" +
	"`inline` and ``double`` ticks\n" +
	"file \u202etxt.exe\u202c\x00\n" +
	"\x1b]0;pwned\x07\x1b[2J\x1b[1;1Hfake message\n" +
	"\tError: deploy step 14 failed\n"

// outputInvocation is one invocation failing on five instances: three
// printed the same (the hostile output, 1 KiB of it dropped by the API,
// delivered to OSS), one something else, one's output could not be read,
// and one printed a fourth output, beyond what a message shows.
func outputInvocation() []diff.Transition {
	inv := failingInvocation("prod", "cn-hangzhou", "t-out", "deploy", 6, t0)
	for i := range 6 {
		r := &inv[i].Record
		switch i {
		case 0, 1, 2:
			r.Output, r.OutputDropped, r.OutputURI = hostileOutput, 1024, "oss://ops-logs/capoller/t-out/"+r.InstanceID+".log"
		case 3:
			r.Output = "fatal: `rm -rf /data/*` refused\n"
		case 4:
			r.OutputMissing = true
		case 5:
			r.Output = "another ending\n"
		}
	}
	return inv
}

// A failing invocation's message shows its instances' output to every
// kind of webhook, safely: identical outputs once with their count, the
// last lines only, in a block the output cannot close, with no mention,
// markup or control character of the output taking effect.
func TestNotifyOutputGoldenPayloads(t *testing.T) {
	e := newEnv(t)
	clock := &manualClock{now: t0.Add(10 * time.Minute)}
	hooks := map[string]*hookStub{
		"dingtalk":     newHookStub(t, notify.KindDingTalk, clock.Now),
		"slack":        newHookStub(t, notify.KindSlack, clock.Now),
		"slack-blocks": newHookStub(t, notify.KindSlack, clock.Now),
		"feishu-text":  newHookStub(t, notify.KindFeishu, clock.Now),
		"feishu-card":  newHookStub(t, notify.KindFeishu, clock.Now),
		"generic":      newHookStub(t, notify.KindGeneric, clock.Now),
	}
	env := map[string]string{}
	var yaml strings.Builder
	yaml.WriteString("webhooks:\n")
	for name, h := range hooks {
		v := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		env[v] = h.srv.URL + "/hook"
		extra := ""
		switch name {
		case "slack-blocks":
			extra = ", blocks: true"
		case "feishu-card":
			extra = ", card: true"
		}
		fmt.Fprintf(&yaml, "  - {name: %s, kind: %s, url_env: %s%s}\n", name, h.kind, v, extra)
	}
	s := settings(t, yaml.String(), env)
	n, _, _ := e.start(t, s, notify.Options{Now: clock.Now})
	inv := outputInvocation()
	e.publish(t, inv)
	testenv.WaitFor(t, 10*time.Second, "the events to be read", func() error {
		if got := n.Metrics().Snapshot().Consumed; got != int64(len(inv)) {
			return fmt.Errorf("%d consumed", got)
		}
		return nil
	})
	clock.Advance(s.Settle)
	testenv.WaitFor(t, 10*time.Second, "one message per webhook", func() error {
		for name, h := range hooks {
			if got := len(h.received()); got != 1 {
				return fmt.Errorf("%s has %d messages", name, got)
			}
		}
		return nil
	})
	for name, h := range hooks {
		body := h.received()[0].Body
		notify.Golden(t, "output-"+name+".json", []byte(body))
		checkShownOutput(t, name, body)
	}

	var generic struct{ Summaries []notify.Summary }
	if err := json.Unmarshal([]byte(hooks["generic"].received()[0].Body), &generic); err != nil {
		t.Fatal(err)
	}
	sum := generic.Summaries[0]
	if len(sum.Outputs) != notify.MaxOutputs || sum.OtherOutputs != 1 || sum.OtherOutputInstances != 1 {
		t.Fatalf("generic summary outputs: %+v, %d others of %d instances", sum.Outputs, sum.OtherOutputs, sum.OtherOutputInstances)
	}
	o := sum.Outputs[0]
	if o.Count != 3 || strings.Join(o.Instances, ",") != "i-000,i-001,i-002" || !o.Cut || strings.Count(o.Text, "\n") != notify.MaxOutputLines-1 ||
		o.Dropped != 1024 || o.URI != "oss://ops-logs/capoller/t-out/i-000.log" {
		t.Errorf("the shared output: %+v", o)
	}
	if m := sum.Outputs[2]; !m.Missing || m.Text != "" || m.Instances[0] != "i-004" {
		t.Errorf("the missing output: %+v", m)
	}
}

// checkShownOutput checks what every kind must hold to: the texts of the
// body show the shared output once and no character of the output that
// could act (a control, a fence, a mention).
func checkShownOutput(t *testing.T, name, body string) {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var texts []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			texts = append(texts, v)
		case []any:
			for _, x := range v {
				walk(x)
			}
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	all := strings.Join(texts, "\n")
	for _, r := range all {
		if r < 0x20 && r != '\n' || r == 0x7f || r >= 0x80 && r < 0xa0 || r >= 0x202a && r <= 0x202e {
			t.Errorf("%s: the body holds %U", name, r)
		}
	}
	if !strings.Contains(all, "deploy step 14 failed") || !strings.Contains(all, "downloading 100%") || !strings.Contains(all, "␀") {
		t.Errorf("%s: the output's last lines are not shown:\n%s", name, all)
	}
	if strings.Contains(all, "step 4") {
		t.Errorf("%s: shows more than the last %d lines", name, notify.MaxOutputLines)
	}
	if strings.HasPrefix(name, "slack") && (strings.Contains(all, "<!channel>") || strings.Contains(all, "<!here>") || strings.Contains(all, "<@U0123>")) {
		t.Errorf("%s: a Slack mention would ping", name)
	}
	if strings.HasPrefix(name, "feishu") && strings.Contains(all, "<at user_id") {
		t.Errorf("%s: a Feishu mention would ping", name)
	}
	for _, text := range texts {
		if strings.Count(text, "fake message") > 1 {
			t.Errorf("%s: the identical output is shown more than once:\n%s", name, text)
		}
		if !strings.HasPrefix(name, "slack") && name != "dingtalk" {
			continue // no code block: plain text, each output line after "| ", or a plain_text element
		}
		// A fence opens and closes each code block on a line of its own:
		// the output holds no run of backticks that could end one.
		for line := range strings.Lines(text) {
			if strings.Contains(line, "``") && strings.TrimSpace(line) != "```" {
				t.Errorf("%s: the line %q holds a run of backticks", name, line)
			}
		}
	}
	if !strings.Contains(all, "3 instances (i-000, i-001, i-002)") || !strings.Contains(all, "output missing") ||
		!strings.Contains(all, "(1024 bytes dropped by the API)") || !strings.Contains(all, "oss://ops-logs/capoller/t-out/i-000.log") {
		t.Errorf("%s: the grouping, the missing output, the dropped bytes or the OSS uri are not shown:\n%s", name, all)
	}
}
