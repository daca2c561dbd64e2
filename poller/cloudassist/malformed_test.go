package cloudassist

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// rawFault serves body once, verbatim, to the next call of action.
func rawFault(action, body string) castest.Fault {
	return castest.Fault{Action: action, Kind: castest.FaultRaw, Body: body}
}

// jsonBody marshals a hand-made response.
func jsonBody(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type obj = map[string]any

// ecsPage is a DescribeInvocations page.
func ecsPage(t *testing.T, next string, invs ...obj) string {
	t.Helper()
	if invs == nil {
		invs = []obj{}
	}
	return jsonBody(t, obj{"RequestId": "req-" + next, "NextToken": next, "Invocations": obj{"Invocation": invs}})
}

// ecsInvocation is one invocation of a page, with instances as id, status
// pairs.
func ecsInvocation(id, status string, instances ...string) obj {
	var ii []obj
	for i := 0; i+1 < len(instances); i += 2 {
		ii = append(ii, obj{"InstanceId": instances[i], "InvocationStatus": instances[i+1]})
	}
	return obj{"InvokeId": id, "InvocationStatus": status, "CommandId": "c-" + strings.TrimSpace(id), "RepeatMode": "Once",
		"InvokeInstances": obj{"InvokeInstance": ii}}
}

// skips counts OnSkipped calls by reason.
type skips struct {
	mu sync.Mutex
	n  map[string]int
}

func (s *skips) record(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == nil {
		s.n = map[string]int{}
	}
	s.n[reason]++
}

func (s *skips) take() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.n
	s.n = nil
	return n
}

func keysOf(snap diff.Snapshot) []diff.Key {
	var out []diff.Key
	for _, r := range snap.Records {
		out = append(out, r.Key)
	}
	slices.SortFunc(out, func(x, y diff.Key) int {
		return strings.Compare(x.InvokeID+"\x00"+x.InstanceID, y.InvokeID+"\x00"+y.InstanceID)
	})
	return out
}

func sortedKeys(keys ...diff.Key) []diff.Key {
	return slices.SortedFunc(slices.Values(keys), func(x, y diff.Key) int {
		return strings.Compare(x.InvokeID+"\x00"+x.InstanceID, y.InvokeID+"\x00"+y.InstanceID)
	})
}

// skipLogs returns the "malformed records skipped" entries logged since
// the last call, as reason → count.
func skipLogs(logs *observer.ObservedLogs) map[string]int64 {
	out := map[string]int64{}
	for _, e := range logs.TakeAll() {
		if e.Message != "malformed records skipped" {
			continue
		}
		f := e.ContextMap()
		out[f["reason"].(string)] = f["count"].(int64)
	}
	return out
}

