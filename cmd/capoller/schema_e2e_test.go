package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher/events"
)

// schemaScripts are what the driver runs, to give the stream every shape
// of event: success, a failure with output, output cut for its length,
// bytes that are not UTF-8, terminal escapes and NUL, an agent crash
// (Error), a timeout, a run hanging until it is stopped.
var schemaScripts = []struct { //nolint:gochecknoglobals // test table
	script  string
	timeout int64
	stop    bool
}{
	{"echo deployed", 10, false},
	{"echo migrating; echo ERROR: disk full; exit 3", 10, false},
	{"yes boom | head -c 20000; exit 1", 10, false},
	{"head -c 300 /dev/urandom; exit 2", 10, false},
	{`printf '\033[31mred\033[0m\000\r\n'; exit 1`, 10, false},
	{"crash", 10, false},
	{"sleep 5", 1, false},
	{"echo waiting; hang", 30, true},
}

// TestEventsOfARunMatchTheSchemas: `capoller run`, against the emulator
// with real Redis and NATS, polls ecs and swas in cn-hangzhou and
// ecs-results in cn-shanghai. It announces a seeded history (--initial
// emit) and every run a driver starts meanwhile (schemaScripts, a periodic
// task, OSS delivery). Every message the stream holds, thousands, is valid
// against the JSON Schema its type names, with a maintained validator,
// and its headers against the AsyncAPI document's; and the run made every
// kind of event the schemas describe, so that the validation covered them.
func TestEventsOfARunMatchTheSchemas(t *testing.T) {
	if testing.Short() {
		t.Skip("an end-to-end run")
	}
	started := time.Now()
	d := newDeployment(t, []string{"cn-hangzhou", "cn-shanghai"})
	acct := d.sim.Account(castest.DefaultAccount)
	seeded := map[string]int{"cn-hangzhou": 1200, "cn-shanghai": 400}
	for region, n := range seeded {
		if err := acct.Seed(castest.SeedOptions{Region: region, Invocations: n}); err != nil {
			t.Fatal(err)
		}
	}
	d.start("hz", []string{"cn-hangzhou"}, "ecs,swas")
	d.start("sh", []string{"cn-shanghai"}, "ecs-results")

	fleet := acct.Fleet()
	periodic, err := acct.InvokePeriodic("cn-hangzhou", fleet["cn-hangzhou"][castest.ProductECS][:1], "echo tick; exit 1", "rate(1s)", 5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acct.RunCommand("cn-hangzhou", fleet["cn-hangzhou"][castest.ProductECS], castest.Command{
		Script: "echo delivered; exit 4", Timeout: 10, OssOutputDelivery: "oss://capoller-test/runs"}); err != nil {
		t.Fatal(err)
	}
	driveSchemaScripts(t, acct, fleet, 8*time.Second)
	if err := acct.Stop(castest.ProductECS, "cn-hangzhou", periodic); err != nil {
		t.Fatal(err)
	}

	want := 2 * (seeded["cn-hangzhou"] + seeded["cn-shanghai"]) // an invocation and an instance event each
	testenv.WaitFor(t, 90*time.Second, "the seeded history and every run's last status announced", func() error {
		if n := streamLen(t, d); n < want {
			return fmt.Errorf("%d events, want at least the %d of the seeded history", n, want)
		}
		return caughtUp(testenv.TruthByRecord(acct.Truth()), testenv.StreamEvents(t, d.js, d.stream))
	})

	schemas := testenv.EventSchemas(t)
	s, info := streamInfo(t, d)
	seen := coverage{statuses: map[string]bool{}, sources: map[string]bool{}, types: map[string]int{}}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		msg, err := s.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatal(err)
		}
		typ, err := schemas.Validate(msg.Header, msg.Data)
		if err != nil {
			t.Fatalf("message %d on %s is not valid: %v\n%s", seq, msg.Subject, err, msg.Data)
		}
		seen.types[typ]++
		var ev events.Event
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			t.Fatal(err)
		}
		// Without OpenTelemetry's variables, nothing is exported, but each
		// event still carries its trace context, in the body and the headers.
		if ev.TraceParent == "" || msg.Header.Get("traceparent") != ev.TraceParent {
			t.Fatalf("message %d: traceparent %q, header %q; want the same, set", seq, ev.TraceParent, msg.Header.Get("traceparent"))
		}
		seen.add(ev)
	}
	total := seen.types[events.TypeInstance] + seen.types[events.TypeInvocation]
	t.Logf("%d events valid (%d instance, %d invocation) in %v; statuses %v", total, seen.types[events.TypeInstance],
		seen.types[events.TypeInvocation], time.Since(started).Round(time.Second), slices.Sorted(maps.Keys(seen.statuses)))
	if total < 2000 {
		t.Errorf("%d events validated, want thousands", total)
	}
	for _, missing := range seen.missing() {
		t.Errorf("no event %s: the run did not exercise the schemas fully", missing)
	}
}

