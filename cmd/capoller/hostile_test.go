package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
)

// hostileRecord is one instance run of a hand-made listing.
type hostileRecord struct {
	invoke, instance, errorInfo string
}

// hostileListing is a DescribeInvocations page, the last, holding the
// records with the given status each.
func hostileListing(t *testing.T, recs []hostileRecord, status func(i int) string) string {
	t.Helper()
	var invs []any
	for i, r := range recs {
		st := status(i)
		invs = append(invs, map[string]any{"InvokeId": r.invoke, "InvocationStatus": st, "Parameters": "{}", "CommandId": "c-1",
			"CommandName": "deploy", "InvokeInstances": map[string]any{"InvokeInstance": []any{map[string]any{
				"InstanceId": r.instance, "InvocationStatus": st, "Repeats": 1, "ErrorInfo": r.errorInfo, "ExitCode": i,
			}}}})
	}
	// Malformed records, which must be skipped without stopping the shard:
	// an invocation without an id, and instances without a status or id.
	invs = append(invs, map[string]any{"InvokeId": "  ", "InvocationStatus": "Running", "Parameters": "{}"},
		map[string]any{"InvokeId": "t-partly-broken", "InvocationStatus": "Running", "Parameters": "{}", "InvokeInstances": map[string]any{
			"InvokeInstance": []any{map[string]any{"InstanceId": "i-1"}, map[string]any{"InstanceId": "", "InvocationStatus": "Running"}}}})
	body, err := json.Marshal(map[string]any{"RequestId": "r", "NextToken": "", "Invocations": map[string]any{"Invocation": invs}})
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// TestDaemonSurvivesAHostileListing runs the daemon against real Redis and
// NATS while the API serves one listing holding every kind of hostile
// value: subject metacharacters, separators of the checkpoint's old
// encoding, newlines and unicode in ids, a 3,000-byte id and a 2 MB
// errorInfo. Every record's final status is published under a correctly
// escaped subject, and the daemon stays connected and healthy.
func TestDaemonSurvivesAHostileListing(t *testing.T) {
	sim, simURL := startEmulator(t)

	recs := []hostileRecord{
		{"t-dot.star*gt>", "i-1", "plain"},
		{"t-slash/pipe|pct%", "i-a/b", ""},
		{"t space\nnew line\ttab", "i-\n", ""},
		{"t-ü日本-🙂", "i-ü", ""},
		{"!known", "!known", ""},
		{"t-a", "i-b", ""},
		{"t-a/i-b", "x", ""},
		{strings.Repeat("é", 1500), "i-long", ""},
		{"t-huge-error", strings.Repeat("i", 3000), strings.Repeat("E", 2<<20)},
	}
	running := hostileListing(t, recs, func(int) string { return "Running" })
	final := func(i int) string { return []string{"Success", "Failed"}[i%2] }
	if err := sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultRaw, Body: running, Count: -1}); err != nil {
		t.Fatal(err)
	}
	stream := testenv.Name("CAPOLLER_HOSTILE")
	prefix := strings.ToLower(stream)
	natsURL := testenv.NATSURL(t)
	_, js := testenv.NATS(t, natsURL, stream)
	_, keyPrefix := testenv.Redis(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opsAddr := ln.Addr().String()
	_ = ln.Close()

	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli(t.Context(), []string{"run", "--endpoint", simURL, "--redis-url", testenv.RedisURL(t), "--key-prefix", keyPrefix,
			"--nats-url", natsURL, "--stream", stream, "--subject-prefix", prefix, "--interval", "100ms", "--initial", "emit",
			"--strategy", "full", "--metrics-addr", opsAddr}, io.Discard, &stderr)
	}()
	lastByRecord := func() map[diff.Key]publisher.Event {
		out := map[diff.Key]publisher.Event{}
		s, err := js.Stream(t.Context(), stream)
		if err != nil {
			return out
		}
		cons, err := s.OrderedConsumer(t.Context(), jetstream.OrderedConsumerConfig{})
		if err != nil {
			return out
		}
		info, err := cons.Info(t.Context())
		if err != nil || info.NumPending == 0 {
			return out
		}
		batch, err := cons.Fetch(int(info.NumPending), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return out
		}
		for msg := range batch.Messages() {
			var ev publisher.Event
			if err := json.Unmarshal(msg.Data(), &ev); err != nil {
				t.Fatalf("message on %q is not an event: %v", msg.Subject(), err)
			}
			want, err := publisher.Subject(prefix, diff.Transition{Source: diff.SourceECS, Region: "cn-hangzhou", Record: diff.Record{
				Key: diff.Key{InvokeID: ev.Data.InvokeID, InstanceID: ev.Data.InstanceID}, Status: diff.Status(ev.Data.Status)}})
			if err != nil || msg.Subject() != want || len(msg.Subject()) > 1024 {
				t.Fatalf("event of %.40q on subject %.200q, want %.200q (%v)", ev.Data.InvokeID, msg.Subject(), want, err)
			}
			out[diff.Key{InvokeID: ev.Data.InvokeID, InstanceID: ev.Data.InstanceID}] = ev
		}
		return out
	}
	waitFor := func(what string, ok func(map[diff.Key]publisher.Event) bool) map[diff.Key]publisher.Event {
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := lastByRecord()
			if ok(got) {
				return got
			}
			select {
			case code := <-done:
				t.Fatalf("the daemon exited %d while waiting for %s; logs:\n%.4000s", code, what, stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s after 30s: %d records announced; logs:\n%.4000s", what, len(got), stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	allAt := func(status func(i int) string) func(map[diff.Key]publisher.Event) bool {
		return func(got map[diff.Key]publisher.Event) bool {
			for i, r := range recs {
				for _, k := range []diff.Key{{InvokeID: r.invoke}, {InvokeID: r.invoke, InstanceID: r.instance}} {
					if string(got[k].Data.Status) != status(i) {
						return false
					}
				}
			}
			return true
		}
	}
	waitFor("Running events", allAt(func(int) string { return "Running" }))
	sim.ClearFaults()
	if err := sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultRaw, Body: hostileListing(t, recs, final), Count: -1}); err != nil {
		t.Fatal(err)
	}
	got := waitFor("final events", allAt(final))
	for i, r := range recs {
		ev := got[diff.Key{InvokeID: r.invoke, InstanceID: r.instance}]
		if ev.Data.PreviousStatus != "Running" {
			t.Errorf("record %d: previousStatus %q, want Running", i, ev.Data.PreviousStatus)
		}
		if len(r.errorInfo) > publisher.MaxErrorInfo && (len(ev.Data.ErrorInfo) > publisher.MaxErrorInfo || len(ev.Data.Truncated) == 0) {
			t.Errorf("record %d: errorInfo of %d bytes, truncated %v", i, len(ev.Data.ErrorInfo), ev.Data.Truncated)
		}
	}
	resp, err := http.Get("http://" + opsAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %d %s", resp.StatusCode, body)
	}
	select {
	case code := <-done:
		t.Fatalf("the daemon exited %d; logs:\n%.4000s", code, stderr.String())
	default:
	}
	if !strings.Contains(stderr.String(), "skipped") {
		t.Errorf("the malformed records were not reported; logs:\n%.4000s", stderr.String())
	}
	if strings.Contains(stderr.String(), "cycle failed") {
		t.Errorf("a cycle failed on the hostile listing; logs:\n%.4000s", stderr.String())
	}
}
