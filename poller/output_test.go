package poller_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// countingProxy sits between the listers and the emulator and counts the
// calls of each action, and those that ask for output (IncludeOutput).
type countingProxy struct {
	mu     sync.Mutex
	calls  map[string]int
	output map[string]int
	// throttleOutput answers every call asking for output as a throttled
	// API does.
	throttleOutput atomic.Bool
	// endlessOutput answers every call asking for output with an empty
	// page and a NextToken never seen before: a listing that never ends.
	endlessOutput atomic.Bool
	tokens        atomic.Int64
}

func newCountingProxy(t testing.TB, target string) (*countingProxy, string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	c := &countingProxy{calls: map[string]int{}, output: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		params := r.URL.Query()
		if form, err := url.ParseQuery(string(body)); err == nil {
			for k, v := range form {
				params[k] = append(params[k], v...)
			}
		}
		wantsOutput := strings.EqualFold(params.Get("IncludeOutput"), "true")
		c.mu.Lock()
		c.calls[params.Get("Action")]++
		if wantsOutput {
			c.output[params.Get("Action")]++
		}
		c.mu.Unlock()
		if wantsOutput && c.endlessOutput.Load() {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"RequestId":"endless","NextToken":"token-%d","Invocations":{"Invocation":[]}}`, c.tokens.Add(1))
			return
		}
		if wantsOutput && c.throttleOutput.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"RequestId":"throttled","Code":"Throttling.User","Message":"Request was denied due to user flow control."}`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return c, srv.URL
}

func (c *countingProxy) reset() (calls, output map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	calls, output = c.calls, c.output
	c.calls, c.output = map[string]int{}, map[string]int{}
	return calls, output
}

// TestFailureEventsCarryTheirOutput runs failing commands that print
// distinct markers on each source, through the real SDK and a counting
// proxy, against real Redis and NATS: every Failed instance event
// carries its marker, a success carries nothing, secrets are redacted, a
// 36 KB output is announced cut with the API's Dropped, and output costs
// on ecs at most one call per failed invocation or per instance with
// failures, whichever is fewer, and none on the others.
func TestFailureEventsCarryTheirOutput(t *testing.T) {
	for _, source := range []string{"ecs", "ecs-incremental", "ecs-results", "swas"} {
		t.Run(source, func(t *testing.T) {
			h := newHarnessWith(t, func(o *castest.Options) { o.OssDeliveryDelay = time.Nanosecond })
			proxy, proxyURL := newCountingProxy(t, h.simURL)
			opts := h.listerOptions(50)
			opts.Endpoint = proxyURL
			sh := shard
			instances := h.instances[:2]
			run := func(script string) string { return h.run(script, 0, instances...) }
			if source == "swas" {
				sh = diff.Shard{Source: diff.SourceSWAS, Region: region}
				var swasID string
				for _, inst := range h.sim.Instances() {
					if inst.Product == castest.ProductSWAS {
						swasID = inst.ID
					}
				}
				instances = []string{swasID}
				run = func(script string) string { return h.swasRun(script, swasID) }
			}
			lister := outputLister(t, source, opts)
			p := h.poller(lister, h.store(), h.publisher(h.js), func(o *poller.Options) { o.Shard = sh })
			mustRunOnce(t, p) // the baseline

			failing := map[string]string{} // invocation -> its marker
			for i := range 3 {
				marker := fmt.Sprintf("marker-%s-%d", source, i)
				failing[run(fmt.Sprintf("echo starting; echo %s; exit %d", marker, 3+i))] = marker
			}
			success := run("echo all-is-well")
			secret := run("echo password=hunter2 key LTAI5tAbCdEfGhIjKlMnOp; exit 1")
			large := run("yes abcdefg | head -c 36864; exit 1")
			binary := run(`printf 'a\0b\e[31mred\xffz\n'; exit 1`)
			var toOSS string // ECS delivers output to OSS when asked; SWAS documents no such thing
			if source != "swas" {
				req := ecs.CreateRunCommandRequest()
				req.Type, req.CommandContent, req.InstanceId = "RunShellScript", "echo delivered; exit 2", &instances
				req.QueryParams["OssOutputDelivery"] = "oss://bucket/prefix"
				resp, err := h.sdk.RunCommand(req)
				if err != nil {
					t.Fatal(err)
				}
				toOSS = resp.InvokeId
			}
			eventually(t, 10*time.Second, "every run to end", func() bool { return allFinal(truthByRecord(h.sim)) })

			proxy.reset()
			mustRunOnce(t, p)
			calls, output := proxy.reset()
			failedInvocations := len(failing) + 4 // the secret, large, binary and delivered ones fail too
			// ecs looks output up per invocation or per instance, whichever
			// takes fewer calls: here one per instance (a page each).
			lookUps := min(failedInvocations, len(instances))
			switch source {
			case "ecs-incremental": // the look-ups it makes anyway ask for output
				if output["DescribeInvocations"] > lookUps {
					t.Errorf("%d calls with IncludeOutput for %d failed invocations on %d instances, want at most %d (calls %v)",
						output["DescribeInvocations"], failedInvocations, len(instances), lookUps, calls)
				}
			case "ecs":
				if output["DescribeInvocations"] != lookUps {
					t.Errorf("%d look-ups with IncludeOutput for %d failed invocations on %d instances, want %d (calls %v)",
						output["DescribeInvocations"], failedInvocations, len(instances), lookUps, calls)
				}
			default:
				if len(output) != 0 {
					t.Errorf("output asked for %v: the rows carry it", output)
				}
			}

			seen := map[string]bool{}
			for _, e := range h.events() {
				d := e.Event.Data
				if d.Level != diff.LevelInstance || !d.Terminal {
					if d.Output != "" {
						t.Errorf("%s %s event carries output %q", d.Level, d.Status, d.Output)
					}
					continue
				}
				key := d.InvokeID + "/" + d.InstanceID
				seen[key] = true
				switch {
				case failing[d.InvokeID] != "":
					if d.Status != diff.StatusFailed || !strings.Contains(d.Output, failing[d.InvokeID]) || !strings.Contains(d.Output, "starting") {
						t.Errorf("%s: %s with output %q, want Failed with %q", key, d.Status, d.Output, failing[d.InvokeID])
					}
				case d.InvokeID == success:
					if d.Output != "" || d.OutputMissing {
						t.Errorf("%s: a success carries output %q (missing %v)", key, d.Output, d.OutputMissing)
					}
				case d.InvokeID == secret:
					if strings.Contains(d.Output, "hunter2") || strings.Contains(d.Output, "LTAI5tAbCdEfGhIjKlMnOp") ||
						!strings.Contains(d.Output, "password=[REDACTED]") {
						t.Errorf("%s: secrets not redacted: %q", key, d.Output)
					}
				case d.InvokeID == binary: // NUL and escapes kept, the invalid byte replaced
					if d.Output != "a\x00b\x1b[31mred\uFFFDz\n" {
						t.Errorf("%s: binary output became %q", key, d.Output)
					}
				case d.InvokeID == toOSS:
					want := "oss://bucket/prefix/" + d.InvokeID + "/" + d.InstanceID + "/"
					if !strings.HasPrefix(d.OutputURI, want) || !strings.Contains(d.Output, "delivered") {
						t.Errorf("%s: outputUri %q, output %q: want %s… and the output", key, d.OutputURI, d.Output, want)
					}
				case d.InvokeID == large:
					// SWAS documents no Dropped: the API's own cut is not said.
					if source != "swas" && d.OutputDropped != 36864-24*1024 {
						t.Errorf("%s: outputDropped %d, want the API's %d", key, d.OutputDropped, 36864-24*1024)
					}
					if len(d.Output) > cloudassist.DefaultOutputMaxBytes || !strings.HasPrefix(d.Output, "[cut ") ||
						!strings.HasSuffix(d.Output, "abcdefg\n") && !strings.HasSuffix(d.Output, "abc") ||
						!strings.Contains(strings.Join(d.Truncated, ","), "output") {
						t.Errorf("%s: output of %d bytes, truncated %v, starting %.40q: want its end, cut to %d bytes", key,
							len(d.Output), d.Truncated, d.Output, cloudassist.DefaultOutputMaxBytes)
					}
				}
			}
			for id := range failing {
				for _, inst := range instances {
					if !seen[id+"/"+inst] {
						t.Errorf("no final event for %s/%s", id, inst)
					}
				}
			}
		})
	}
}

// TestOutputThrottledPastItsWaitGoesOutMissing: when throttling keeps the
// look-ups from answering within the output wait, the events go out
// without output, marked outputMissing, and are never looked up again:
// not by the next cycle, not when a staged batch is finished.
func TestOutputThrottledPastItsWaitGoesOutMissing(t *testing.T) {
	h := newHarness(t)
	proxy, proxyURL := newCountingProxy(t, h.simURL)
	opts := h.listerOptions(50)
	opts.Endpoint = proxyURL
	opts.ThrottleRetries, opts.ThrottleWindow = 0, 50*time.Millisecond // retried until the wait ends
	opts.Output.Wait = 400 * time.Millisecond
	lister, err := cloudassist.NewECS(opts)
	if err != nil {
		t.Fatal(err)
	}
	st := h.store()
	pubs := &failPublishes{Publisher: h.publisher(h.js)}
	p := h.poller(lister, st, pubs, nil)
	mustRunOnce(t, p) // the baseline
	first := h.run("echo first-marker; exit 1", 0, h.instances[0])
	eventually(t, 10*time.Second, "the run to end", func() bool { return allFinal(truthByRecord(h.sim)) })

	proxy.throttleOutput.Store(true)
	pubs.n.Store(1) // the batch is staged, then its publish fails
	start := time.Now()
	if rep := p.RunOnce(t.Context()); rep.Err == nil {
		t.Fatal("the injected publish failure did not fail the cycle")
	}
	if took := time.Since(start); took < opts.Output.Wait {
		t.Errorf("the cycle gave up on the output after %v, before its wait of %v", took, opts.Output.Wait)
	}
	_, output := proxy.reset()
	if output["DescribeInvocations"] < 2 {
		t.Errorf("%d look-ups: the throttled one was not retried within the wait", output["DescribeInvocations"])
	}
	proxy.throttleOutput.Store(false) // the output could be read now: it must not be
	mustRunOnce(t, p)                 // finishes the staged batch
	mustRunOnce(t, p)
	if _, output := proxy.reset(); len(output) != 0 {
		t.Errorf("the output was looked up again, %v, for events already staged without it", output)
	}
	var n int
	for _, e := range h.events() {
		if d := e.Event.Data; d.InvokeID == first && d.Level == diff.LevelInstance && d.Terminal {
			n++
			if !d.OutputMissing || d.Output != "" {
				t.Errorf("%s: output %q, missing %v: want it missing", d.InstanceID, d.Output, d.OutputMissing)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d final events for %s, want 1", n, first)
	}
}

// BenchmarkOutputCost measures what carrying output costs, per source,
// at the default (--output failures) and at --output none: API calls per
// failed invocation in the cycle that announces them, bytes per failed
// instance event on the stream, and bytes per transition of the audit
// history (Redis MEMORY USAGE of the history key over its transitions).
// Each of 20 invocations fails on 2 instances after printing 1 KiB; a
// cycle sees them run, the next one sees them fail.
func BenchmarkOutputCost(b *testing.B) {
	for _, c := range []struct {
		name, source    string
		failing, buried int
	}{
		{"ecs", "ecs", 20, 0},
		{"ecs-incremental", "ecs-incremental", 20, 0},
		// Three failures under 500 newer invocations: the incremental
		// strategy reads them by look-ups, which ask for their output.
		{"ecs-incremental-buried", "ecs-incremental", 3, 500},
		{"ecs-results", "ecs-results", 20, 0},
	} {
		for _, mode := range []cloudassist.OutputFor{cloudassist.OutputFailures, cloudassist.OutputNone} {
			b.Run(c.name+"/"+string(mode), func(b *testing.B) {
				for b.Loop() {
					benchOutputCost(b, c.source, mode, c.failing, c.buried)
				}
			})
		}
	}
}

func benchOutputCost(b *testing.B, source string, mode cloudassist.OutputFor, invocations, buried int) {
	h := newHarness(b)
	proxy, proxyURL := newCountingProxy(b, h.simURL)
	opts := h.listerOptions(50)
	opts.Endpoint, opts.Output.For = proxyURL, mode
	if source == "ecs-incremental" {
		// No head overlap: a test's invocations are created within
		// seconds, where a real head scan passes a minute.
		opts.HeadOverlap = -1
	}
	lister := outputLister(b, source, opts)
	p := h.poller(lister, h.store(), h.publisher(h.js), nil)
	if rep := p.RunOnce(b.Context()); rep.Err != nil {
		b.Fatal(rep.Err)
	}
	wait := 1
	if buried > 0 {
		wait = 5 // they outlast the pacing below and two cycles
	}
	for i := range invocations {
		h.run(fmt.Sprintf("sleep %d; yes 'step %d: error: the migration failed' | head -c 1024; exit 1", wait, i), 0, h.instances[:2]...)
	}
	// Buried: newer invocations in two later seconds (the API's creation
	// times are in seconds), so that the head of the listing, which reads
	// the newest second whole, ends before the failing ones.
	for _, n := range []int{buried - buried/10, buried / 10} {
		if n == 0 {
			continue
		}
		time.Sleep(1100 * time.Millisecond) // pacing creation times, not waiting for a result
		for range n {
			h.run("echo ok", 0, h.instances[2])
		}
	}
	for range 2 { // they run: a later cycle sees them end (the second expects no newcomers)
		if rep := p.RunOnce(b.Context()); rep.Err != nil {
			b.Fatal(rep.Err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !allFinal(truthByRecord(h.sim)) {
		if time.Now().After(deadline) {
			b.Fatal("the runs did not end")
		}
		time.Sleep(10 * time.Millisecond) // polling the emulator's truth, not waiting for a result
	}
	history := h.prefix + "history:{default/ecs/" + region + "}"
	before := "0"
	if last, err := h.redis.XRevRangeN(b.Context(), history, "+", "-", 1).Result(); err == nil && len(last) == 1 {
		before = last[0].ID
	}
	proxy.reset()
	rep := p.RunOnce(b.Context())
	if rep.Err != nil {
		b.Fatal(rep.Err)
	}
	calls, _ := proxy.reset()
	var total int
	for _, n := range calls {
		total += n
	}
	entries, err := h.redis.XRange(b.Context(), history, "("+before, "+").Result()
	if err != nil {
		b.Fatal(err)
	}
	var historyBytes int
	for _, e := range entries {
		batch, _ := e.Values["batch"].(string)
		historyBytes += len(batch)
	}
	var eventBytes, failed int
	for _, e := range h.events() {
		if e.Event.Data.Level == diff.LevelInstance && e.Event.Data.Status == diff.StatusFailed {
			eventBytes += len(e.Data)
			failed++
		}
	}
	if failed != 2*invocations {
		b.Fatalf("%d failed instance events, want %d", failed, 2*invocations)
	}
	b.ReportMetric(float64(total)/float64(invocations), "calls/failed-invocation")
	b.ReportMetric(float64(eventBytes)/float64(failed), "bytes/failed-event")
	b.ReportMetric(float64(historyBytes)/float64(len(rep.Transitions)), "history-bytes/transition")
}

// outputLister is the lister of a source: ecs (full), ecs-incremental,
// ecs-results or swas.
func outputLister(t testing.TB, source string, opts cloudassist.Options) poller.Lister {
	t.Helper()
	var l poller.Lister
	var err error
	switch source {
	case "ecs":
		l, err = cloudassist.NewECS(opts)
	case "ecs-incremental":
		opts.Strategy = cloudassist.StrategyIncremental
		l, err = cloudassist.NewECS(opts)
	case "ecs-results":
		l, err = cloudassist.NewECSResults(opts)
	case "swas":
		l, err = cloudassist.NewSWAS(opts)
	default:
		t.Fatalf("no source %q", source)
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestEachRunOfAPeriodicTaskCarriesItsOutput: several runs of a periodic
// task fail between two polls; each run's event carries the output read
// with that run (its history row), on both views of ECS.
func TestEachRunOfAPeriodicTaskCarriesItsOutput(t *testing.T) {
	for _, source := range []string{"ecs", "ecs-results"} {
		t.Run(source, func(t *testing.T) {
			h := newHarness(t)
			p := h.poller(outputLister(t, source, h.listerOptions(50)), h.store(), h.publisher(h.js), nil)
			mustRunOnce(t, p) // the baseline
			req := ecs.CreateRunCommandRequest()
			req.Type, req.CommandContent, req.InstanceId = "RunShellScript", "echo tick-marker; exit 2", &[]string{h.instances[0]}
			req.RepeatMode, req.Frequency = "Period", "rate(1s)"
			resp, err := h.sdk.RunCommand(req)
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, 15*time.Second, "three failed runs", func() bool {
				return len(finishedRuns(h.sim, resp.InvokeId, "Failed")[h.instances[0]]) >= 3
			})
			mustRunOnce(t, p)
			runs := map[int]bool{}
			for _, e := range h.events() {
				d := e.Event.Data
				if d.InvokeID != resp.InvokeId || d.InstanceID == "" || d.Status != diff.StatusFailed {
					continue
				}
				runs[*d.Repeats] = true
				if d.Output != "tick-marker" || d.OutputMissing {
					t.Errorf("run %d: output %q, missing %v", *d.Repeats, d.Output, d.OutputMissing)
				}
			}
			if len(runs) < 3 {
				t.Errorf("%d failed runs announced, want at least 3", len(runs))
			}
		})
	}
}

// TestOutputLookUpsTakeTheCheaperGrouping: a command failing across the
// fleet is looked up once (by its invocation), commands failing on one
// busy instance once too (by the instance), not once each.
func TestOutputLookUpsTakeTheCheaperGrouping(t *testing.T) {
	h := newHarness(t)
	proxy, proxyURL := newCountingProxy(t, h.simURL)
	opts := h.listerOptions(50)
	opts.Endpoint = proxyURL
	p := h.poller(outputLister(t, "ecs", opts), h.store(), h.publisher(h.js), nil)
	mustRunOnce(t, p) // the baseline
	for _, c := range []struct {
		what      string
		instances []string
		commands  int
	}{
		{"one command failing on 3 instances", h.instances[:3], 1},
		{"4 commands failing on one instance", h.instances[:1], 4},
	} {
		markers := map[string]string{}
		for i := range c.commands {
			m := fmt.Sprintf("grouping-%d-%d", len(c.instances), i)
			markers[h.run("echo "+m+"; exit 1", 0, c.instances...)] = m
		}
		eventually(t, 10*time.Second, "the runs to end", func() bool { return allFinal(truthByRecord(h.sim)) })
		proxy.reset()
		mustRunOnce(t, p)
		if _, output := proxy.reset(); output["DescribeInvocations"] != 1 {
			t.Errorf("%s: %d look-ups with IncludeOutput, want 1", c.what, output["DescribeInvocations"])
		}
		n := 0
		for _, e := range h.events() {
			if m, ok := markers[e.Event.Data.InvokeID]; ok && e.Event.Data.InstanceID != "" && e.Event.Data.Terminal {
				n++
				if e.Event.Data.Output != m {
					t.Errorf("%s: %s/%s output %q, want %q", c.what, e.Event.Data.InvokeID, e.Event.Data.InstanceID, e.Event.Data.Output, m)
				}
			}
		}
		if n != c.commands*len(c.instances) {
			t.Errorf("%s: %d failures announced, want %d", c.what, n, c.commands*len(c.instances))
		}
	}
}

// TestAnOutputLookUpThatNeverEndsIsCutShort: an API that answers output
// look-ups with empty pages and fresh NextTokens forever costs a few
// calls per look-up, not a listing's worth: the events go out marked
// outputMissing, by invocation and by instance alike.
func TestAnOutputLookUpThatNeverEndsIsCutShort(t *testing.T) {
	h := newHarness(t)
	proxy, proxyURL := newCountingProxy(t, h.simURL)
	opts := h.listerOptions(50)
	opts.Endpoint = proxyURL
	p := h.poller(outputLister(t, "ecs", opts), h.store(), h.publisher(h.js), nil)
	mustRunOnce(t, p) // the baseline
	proxy.endlessOutput.Store(true)
	for _, c := range []struct {
		what     string
		commands int
	}{{"by invocation", 1}, {"by instance", 2}} {
		ids := map[string]bool{}
		for range c.commands {
			ids[h.run("echo lost; exit 1", 0, h.instances[0])] = true
		}
		eventually(t, 10*time.Second, "the runs to end", func() bool { return allFinal(truthByRecord(h.sim)) })
		proxy.reset()
		mustRunOnce(t, p)
		if _, output := proxy.reset(); output["DescribeInvocations"] > 3 {
			t.Errorf("%s: %d look-up calls for a listing that never ends, want at most 3", c.what, output["DescribeInvocations"])
		}
		n := 0
		for _, e := range h.events() {
			if d := e.Event.Data; ids[d.InvokeID] && d.InstanceID != "" && d.Terminal {
				n++
				if !d.OutputMissing || d.Output != "" {
					t.Errorf("%s: %s output %q, missing %v: want it missing", c.what, d.InvokeID, d.Output, d.OutputMissing)
				}
			}
		}
		if n != c.commands {
			t.Errorf("%s: %d failures announced, want %d", c.what, n, c.commands)
		}
	}
}