// driveSchemaScripts starts schemaScripts on ECS and SWAS instances in
// cn-hangzhou and on ECS ones in cn-shanghai, in turn, for d, and stops
// the runs that hang.
func driveSchemaScripts(t *testing.T, acct *castest.AccountHandle, fleet map[string]map[string][]string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	type target struct{ region, product string }
	targets := []target{{"cn-hangzhou", castest.ProductECS}, {"cn-hangzhou", castest.ProductSWAS}, {"cn-shanghai", castest.ProductECS}}
	var hanging []target
	var hangingIDs []string
	for i := 0; ctx.Err() == nil; i++ {
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // pacing arrivals, not waiting for a result
		}
		run, to := schemaScripts[i%len(schemaScripts)], targets[i%len(targets)]
		instances := fleet[to.region][to.product]
		var id string
		var err error
		if to.product == castest.ProductSWAS {
			id, err = acct.InvokeSWAS(to.region, instances[:1], run.script, run.timeout)
		} else {
			id, err = acct.Invoke(to.region, instances, run.script, run.timeout)
		}
		if err != nil {
			t.Fatalf("%s in %s: %v", run.script, to.region, err)
		}
		if run.stop {
			hanging, hangingIDs = append(hanging, to), append(hangingIDs, id)
		}
		if len(hanging) > 2 {
			if err := acct.Stop(hanging[0].product, hanging[0].region, hangingIDs[0]); err != nil {
				t.Fatal(err)
			}
			hanging, hangingIDs = hanging[1:], hangingIDs[1:]
		}
	}
	for i, h := range hanging {
		if err := acct.Stop(h.product, h.region, hangingIDs[i]); err != nil {
			t.Fatal(err)
		}
	}
}

func streamLen(t *testing.T, d *deployment) int {
	t.Helper()
	_, info := streamInfo(t, d)
	return int(info.State.Msgs)
}

// streamInfo is d's stream, and its state now.
func streamInfo(t *testing.T, d *deployment) (jetstream.Stream, *jetstream.StreamInfo) {
	t.Helper()
	s, err := d.js.Stream(t.Context(), d.stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return s, info
}

// caughtUp says whether every record the emulator changed ended, and
// its last status was announced.
func caughtUp(truth map[diff.Key][]castest.TruthEntry, evs []testenv.Published) error {
	last := map[diff.Key]string{}
	for _, e := range evs {
		last[testenv.RecordKey(e.Event.Data)] = string(e.Event.Data.Status)
	}
	for k, entries := range truth {
		end := entries[len(entries)-1].To
		if got := last[k]; got != end {
			return fmt.Errorf("%v: announced %q, last status %q", k, got, end)
		}
	}
	return nil
}

// coverage is what kinds of events a run made.
type coverage struct {
	types                                                      map[string]int
	statuses, sources                                          map[string]bool
	firstSight, output, cut, notUTF8Replaced, outputURI, rerun bool
	nonzeroExit, errorInfo, startFinish                        bool
}

func (c *coverage) add(ev events.Event) {
	d := ev.Data
	c.statuses[string(d.Status)], c.sources[d.Source] = true, true
	c.firstSight = c.firstSight || d.PreviousStatus == ""
	c.output = c.output || d.Output != ""
	c.cut = c.cut || slices.Contains(d.Truncated, "output")
	c.notUTF8Replaced = c.notUTF8Replaced || strings.ContainsRune(d.Output, '\uFFFD')
	c.outputURI = c.outputURI || d.OutputURI != ""
	c.rerun = c.rerun || d.Repeats != nil && *d.Repeats > 1
	c.nonzeroExit = c.nonzeroExit || d.ExitCode != nil && *d.ExitCode != 0
	c.errorInfo = c.errorInfo || d.ErrorInfo != ""
	c.startFinish = c.startFinish || d.StartTime != "" && d.FinishTime != ""
}

func (c *coverage) missing() []string {
	var out []string
	for name, ok := range map[string]bool{
		"of both types":                   c.types[events.TypeInstance] > 0 && c.types[events.TypeInvocation] > 0,
		"of source ecs and swas":          c.sources["ecs"] && c.sources["swas"],
		"first seen":                      c.firstSight,
		"with output":                     c.output,
		"with output cut":                 c.cut,
		"with output that was not UTF-8":  c.notUTF8Replaced,
		"with an OSS output URI":          c.outputURI,
		"of a periodic task's second run": c.rerun,
		"with a non-zero exit code":       c.nonzeroExit,
		"with errorInfo":                  c.errorInfo,
		"with start and finish times":     c.startFinish,
	} {
		if !ok {
			out = append(out, name)
		}
	}
	// Statuses that last long enough for a 1s poll to see them, whatever
	// the timing (Pending and Stopping last 50 and 100ms).
	for _, s := range []string{"Running", "Success", "Failed", "Error", "Timeout", "Stopped"} {
		if !c.statuses[s] {
			out = append(out, "of status "+s)
		}
	}
	slices.Sort(out)
	return out
}
