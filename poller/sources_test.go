package poller_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	swas "github.com/aliyun/alibaba-cloud-sdk-go/services/swas-open"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// ecsListers are the two views of ECS records.
func ecsListers(h *harness) map[string]poller.Lister {
	ecsL, err := cloudassist.NewECS(h.listerOptions(5))
	if err != nil {
		h.t.Fatal(err)
	}
	results, err := cloudassist.NewECSResults(h.listerOptions(5))
	if err != nil {
		h.t.Fatal(err)
	}
	return map[string]poller.Lister{"ecs": ecsL, "ecs-results": results}
}

func mustRunOnce(t *testing.T, p *poller.Poller) poller.Report {
	t.Helper()
	rep := p.RunOnce(t.Context())
	if rep.Err != nil {
		t.Fatalf("cycle: %v", rep.Err)
	}
	return rep
}

// finishedRuns counts, per instance, the runs of invokeID the emulator
// finished with status.
func finishedRuns(sim *castest.Server, invokeID, status string) map[string]map[int]bool {
	out := map[string]map[int]bool{}
	for _, e := range sim.Truth() {
		if e.InvokeID == invokeID && e.InstanceID != "" && e.From == "Running" && e.To == status {
			if out[e.InstanceID] == nil {
				out[e.InstanceID] = map[int]bool{}
			}
			out[e.InstanceID][e.Repeats] = true
		}
	}
	return out
}

func TestPeriodicRunsAreAnnouncedOncePerRun(t *testing.T) {
	for _, source := range []string{"ecs", "ecs-results"} {
		t.Run(source, func(t *testing.T) {
			h := newHarness(t)
			p := h.poller(ecsListers(h)[source], h.store(), h.publisher(h.js), nil)
			mustRunOnce(t, p) // baseline
			req := ecs.CreateRunCommandRequest()
			req.Type, req.CommandContent, req.InstanceId = "RunShellScript", "echo tick", &[]string{h.instances[0], h.instances[1]}
			req.RepeatMode, req.Frequency = "Period", "rate(1s)"
			resp, err := h.sdk.RunCommand(req)
			if err != nil {
				t.Fatal(err)
			}
			runsAtLeast := func(n int) func() bool {
				return func() bool {
					runs := finishedRuns(h.sim, resp.InvokeId, "Success")
					return len(runs) == 2 && len(runs[h.instances[0]]) >= n && len(runs[h.instances[1]]) >= n
				}
			}
			// Several runs start and finish between two polls.
			eventually(t, 15*time.Second, "three runs on each instance", runsAtLeast(3))
			mustRunOnce(t, p)
			eventually(t, 15*time.Second, "five runs on each instance", runsAtLeast(5))
			mustRunOnce(t, p)
			stop := ecs.CreateStopInvocationRequest()
			stop.InvokeId = resp.InvokeId
			if _, err := h.sdk.StopInvocation(stop); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "the task to stop", func() bool {
				entries := truthByRecord(h.sim)[diff.Key{InvokeID: resp.InvokeId}]
				return entries[len(entries)-1].To == "Stopped"
			})
			mustRunOnce(t, p)

			evs := h.events()
			successes := map[string]map[int]int{}
			ids := map[string]bool{}
			for _, e := range evs {
				if ids[e.MsgID] {
					t.Errorf("event %s published twice", e.MsgID)
				}
				ids[e.MsgID] = true
				d := e.Event.Data
				if d.InstanceID != "" && d.Status == "Success" {
					if successes[d.InstanceID] == nil {
						successes[d.InstanceID] = map[int]int{}
					}
					successes[d.InstanceID][*d.Repeats]++
				}
			}
			for inst, runs := range finishedRuns(h.sim, resp.InvokeId, "Success") {
				for r := range runs {
					if successes[inst][r] != 1 {
						t.Errorf("%s run %d: announced %d times, want once", inst, r, successes[inst][r])
					}
				}
				if len(successes[inst]) != len(runs) {
					t.Errorf("%s: %d runs announced, the emulator finished %d", inst, len(successes[inst]), len(runs))
				}
			}
			final := finalFromEvents(evs)
			if got := final[diff.Key{InvokeID: resp.InvokeId}].Status; got != "Stopped" {
				t.Errorf("aggregate ended %q, want Stopped", got)
			}
			for _, inst := range h.instances[:2] {
				if got := final[diff.Key{InvokeID: resp.InvokeId, InstanceID: inst}].Status; got != "Stopped" {
					t.Errorf("%s ended %q, want Stopped", inst, got)
				}
			}
		})
	}
}

