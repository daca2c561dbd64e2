package publisher_test

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/events"
)

// TestLongIDsAndTextsStayPublishable is the regression test of one long
// id closing the process's NATS connection: an invoke id of 3,000
// non-plain bytes escaped to a subject over the server's 4 KB control
// line, and a 2 MB errorInfo over its max_payload. Both are published,
// acknowledged, and the connection stays up.
func TestLongIDsAndTextsStayPublishable(t *testing.T) {
	stream := testenv.Name("CAPOLLER_TEST")
	prefix := strings.ToLower(stream)
	nc, js := testenv.NATS(t, testenv.NATSURL(t), stream)
	pub, err := publisher.New(js, publisher.Options{Stream: stream, SubjectPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.EnsureStream(t.Context()); err != nil {
		t.Fatal(err)
	}
	longID := strings.Repeat("é/.*", 750) // 3,750 bytes, 11,250 escaped
	long := transition(longID, "i-"+strings.Repeat("%", 1000), diff.StatusRunning, diff.StatusFailed)
	long.Record.ErrorInfo = strings.Repeat("ü", 1<<20) // 2 MB
	long.ID = diff.EventID(long)
	other := transition(longID+"x", "i-1", diff.StatusRunning, diff.StatusFailed)
	batch := []diff.Transition{long, other, transition("t-1", "", diff.StatusRunning, diff.StatusSuccess)}
	res, err := pub.Publish(t.Context(), batch)
	if err != nil || res.Published != 3 {
		t.Fatalf("publish: %+v, %v", res, err)
	}
	if nc.Status() != nats.CONNECTED {
		t.Fatalf("the connection is %v after publishing long ids", nc.Status())
	}
	sub, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sub.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.Subject) > 1024 {
		t.Errorf("subject of %d bytes", len(msg.Subject))
	}
	var ev publisher.Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Data.InvokeID != longID || ev.Data.InstanceID != long.Record.InstanceID {
		t.Error("the full ids are not in data")
	}
	if len(ev.Data.ErrorInfo) > publisher.MaxErrorInfo || !utf8.ValidString(ev.Data.ErrorInfo) ||
		!strings.Contains(ev.Data.ErrorInfo, "[cut ") || strings.Join(ev.Data.Truncated, ",") != "errorInfo" {
		t.Errorf("errorInfo of %d bytes, truncated %v", len(ev.Data.ErrorInfo), ev.Data.Truncated)
	}
	msg2, err := sub.GetMsg(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	if msg2.Subject == msg.Subject {
		t.Error("two long ids share a subject")
	}
}

func TestTokenBoundsAndStaysUnique(t *testing.T) {
	a := strings.Repeat("x.", 500)
	for _, s := range []string{a, a + "y", strings.Repeat("日", 200), strings.Repeat("a", events.MaxTokenLen+1)} {
		tok := events.Token(s)
		if len(tok) > events.MaxTokenLen || tok != events.Token(s) {
			t.Errorf("Token(%.20q…) = %q: %d bytes or not deterministic", s, tok, len(tok))
		}
		if !strings.Contains(tok, "%~") {
			t.Errorf("a hashed token %q carries no marker", tok)
		}
		if _, err := events.UnescapeToken(tok); err == nil {
			t.Errorf("UnescapeToken accepted the hashed %q", tok)
		}
	}
	if events.Token(a) == events.Token(a+"y") {
		t.Error("two long values share a token")
	}
	if got := events.Token(strings.Repeat("a", events.MaxTokenLen)); got != strings.Repeat("a", events.MaxTokenLen) {
		t.Errorf("a token at the limit was changed to %q", got)
	}
}

func TestMarshalWithinCutsTheLongestField(t *testing.T) {
	tr := transition(strings.Repeat("t", 300_000), "i-1", diff.StatusRunning, diff.StatusFailed)
	tr.Record.CommandName = strings.Repeat("n", 600_000)
	b, err := publisher.NewEvent(tr).MarshalWithin(200_000)
	if err != nil || len(b) > 200_000 {
		t.Fatalf("%d bytes, %v", len(b), err)
	}
	var ev publisher.Event
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(ev.Data.Truncated, ","), "commandName") || ev.ID != tr.ID {
		t.Errorf("truncated %v, id %q", ev.Data.Truncated, ev.ID)
	}
}

// FuzzToken checks subject tokens: bounded, made only of characters that
// cannot split or widen a subject, deterministic, and reversible whenever
// they were not hashed. The corpus is kept in testdata/fuzz/FuzzToken.
func FuzzToken(f *testing.F) {
	for _, s := range []string{"", "t-1", "a.b*c>d", "100%", "日本", strings.Repeat("%", 200), strings.Repeat("a", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := events.Token(s)
		if len(tok) > events.MaxTokenLen || tok != events.Token(s) {
			t.Fatalf("Token(%q) = %q", s, tok)
		}
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '%' || c == '~') {
				t.Fatalf("Token(%q) = %q holds %q", s, tok, c)
			}
		}
		if s != "" && tok == "" {
			t.Fatalf("Token(%q) is empty", s)
		}
		if len(events.EscapeToken(s)) <= events.MaxTokenLen {
			if back, err := events.UnescapeToken(tok); err != nil || back != s {
				t.Fatalf("round trip of %q: %q, %v", s, back, err)
			}
		}
	})
}

// TestAnOutputTooLargeForTheStreamKeepsItsEnd: a stream whose
// max_msg_size is 4 KB takes a failure whose output is 100 KB (an
// operator's --output-max-bytes of 512 KiB): the output is cut first,
// keeping its end, and named in truncated; the other texts are whole.
func TestAnOutputTooLargeForTheStreamKeepsItsEnd(t *testing.T) {
	stream := testenv.Name("CAPOLLER_TEST")
	prefix := strings.ToLower(stream)
	_, js := testenv.NATS(t, testenv.NATSURL(t), stream)
	pub, err := publisher.New(js, publisher.Options{Stream: stream, SubjectPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	cfg := pub.StreamConfig()
	cfg.MaxMsgSize = 4096
	if _, err := js.CreateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if err := pub.EnsureStream(t.Context()); err != nil {
		t.Fatal(err)
	}
	failed := transition("t-1", "i-1", diff.StatusRunning, diff.StatusFailed)
	failed.Record.Output = strings.Repeat("progress…\n", 10_000) + "ERROR: the disk is full\n"
	if _, err := pub.Publish(t.Context(), []diff.Transition{failed}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	s, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetMsg(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	var ev publisher.Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		t.Fatal(err)
	}
	d := ev.Data
	if len(msg.Data) > 4096 || !strings.HasPrefix(d.Output, "[cut ") || !strings.HasSuffix(d.Output, "ERROR: the disk is full\n") ||
		!utf8.ValidString(d.Output) || strings.Join(d.Truncated, ",") != "output" || d.ErrorInfo != failed.Record.ErrorInfo {
		t.Errorf("a %d-byte event: output of %d bytes ending %q, truncated %v, errorInfo %q", len(msg.Data), len(d.Output),
			d.Output[max(0, len(d.Output)-30):], d.Truncated, d.ErrorInfo)
	}
}
