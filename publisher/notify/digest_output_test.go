package notify

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/events"
)

// digestSummaries are four invocations of a bad deploy, summarized as
// notify does: three failed on two instances each with the same ending
// (earlier lines differ), the fourth with two other outputs of its own,
// one of them missing.
func digestSummaries() []Summary {
	at := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	var sums []Summary
	for i, invoke := range []string{"t-a", "t-b", "t-c", "t-d"} {
		var instances []events.Event
		for j := range 2 {
			r := diff.Record{Key: diff.Key{InvokeID: invoke, InstanceID: fmt.Sprintf("i-%d%d", i, j)}, CommandID: "c-deploy", CommandName: "deploy",
				Status: diff.StatusFailed, Repeats: 1, ExitCode: 1, StartTime: at, FinishTime: at.Add(time.Minute)}
			switch {
			case i < 3:
				r.Output = fmt.Sprintf("pulling image for %s\n```sh\nrm -rf /var/lib/app <!channel> *_~&|\n```\nwrite /var/lib/app: no space left on device\n", r.InstanceID)
			case j == 0:
				r.Output = "\x1b[31mpanic: runtime error\x1b[0m\r\ngoroutine 1 [running]:\n"
			default:
				r.OutputMissing = true
			}
			instances = append(instances, publisher.NewEvent(diff.Transition{ID: fmt.Sprintf("e-%d%d", i, j), Account: "prod", Source: diff.SourceECS,
				Region: "cn-hangzhou", Previous: diff.StatusRunning, ObservedAt: at.Add(2 * time.Minute), Record: r}))
		}
		sums = append(sums, summarize(nil, instances, false, []string{"failures"}, []string{"e-" + invoke}))
	}
	return sums
}

// A digest shows a few outputs for all its invocations, each once with
// the instances and invocations that printed it, in each kind's block.
func TestDigestOutputGoldenPayloads(t *testing.T) {
	sums := digestSummaries()
	for _, w := range []Webhook{{Name: "dingtalk", Kind: KindDingTalk}, {Name: "slack-blocks", Kind: KindSlack, Blocks: true},
		{Name: "feishu-card", Kind: KindFeishu, Card: true}, {Name: "generic", Kind: KindGeneric}} {
		w.url = "http://127.0.0.1:1/hook"
		r, err := w.build(payload{summaries: sums, digest: true, maxItems: 20}, time.Date(2026, 12, 1, 3, 10, 0, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		Golden(t, "digest-output-"+w.Name+".json", r.body)
		body := string(r.body)
		if n := strings.Count(body, "no space left on device"); n != 1 && w.Kind != KindSlack && w.Kind != KindGeneric ||
			w.Kind == KindSlack && n != 2 { // Slack: the text and its section
			t.Errorf("%s: the shared output is shown %d times", w.Name, n)
		}
		if !strings.Contains(body, "6 instances of 3 invocations (t-a, t-b, t-c)") || strings.Contains(body, "pulling image") {
			t.Errorf("%s: the shared ending is not grouped, or shows more than its last lines:\n%s", w.Name, body)
		}
		if w.Kind == KindSlack && strings.Contains(body, "<!channel>") {
			t.Errorf("%s: a mention would ping", w.Name)
		}
	}
	w := Webhook{Name: "generic", Kind: KindGeneric, url: "http://127.0.0.1:1/hook"}
	r, _ := w.build(payload{summaries: sums, digest: true, maxItems: 20}, time.Now())
	var p struct {
		Summaries []Summary
		Outputs   []DigestOutput
	}
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Summaries {
		if len(s.Outputs) != 0 {
			t.Errorf("a digest's summary %s carries its outputs", s.InvokeID)
		}
	}
	if len(p.Outputs) != MaxDigestOutputs || p.Outputs[0].Count != 6 || p.Outputs[0].InvocationCount != 3 || !p.Outputs[0].Cut ||
		strings.Count(p.Outputs[0].Text, "\n") != MaxDigestOutputLines-1 {
		t.Errorf("the digest's outputs: %+v", p.Outputs)
	}
	if len(sums[0].Outputs) != 2 {
		t.Errorf("t-a's instances printed two outputs (their first lines differ), its summary has %+v", sums[0].Outputs)
	}
}

// A message's output is bounded: the last MaxOutputLines lines, at most
// MaxOutputBytes bytes, a long last line keeping its end; and a Slack
// section stays within its bound however much escaping grows the text.
func TestOutputBounds(t *testing.T) {
	var lines []string
	for i := range 50 {
		lines = append(lines, fmt.Sprintf("line %02d %s", i, strings.Repeat("x", 100)))
	}
	text, cut := excerpt(strings.Join(lines, "\n"), MaxOutputLines, MaxOutputBytes)
	if !cut || strings.Count(text, "\n") != MaxOutputLines-1 || !strings.HasSuffix(text, lines[49]) {
		t.Errorf("50 lines of 108 bytes: cut %v, %d lines", cut, strings.Count(text, "\n")+1)
	}
	lines = lines[:0]
	for i := range 50 {
		lines = append(lines, fmt.Sprintf("line %02d %s", i, strings.Repeat("x", 400)))
	}
	text, cut = excerpt(strings.Join(lines, "\n"), MaxOutputLines, MaxOutputBytes)
	if !cut || len(text) > MaxOutputBytes || !strings.HasSuffix(text, lines[49]) || strings.Count(text, "\n") != 2 {
		t.Errorf("50 lines of 408 bytes: cut %v, %d bytes, %d lines", cut, len(text), strings.Count(text, "\n")+1)
	}
	text, cut = excerpt(strings.Repeat("é", 2000)+"END", MaxOutputLines, MaxOutputBytes)
	if !cut || len(text) > MaxOutputBytes || !strings.HasPrefix(text, "…é") || !strings.HasSuffix(text, "éEND") {
		t.Errorf("one long line: cut %v, %d bytes, %.20q…", cut, len(text), text)
	}
	if text, cut := excerpt("ok\n", MaxOutputLines, MaxOutputBytes); text != "ok" || cut {
		t.Errorf("a short output: %q, cut %v", text, cut)
	}
	o := Output{Count: 1, Instances: []string{"i-1"}, Text: strings.Repeat("<&>", 500)}
	if s := fitOutput(o.block(), slackMrkdwn(), maxSlackSection); len(s) > maxSlackSection || !strings.HasSuffix(s, "&gt;\n```") {
		t.Errorf("a Slack section of %d bytes, ending %q", len(s), s[max(0, len(s)-20):])
	}
}

func TestBreakFencesAndMentions(t *testing.T) {
	for in, want := range map[string]string{"a ``` b": "a `\u200b`\u200b` b", "`x`": "`x`", "````": "`\u200b`\u200b`\u200b`"} {
		if got := breakFences(in); got != want {
			t.Errorf("breakFences(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{`<at user_id="all">`: "<\u200bat user_id=\"all\">", "<AT id=all>": "<\u200bAT id=all>", "<b>a<": "<b>a<"} {
		if got := breakMentions(in); got != want {
			t.Errorf("breakMentions(%q) = %q, want %q", in, got, want)
		}
	}
}