func TestStopAndReleaseMidRun(t *testing.T) {
	for _, source := range []string{"ecs", "ecs-results"} {
		t.Run(source, func(t *testing.T) {
			h := newHarnessWith(t, func(o *castest.Options) { o.StopDelay = 700 * time.Millisecond })
			kill := startPoller(t, h.poller(ecsListers(h)[source], h.store(), h.publisher(h.js), func(o *poller.Options) {
				o.Interval = 40 * time.Millisecond
			}))
			defer kill()
			i0, i1 := h.instances[0], h.instances[1]
			eventually(t, 5*time.Second, "the baseline", func() bool {
				prev, err := h.store().Load(t.Context(), shard, nil)
				return err == nil && prev.Known
			})
			invoke := h.run("echo busy; hang", 600, i0, i1)
			key := func(inst string) diff.Key { return diff.Key{InvokeID: invoke, InstanceID: inst} }
			eventually(t, 10*time.Second, "both runs to be announced Running", func() bool {
				f := finalFromEvents(h.events())
				return f[key(i0)].Status == "Running" && f[key(i1)].Status == "Running"
			})
			stop := ecs.CreateStopInvocationRequest()
			stop.InvokeId, stop.InstanceId = invoke, &[]string{i0}
			if _, err := h.sdk.StopInvocation(stop); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "Stopping to be announced", func() bool {
				return finalFromEvents(h.events())[key(i0)].Status == "Stopping"
			})
			if err := h.sim.SetInstance(i1, castest.InstanceReleased, ""); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "the final statuses", func() bool {
				f := finalFromEvents(h.events())
				return f[key(i0)].Status == "Stopped" && f[key(i1)].Status == "Terminated" && f[diff.Key{InvokeID: invoke}].Status == "Stopped"
			})
			chains := map[diff.Key][]string{}
			for _, e := range h.events() {
				d := e.Event.Data
				chains[recordKey(d)] = append(chains[recordKey(d)], string(d.PreviousStatus+">"+d.Status))
				if d.InstanceID == i1 && d.Status == "Terminated" && d.ErrorCode != "InstanceReleased" {
					t.Errorf("released instance: errorCode %q, want InstanceReleased", d.ErrorCode)
				}
			}
			want := map[diff.Key]string{
				key(i0):            ">Running Running>Stopping Stopping>Stopped",
				key(i1):            ">Running Running>Terminated",
				{InvokeID: invoke}: ">Running Running>Stopping Stopping>Stopped",
			}
			for k, w := range want {
				// The first event may come at Pending or at Running, depending on the poll.
				got := strings.Join(chains[k], " ")
				got = strings.Replace(got, ">Pending Pending>Running", ">Running", 1)
				if got != w {
					t.Errorf("%v: events %q, want %q", k, got, w)
				}
			}
		})
	}
}

func TestSWASPagingWhileInvocationsArrive(t *testing.T) {
	h := newHarness(t)
	var swasIDs []string
	for _, inst := range h.sim.Instances() {
		if inst.Product == castest.ProductSWAS {
			swasIDs = append(swasIDs, inst.ID)
		}
	}
	// Slow pages make invocations arrive while a listing is under way.
	if err := h.sim.InjectFault(castest.Fault{Action: "DescribeCommandInvocations", Kind: castest.FaultLatency, Latency: "15ms", Count: -1}); err != nil {
		t.Fatal(err)
	}
	lister, err := cloudassist.NewSWAS(h.listerOptions(2))
	if err != nil {
		t.Fatal(err)
	}
	var cycles int
	var mu sync.Mutex
	p := h.poller(lister, h.store(), h.publisher(h.js), func(o *poller.Options) {
		o.Shard = diff.Shard{Source: diff.SourceSWAS, Region: region}
		o.Interval = 30 * time.Millisecond
		o.OnCycle = func(r poller.Report) {
			mu.Lock()
			defer mu.Unlock()
			cycles++
		}
	})
	mustRunOnce(t, p)
	kill := startPoller(t, p)
	for i := range 24 {
		h.swasRun(fmt.Sprintf("echo %d; sleep 0.%d; exit %d", i, i%3, i%2), swasIDs[i%len(swasIDs)])
		time.Sleep(25 * time.Millisecond) // pacing the arrivals, not waiting for a result
	}
	truth := waitCaughtUp(t, h, 15*time.Second)
	kill()
	evs := h.events()
	ids := map[string]bool{}
	chains := map[diff.Key][]string{}
	for _, e := range evs {
		if ids[e.MsgID] {
			t.Errorf("event %s published twice", e.MsgID)
		}
		ids[e.MsgID] = true
		d := e.Event.Data
		if d.Source != "swas" || !strings.Contains(e.Subject, ".swas."+region+".") {
			t.Errorf("bad source or subject: %s %s", d.Source, e.Subject)
		}
		k := recordKey(d)
		if len(chains[k]) > 0 && string(d.PreviousStatus) != chains[k][len(chains[k])-1] || len(chains[k]) == 0 && d.PreviousStatus != "" {
			t.Errorf("%v: previousStatus %q breaks the chain %v", k, d.PreviousStatus, chains[k])
		}
		chains[k] = append(chains[k], string(d.Status))
		found := false
		for _, te := range truth[k] {
			found = found || te.To == string(d.Status)
		}
		if !found {
			t.Errorf("%v: spurious status %q (never happened)", k, d.Status)
		}
	}
	if len(chains) != len(truth) {
		t.Errorf("%d records announced, the emulator had %d", len(chains), len(truth))
	}
}

