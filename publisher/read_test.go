package publisher_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/events"
)

// TestReadStreamEndsAtTheLastMessage: ReadStream reads the stream's events
// in order, skips what is not an event, filters by subject, and ends with
// the message that was last when it began, though more keep coming.
func TestReadStreamEndsAtTheLastMessage(t *testing.T) {
	es := testenv.NewEventStream(t, testenv.NATSURL(t), "CAPOLLER_READ")
	js, pub, stream, prefix := es.JS, es.Pub, es.Name, es.Prefix
	var batch []diff.Transition
	for i := range 25 {
		batch = append(batch, transition(fmt.Sprintf("t-%02d", i), "i-1", diff.StatusRunning, diff.StatusSuccess))
	}
	if _, err := pub.Publish(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(t.Context(), prefix+".ecs.cn-hangzhou.instance.success.x", []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	var got []string
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	err := publisher.ReadStream(ctx, js, publisher.ReadOptions{Stream: stream}, func(e events.Event, raw []byte) error {
		if len(got) == 0 { // more arrive while the read goes on: they are not read
			if _, err := pub.Publish(ctx, []diff.Transition{transition("t-late", "i-1", diff.StatusRunning, diff.StatusSuccess)}); err != nil {
				return err
			}
		}
		if !strings.Contains(string(raw), e.Data.InvokeID) {
			t.Errorf("the body of %s is not the event's: %s", e.Data.InvokeID, raw)
		}
		got = append(got, e.Data.InvokeID)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 25 || got[0] != "t-00" || got[24] != "t-24" {
		t.Errorf("read %v: want t-00..t-24 in order, nothing after", got)
	}
	none := 0
	err = publisher.ReadStream(t.Context(), js, publisher.ReadOptions{Stream: stream, Subject: prefix + ".swas.>"}, func(events.Event, []byte) error { none++; return nil })
	if err != nil || none != 0 {
		t.Errorf("a subject with no event: %d read, %v", none, err)
	}
}
