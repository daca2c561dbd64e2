package cloudassist

import (
	"errors"
	"net/url"
	"testing"

	"github.com/capoller/capoller/diff"
)

// TestHistoryBehindTheListingFailsTheCycle: the listing shows an instance
// of an active periodic task waiting after its first run (Scheduled,
// Repeats 1), but the history answers without that run (an empty page, as
// a garbled body decodes). Taking the current record as it is would
// announce the wait between runs, and the run's outcome after it once the
// history has it: out of order (found by `capoller chaos`). The listing
// must fail instead, so that the next cycle reads the history whole.
func TestHistoryBehindTheListingFailsTheCycle(t *testing.T) {
	for _, tc := range []struct {
		name    string
		history []obj
	}{
		{"no row of the instance", nil},
		{"an older run only", []obj{{"InvokeId": "t-periodic", "InstanceId": "i-1", "InvocationStatus": "Running", "Repeats": 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newHostileAPI(t, func(action string, p url.Values) any {
				if action == "DescribeInvocations" {
					return obj{"RequestId": "r", "Invocations": obj{"Invocation": []obj{{"InvokeId": "t-periodic", "InvocationStatus": "Scheduled",
						"RepeatMode": "Period", "InvokeInstances": obj{"InvokeInstance": []obj{{"InstanceId": "i-1", "InvocationStatus": "Scheduled", "Repeats": 1}}}}}}}
				}
				return obj{"RequestId": "r", "Invocation": obj{"InvocationResults": obj{"InvocationResult": tc.history}}}
			})
			l, err := NewECS(api.options(nil))
			if err != nil {
				t.Fatal(err)
			}
			snap, err := l.Snapshot(listingCtx(t))
			if !errors.Is(err, ErrMalformed) {
				var recs []string
				for _, r := range snap.Records {
					recs = append(recs, r.InvokeID+"/"+r.InstanceID+" "+string(r.Status))
				}
				t.Fatalf("err %v, records %v; want ErrMalformed: the history lacks the run the listing shows ended", err, recs)
			}
		})
	}
	// A task whose instance never ran yet (Scheduled, Repeats 0) has no
	// history to miss.
	api := newHostileAPI(t, func(action string, p url.Values) any {
		if action == "DescribeInvocations" {
			return obj{"RequestId": "r", "Invocations": obj{"Invocation": []obj{{"InvokeId": "t-periodic", "InvocationStatus": "Scheduled",
				"RepeatMode": "Period", "InvokeInstances": obj{"InvokeInstance": []obj{{"InstanceId": "i-1", "InvocationStatus": "Scheduled", "Repeats": 0}}}}}}}
		}
		return obj{"RequestId": "r", "Invocation": obj{"InvocationResults": obj{"InvocationResult": []obj{}}}}
	})
	l, err := NewECS(api.options(nil))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := l.Snapshot(listingCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !containsRecord(snap.Records, "i-1", diff.StatusScheduled) {
		t.Errorf("records %v: the instance waiting for its first run is missing", snap.Records)
	}
}

func containsRecord(recs []diff.Record, instance string, st diff.Status) bool {
	for _, r := range recs {
		if r.InstanceID == instance && r.Status == st {
			return true
		}
	}
	return false
}