// swasRun runs a command on a SWAS instance through the SWAS SDK.
func (h *harness) swasRun(script string, instance string) string {
	h.t.Helper()
	client, err := swas.NewClientWithOptions(region, sdk.NewConfig(), credentials.NewStaticAKCredentialsProvider(keyID, secret))
	if err != nil {
		h.t.Fatal(err)
	}
	client.Domain = strings.TrimPrefix(h.simURL, "http://")
	req := swas.CreateRunCommandRequest()
	req.Type, req.InstanceId, req.CommandContent = "RunShellScript", instance, script
	resp, err := client.RunCommand(req)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.InvokeId
}

func TestRetentionExpiryIsNotAnEvent(t *testing.T) {
	for _, source := range []string{"ecs", "ecs-results", "swas"} {
		t.Run(source, func(t *testing.T) {
			h := newHarness(t)
			st, pub := h.store(), h.publisher(h.js)
			var lister poller.Lister
			sh := shard
			instance := h.instances[0]
			run := func(script string) string { return h.run(script, 0, instance) }
			if source == "swas" {
				sh = diff.Shard{Source: diff.SourceSWAS, Region: region}
				for _, inst := range h.sim.Instances() {
					if inst.Product == castest.ProductSWAS {
						instance = inst.ID
					}
				}
				l, err := cloudassist.NewSWAS(h.listerOptions(50))
				if err != nil {
					t.Fatal(err)
				}
				lister, run = l, func(script string) string { return h.swasRun(script, instance) }
			} else {
				lister = ecsListers(h)[source]
			}
			p := h.poller(lister, st, pub, func(o *poller.Options) { o.Shard = sh })
			mustRunOnce(t, p)
			var invokes []string
			for i := range 3 {
				invokes = append(invokes, run(fmt.Sprintf("exit %d", i)))
			}
			eventually(t, 5*time.Second, "the runs to finish", func() bool { return allFinal(truthByRecord(h.sim)) })
			if rep := mustRunOnce(t, p); len(rep.Transitions) != 6 {
				t.Fatalf("%d transitions, want 6", len(rep.Transitions))
			}
			before := len(h.events())
			if err := h.sim.SetRetention(0, 1); err != nil { // keep only the newest invocation
				t.Fatal(err)
			}
			if rep := mustRunOnce(t, p); len(rep.Transitions) != 0 || rep.Expired != 0 {
				t.Fatalf("first listing without them: %d transitions, %d expired; one listing must not expire", len(rep.Transitions), rep.Expired)
			}
			if rep := mustRunOnce(t, p); len(rep.Transitions) != 0 || rep.Expired != 4 {
				t.Fatalf("expiry: %d transitions, %d expired; want 0 events and 4 tombstones", len(rep.Transitions), rep.Expired)
			}
			all, err := st.Absent(t.Context(), sh, func(diff.Key) bool { return false })
			if err != nil {
				t.Fatal(err)
			}
			for _, id := range invokes[:2] {
				if !all[diff.Key{InvokeID: id}].Gone || !all[diff.Key{InvokeID: id, InstanceID: instance}].Gone {
					t.Errorf("%s is not tombstoned: %+v", id, all[diff.Key{InvokeID: id}])
				}
			}
			if all[diff.Key{InvokeID: invokes[2]}].Gone {
				t.Error("the invocation still listed was tombstoned")
			}
			if source != "ecs" {
				return
			}
			// An expired record served again is diffed against its
			// tombstone: unchanged, it is silent; changed, it is announced
			// from its last status.
			serve := func(status string) {
				body, _ := json.Marshal(map[string]any{"RequestId": "r", "NextToken": "", "Invocations": map[string]any{"Invocation": []any{
					map[string]any{"InvokeId": invokes[0], "InvocationStatus": status, "Parameters": "{}", "InvokeInstances": map[string]any{
						"InvokeInstance": []any{map[string]any{"InstanceId": instance, "InvocationStatus": status, "Repeats": 1}}}},
				}}})
				if err := h.sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultRaw, Body: string(body)}); err != nil {
					t.Fatal(err)
				}
			}
			serve("Success")
			if rep := mustRunOnce(t, p); len(rep.Transitions) != 0 {
				t.Fatalf("an unchanged tombstoned record was announced: %+v", rep.Transitions)
			}
			if after := len(h.events()); after != before {
				t.Errorf("the stream grew from %d to %d events", before, after)
			}
			serve("Failed")
			rep := mustRunOnce(t, p)
			if len(rep.Transitions) != 2 {
				t.Fatalf("a tombstoned record that changed gave %+v, want its 2 records announced", rep.Transitions)
			}
			for _, tr := range rep.Transitions {
				if tr.Previous != diff.StatusSuccess || tr.Record.Status != diff.StatusFailed {
					t.Errorf("%v: %s -> %s, want Success -> Failed", tr.Record.Key, tr.Previous, tr.Record.Status)
				}
			}
		})
	}
}