// TestMalformedRecordsAreSkipped: a record without an id or a status is
// skipped and counted, the rest of the listing goes on, and the skips are
// logged once per reason while their count stays the same.
func TestMalformedRecordsAreSkipped(t *testing.T) {
	f := startSim(t, 1)
	core, logs := observer.New(zapcore.WarnLevel)
	var counted skips
	l := f.lister(t, func(o *Options) { o.Logger, o.OnSkipped = zap.New(core), counted.record })
	page1 := ecsPage(t, "tok-2",
		ecsInvocation("t-good-1", "Success", "i-1", "Success"),
		ecsInvocation("  ", "Running", "i-1", "Running"),   // no id: skipped with its instance
		ecsInvocation("t-nostatus", " ", "i-1", "Success"), // no status: its instance is kept
		ecsInvocation("t-badinst", "Success", "", "Success", "i-2", "", "i-3", "Success"),
	)
	page2 := ecsPage(t, "", ecsInvocation("t-good-2", "Failed", "i-1", "Failed"))
	wantKeys := sortedKeys(
		diff.Key{InvokeID: "t-good-1"}, diff.Key{InvokeID: "t-good-1", InstanceID: "i-1"},
		diff.Key{InvokeID: "t-nostatus", InstanceID: "i-1"},
		diff.Key{InvokeID: "t-badinst"}, diff.Key{InvokeID: "t-badinst", InstanceID: "i-3"},
		diff.Key{InvokeID: "t-good-2"}, diff.Key{InvokeID: "t-good-2", InstanceID: "i-1"},
	)
	wantSkips := map[string]int{SkipInvocationWithoutID: 1, SkipInvocationWithoutStatus: 1, SkipInstanceWithoutID: 1, SkipInstanceWithoutStatus: 1}

	for round := range 2 {
		serve(t, f, "DescribeInvocations", 200, page1, page2)
		snap, err := l.Snapshot(t.Context())
		if err != nil {
			t.Fatalf("round %d: a malformed record failed the listing: %v", round, err)
		}
		if got := keysOf(snap); !slices.Equal(got, wantKeys) {
			t.Errorf("round %d: records %v, want %v", round, got, wantKeys)
		}
		if got := counted.take(); !maps.Equal(got, wantSkips) {
			t.Errorf("round %d: OnSkipped %v, want %v", round, got, wantSkips)
		}
		got := skipLogs(logs)
		switch round {
		case 0:
			want := map[string]int64{SkipInvocationWithoutID: 1, SkipInvocationWithoutStatus: 1, SkipInstanceWithoutID: 1, SkipInstanceWithoutStatus: 1}
			if !maps.Equal(got, want) {
				t.Errorf("first listing logged %v, want one entry per reason %v", got, want)
			}
		case 1:
			if len(got) != 0 {
				t.Errorf("the same skips were logged again: %v", got)
			}
		}
	}
	// The count changes: logged again, once.
	serve(t, f, "DescribeInvocations", 200, ecsPage(t, "", ecsInvocation("", "Running"), ecsInvocation("", "Running")))
	if _, err := l.Snapshot(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := skipLogs(logs); !maps.Equal(got, map[string]int64{SkipInvocationWithoutID: 2}) {
		t.Errorf("a changed count logged %v, want invocation_without_id: 2", got)
	}
}

func TestMalformedResultRowsAreSkipped(t *testing.T) {
	f := startSim(t, 1)
	var counted skips
	row := func(invokeID, instanceID, status string) obj {
		return obj{"InvokeId": invokeID, "InstanceId": instanceID, "InvocationStatus": status, "CommandId": "c-1"}
	}
	serve(t, f, "DescribeInvocationResults", 200, jsonBody(t, obj{"RequestId": "r", "Invocation": obj{"NextToken": "",
		"InvocationResults": obj{"InvocationResult": []obj{
			row("t-r1", "i-1", "Success"), row(" ", "i-1", "Success"), row("t-r2", "", "Success"),
			row("t-r3", "i-1", ""), row("t-r3", "i-2", "Running"),
		}}}}))
	// The Timed listing names a periodic task without InvokeId: its history
	// cannot be asked for.
	timed := ecsInvocation("", "Running")
	timed["RepeatMode"] = "Period"
	if err := f.sim.InjectFault(rawFault("DescribeInvocations", ecsPage(t, "", timed))); err != nil {
		t.Fatal(err)
	}
	l, err := NewECSResults(Options{Region: region, Endpoint: f.url, AccessKeyID: testKeyID, AccessKeySecret: testKeySecret,
		TransientRetries: -1, OnSkipped: counted.record})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := l.Snapshot(t.Context())
	if err != nil {
		t.Fatalf("a malformed row failed the listing: %v", err)
	}
	want := sortedKeys(diff.Key{InvokeID: "t-r1"}, diff.Key{InvokeID: "t-r1", InstanceID: "i-1"},
		diff.Key{InvokeID: "t-r3"}, diff.Key{InvokeID: "t-r3", InstanceID: "i-2"})
	if got := keysOf(snap); !slices.Equal(got, want) {
		t.Errorf("records %v, want %v", got, want)
	}
	wantSkips := map[string]int{SkipInvocationWithoutID: 2, SkipInstanceWithoutID: 1, SkipInstanceWithoutStatus: 1}
	if got := counted.take(); !maps.Equal(got, wantSkips) {
		t.Errorf("OnSkipped %v, want %v", got, wantSkips)
	}
}

func TestMalformedSWASRecordsAreSkipped(t *testing.T) {
	f := startSim(t, 1)
	var counted skips
	cmd := func(id, status string, instances ...string) obj {
		var ii []obj
		for i := 0; i+1 < len(instances); i += 2 {
			ii = append(ii, obj{"InstanceId": instances[i], "InvocationStatus": instances[i+1]})
		}
		return obj{"InvokeId": id, "InvocationStatus": status, "CommandId": "c-1", "InvokeInstances": ii}
	}
	// Four invocations listed, TotalCount 4: the one without an id still
	// counts as listed, so the listing is complete.
	serve(t, f, "DescribeCommandInvocations", 200, jsonBody(t, obj{"RequestId": "r", "TotalCount": 4, "PageNumber": 1, "PageSize": 50,
		"CommandInvocations": []obj{
			cmd("t-s1", "Success", "i-1", "Success"), cmd("", "Running", "i-1", "Running"),
			cmd("t-s2", "", "i-1", "Running"), cmd("t-s3", "Success", " ", "Success", "i-2", ""),
		}}))
	l, err := NewSWAS(Options{Region: region, Endpoint: f.url, AccessKeyID: testKeyID, AccessKeySecret: testKeySecret,
		TransientRetries: -1, OnSkipped: counted.record})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := l.Snapshot(t.Context())
	if err != nil {
		t.Fatalf("a malformed record failed the listing: %v", err)
	}
	want := sortedKeys(diff.Key{InvokeID: "t-s1"}, diff.Key{InvokeID: "t-s1", InstanceID: "i-1"},
		diff.Key{InvokeID: "t-s2", InstanceID: "i-1"}, diff.Key{InvokeID: "t-s3"})
	if got := keysOf(snap); !slices.Equal(got, want) || !snap.Complete {
		t.Errorf("records %v complete=%v, want %v, complete", got, snap.Complete, want)
	}
	wantSkips := map[string]int{SkipInvocationWithoutID: 1, SkipInvocationWithoutStatus: 1, SkipInstanceWithoutID: 1, SkipInstanceWithoutStatus: 1}
	if got := counted.take(); !maps.Equal(got, wantSkips) {
		t.Errorf("OnSkipped %v, want %v", got, wantSkips)
	}
}

// TestOddIDsAreNotMalformed: only an empty id is malformed; any other
// bytes are an id.
func TestOddIDsAreNotMalformed(t *testing.T) {
	odd := []string{".", "*", ">", "a/b", "|", "%2F", "a b", "a\nb", "日本語", "t-\u0000", strings.Repeat("x", 3000)}
	f := startSim(t, 1)
	var counted skips
	var invs []obj
	var want []diff.Key
	for _, id := range odd {
		invs = append(invs, ecsInvocation(id, "Success", id, "Success"))
		want = append(want, diff.Key{InvokeID: id}, diff.Key{InvokeID: id, InstanceID: id})
	}
	serve(t, f, "DescribeInvocations", 200, ecsPage(t, "", invs...))
	snap, err := f.lister(t, func(o *Options) { o.OnSkipped = counted.record }).Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := keysOf(snap); !slices.Equal(got, sortedKeys(want...)) {
		t.Errorf("got %d records, want %d with the ids as sent", len(got), len(want))
	}
	if got := counted.take(); len(got) != 0 {
		t.Errorf("odd ids were skipped: %v", got)
	}
}
