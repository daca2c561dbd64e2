package poller_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// FuzzAHintPublishesOnlyWhatALookUpReturned: whatever a push's body says
// (its status, its exit code, ids known or not, fields broken or added),
// the hints the decoder takes make capoller announce only what the API
// returns for their invocations: each transition of the look-up cycle is
// a record the look-up itself returns, and an id the API does not know
// announces nothing. The emulator, Redis and NATS are real; one poller
// takes every input.
func FuzzAHintPublishesOnlyWhatALookUpReturned(f *testing.F) {
	h := newHarness(f)
	src, st, pub := h.parts(10)
	p := h.poller(src, st, pub, func(o *poller.Options) {
		o.Interval = time.Hour
		o.Hints = &poller.HintOptions{Spacing: time.Nanosecond, PerSecond: 1e6, Burst: 1e6, Batch: 100}
	})
	if rep := p.RunOnce(f.Context()); rep.Err != nil {
		f.Fatal(rep.Err)
	}
	failed := h.run("echo no; exit 7", 0, h.instances[0])
	succeeded := h.run("echo yes", 0, h.instances[1])
	for _, id := range []string{failed, succeeded} {
		eventually(f, 10*time.Second, "the run to end", func() bool {
			snap, err := src.LookUp(f.Context(), []string{id})
			return err == nil && len(snap.Records) == 2 && snap.Records[1].Status.Terminal()
		})
	}
	push := func(invokeID, instanceID, status, exitCode string) []byte {
		ev := castest.NewTaskCompleted(region, "1234567890123456", invokeID, instanceID, status, time.Now())
		ev.Data.ExitCode = exitCode
		b, _ := json.Marshal(ev)
		return b
	}
	f.Add(push(failed, h.instances[0], "Success", "0"), "application/cloudevents+json")
	f.Add(push(succeeded, h.instances[1], "Failed", "137"), "application/json")
	f.Add(push("t-unknown", h.instances[0], "Success", "0"), "application/json")
	f.Add(append(append([]byte("["), push(succeeded, h.instances[2], "Stopped", "x")...), ']'), "application/cloudevents-batch+json")
	f.Add([]byte(`{"specversion":"1.0","type":"ecs:CloudAssistant:TaskCompleted"}`), "application/json")

	f.Fuzz(func(t *testing.T, body []byte, ctype string) {
		hints, err := cloudassist.ParseHints(body, ctype)
		if err != nil {
			return
		}
		for _, hint := range hints {
			p.Hint(poller.Hint{InvokeID: hint.InvokeID, InstanceID: hint.InstanceID})
		}
		for range 100 {
			rep, ran := p.LookUpDue(t.Context())
			if !ran {
				return
			}
			if rep.Err != nil {
				t.Fatalf("a look-up failed: %v", rep.Err)
			}
			truth, err := src.LookUp(t.Context(), rep.LookedUp)
			if err != nil {
				t.Fatal(err)
			}
			returned := map[diff.Key]diff.Record{}
			for _, r := range truth.Records {
				returned[r.Key] = r
			}
			for _, tr := range rep.Transitions {
				r, ok := returned[tr.Record.Key]
				if !ok || r.Status != tr.Record.Status || r.ExitCode != tr.Record.ExitCode {
					t.Fatalf("announced %v %s (exit %d); the look-up returned %+v", tr.Record.Key, tr.Record.Status, tr.Record.ExitCode, r)
				}
			}
		}
		t.Fatal("look-ups still due after 100 cycles")
	})
}