func TestRebootRunsBetweenPollsAreEachAnnounced(t *testing.T) {
	for _, source := range []string{"ecs", "ecs-results"} {
		t.Run(source, func(t *testing.T) {
			h := newHarness(t)
			p := h.poller(ecsListers(h)[source], h.store(), h.publisher(h.js), nil)
			mustRunOnce(t, p)
			inst := h.instances[2]
			req := ecs.CreateRunCommandRequest()
			req.Type, req.CommandContent, req.InstanceId, req.RepeatMode = "RunShellScript", "echo booted", &[]string{inst}, "EveryReboot"
			resp, err := h.sdk.RunCommand(req)
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, "the task to wait for a reboot", func() bool {
				e := truthByRecord(h.sim)[diff.Key{InvokeID: resp.InvokeId, InstanceID: inst}]
				return len(e) > 0 && e[len(e)-1].To == "Scheduled"
			})
			mustRunOnce(t, p)
			for n := 1; n <= 3; n++ { // three reboots, no poll in between
				if err := h.sim.Reboot(inst); err != nil {
					t.Fatal(err)
				}
				eventually(t, 5*time.Second, "the reboot run", func() bool { return len(finishedRuns(h.sim, resp.InvokeId, "Success")[inst]) == n })
			}
			rep := mustRunOnce(t, p)
			var runs []int
			for _, tr := range rep.Transitions {
				if tr.Record.InstanceID == inst && tr.Record.Status == diff.StatusSuccess {
					runs = append(runs, tr.Record.Repeats)
				}
			}
			if fmt.Sprint(runs) != "[1 2 3]" {
				t.Errorf("announced successful runs %v, want [1 2 3]; transitions: %+v", runs, rep.Transitions)
			}
		})
	}
}

// TestPeriodicAggregateSwingsAreAnnounced: a periodic task's aggregate goes
// Running at each run and Scheduled between runs; aggregates carry no run
// counter, and the rank rule once took every Scheduled after Running for a
// stale read, so the stream said Running forever while the task waited.
func TestPeriodicAggregateSwingsAreAnnounced(t *testing.T) {
	for _, source := range []string{"ecs", "ecs-results"} {
		t.Run(source, func(t *testing.T) {
			h := newHarness(t)
			p := h.poller(ecsListers(h)[source], h.store(), h.publisher(h.js), nil)
			mustRunOnce(t, p)
			req := ecs.CreateRunCommandRequest()
			req.Type, req.CommandContent, req.InstanceId = "RunShellScript", "sleep 0.4", &[]string{h.instances[0]}
			req.RepeatMode, req.Frequency = "Period", "rate(1s)"
			resp, err := h.sdk.RunCommand(req)
			if err != nil {
				t.Fatal(err)
			}
			agg := diff.Key{InvokeID: resp.InvokeId}
			status := func() string {
				e := truthByRecord(h.sim)[agg]
				if len(e) == 0 {
					return ""
				}
				return e[len(e)-1].To
			}
			for range 2 { // two runs: poll while it runs, then while it waits
				eventually(t, 10*time.Second, "a run", func() bool { return status() == "Running" })
				mustRunOnce(t, p)
				eventually(t, 10*time.Second, "the wait after it", func() bool { return status() == "Scheduled" })
				mustRunOnce(t, p)
			}
			var chain []string
			for _, e := range h.events() {
				if d := e.Event.Data; d.InvokeID == resp.InvokeId && d.InstanceID == "" {
					chain = append(chain, string(d.PreviousStatus+">"+d.Status))
				}
			}
			if got := strings.Count(strings.Join(chain, " "), "Running>Scheduled"); got != 2 {
				t.Errorf("aggregate events %v: %d Running>Scheduled, want 2", chain, got)
			}
			if got := strings.Count(strings.Join(chain, " "), "Scheduled>Running"); got != 1 { // the first poll saw it Running
				t.Errorf("aggregate events %v: %d Scheduled>Running, want 1", chain, got)
			}
		})
	}
}
