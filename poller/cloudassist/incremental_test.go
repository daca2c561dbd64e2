package cloudassist

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

func TestIncrementalReadsOnlyWhatCanChange(t *testing.T) {
	f := startSim(t, 2)
	ids := f.ecsInstances()
	for range 40 {
		f.run(t, "exit 0", 0, ids[0])
	}
	// A head scan reads the whole newest second it knows (ties are listed
	// in no documented order): let the 40 be older.
	f.advance(2 * time.Second)
	running := []string{f.run(t, "hang", 0, ids[1]), f.run(t, "hang", 0, ids[1]), f.run(t, "hang", 0, ids[1])}
	eventually(t, 5*time.Second, "the first 40 to finish and the 3 to run", func() bool {
		return f.invocationsReached("Success") == 40 && f.invocationsReached("Running") == 43
	})
	l := f.lister(t, func(o *Options) {
		o.PageSize, o.Strategy, o.ResyncEvery, o.HeadOverlap = 10, StrategyIncremental, time.Hour, -1
	}) // calls counted on the ideal API
	calls := func() int { return f.sim.Calls()["DescribeInvocations"] }

	before := calls()
	first, err := l.Snapshot(t.Context())
	if err != nil || !first.Complete || len(first.Records) != 43*2 {
		t.Fatalf("first cycle: complete=%v records=%d err=%v; want a full listing", first.Complete, len(first.Records), err)
	}
	if n := calls() - before; n != 5 {
		t.Errorf("the full listing took %d calls, want 5", n)
	}

	before = calls()
	second, err := l.Snapshot(t.Context())
	if err != nil || second.Complete {
		t.Fatalf("second cycle: complete=%v err=%v", second.Complete, err)
	}
	// The open invocations are the newest: the head page holds them all
	// (a sweep down to their creation second may read one page more).
	if n := calls() - before; n < 1 || n > 2 {
		t.Errorf("a steady incremental cycle took %d calls, want the head page (and at most one more)", n)
	}
	for _, id := range running {
		if r, ok := find(second, diff.Key{InvokeID: id}); !ok || r.Status != diff.StatusRunning {
			t.Errorf("active %s missing from the incremental snapshot", id)
		}
	}

	// One active invocation stops, one new one arrives.
	stop := ecs.CreateStopInvocationRequest()
	stop.InvokeId = running[0]
	if _, err := f.sdk.StopInvocation(stop); err != nil {
		t.Fatal(err)
	}
	f.advance(2 * time.Second)
	fresh := f.run(t, "exit 3", 0, ids[0])
	eventually(t, 5*time.Second, "the stop and the new run to finish", func() bool {
		snap, err := f.lister(t, nil).Snapshot(t.Context())
		a, _ := find(snap, diff.Key{InvokeID: running[0]})
		b, _ := find(snap, diff.Key{InvokeID: fresh})
		return err == nil && a.Status == diff.StatusStopped && b.Status == diff.StatusFailed
	})
	third, err := l.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := find(third, diff.Key{InvokeID: running[0]}); r.Status != diff.StatusStopped {
		t.Errorf("the stopped invocation (looked up after leaving the active set) is %q", r.Status)
	}
	if r, _ := find(third, diff.Key{InvokeID: fresh}); r.Status != diff.StatusFailed {
		t.Errorf("the new invocation (from the head scan) is %q", r.Status)
	}
	if _, ok := find(third, diff.Key{InvokeID: running[1]}); !ok {
		t.Error("a still-active invocation is missing")
	}
	if len(third.Records) > 2*10+2*3+2 {
		t.Errorf("the incremental snapshot read %d records: more than the head page, the active and the look-ups", len(third.Records))
	}
}

func TestIncrementalListsByStatusWhenTheOpenAreOld(t *testing.T) {
	f := startSim(t, 2)
	hung := f.oldOpenFleet(t)
	l := f.lister(t, func(o *Options) {
		o.PageSize, o.Strategy, o.ResyncEvery, o.HeadOverlap = 5, StrategyIncremental, time.Hour, -1
	}) // calls counted on the ideal API
	calls := func() int { return f.sim.Calls()["DescribeInvocations"] }
	if _, err := l.Snapshot(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Sweeping down to the 12 open ones would read all 52 (11 pages), and
	// looking each up 12 calls: the head, Pending, Stopping and Running
	// (3 pages) take 6.
	before := calls()
	if _, err := l.Snapshot(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := calls() - before; n != 6 {
		t.Errorf("a steady cycle took %d calls, want 6 (status listings)", n)
	}
	f.stop(t, hung[0])
	before = calls()
	snap, err := l.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := find(snap, diff.Key{InvokeID: hung[0]}); r.Status != diff.StatusStopped {
		t.Errorf("the stopped invocation (looked up after leaving the Running listing) is %q", r.Status)
	}
	if n := calls() - before; n != 7 {
		t.Errorf("the cycle after the stop took %d calls, want 7 (6 and one look-up)", n)
	}
}

func TestIncrementalSweepStopsPastTheOldestOpen(t *testing.T) {
	f := startSim(t, 2)
	// 200 invocations created 100ms apart; the newest 20 still run (for an
	// hour), over two or three distinct creation seconds.
	if err := f.sim.Seed(castest.SeedOptions{Invocations: 200, Active: 0.1, ActiveFor: time.Hour}); err != nil {
		t.Fatal(err)
	}
	l := f.lister(t, func(o *Options) {
		o.PageSize, o.Strategy, o.ResyncEvery, o.HeadOverlap = 5, StrategyIncremental, time.Hour, -1
	}) // calls counted on the ideal API
	calls := func() int { return f.sim.Calls()["DescribeInvocations"] }
	first, err := l.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var open []string
	for _, r := range first.Records {
		if r.InstanceID == "" && !r.Status.Terminal() {
			open = append(open, r.InvokeID)
		}
	}
	if len(open) != 20 {
		t.Fatalf("%d open invocations after the full listing, want 20", len(open))
	}
	p := l.inc.plan(5, false)
	before := calls()
	second, err := l.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	n := calls() - before
	// Sweeping is cheaper than the 4 status listings (7 calls). Where the
	// oldest open ones share their second with many finished ones, the
	// plan may stop short of them and look them up instead.
	if !p.sweep || p.cutoff.IsZero() || p.lookUps > 2 {
		t.Errorf("plan %+v: want a sweep down to (nearly) the oldest open invocation", p)
	}
	// The 20 open ones are 4 pages; the cutoff's second can add a page or
	// two, and the sweep reads one page past it. The full listing is 40.
	if n < 4 || n > p.calls+1 {
		t.Errorf("the sweep took %d calls (estimated %d); want it to stop just past its cutoff", n, p.calls)
	}
	for _, id := range open {
		if r, ok := find(second, diff.Key{InvokeID: id}); !ok || r.Status != diff.StatusRunning {
			t.Errorf("open invocation %s not read by the sweep", id)
		}
	}
}

func TestIncrementalPlan(t *testing.T) {
	base := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	// 1,000 invocations, one a second.
	created := make([]int64, 1000)
	for i := range created {
		created[i] = at(i).Unix()
	}
	open := func(secs ...int) map[string]openInvocation {
		m := map[string]openInvocation{}
		for _, s := range secs {
			m[fmt.Sprintf("t-%04d", s)] = openInvocation{created: at(s), status: diff.StatusRunning}
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		inc     incremental
		sweep   bool
		cutoff  int // seconds after base; -1: none
		lookUps int
		calls   int
	}{
		{"nothing open: the head", incremental{created: created, fresh: 20}, true, -1, 0, 1},
		{"the newest open: sweep to them", incremental{created: created, open: open(990, 960, 900), fresh: 20}, true, 900, 0, 3},
		{"one old straggler is looked up", incremental{created: created, open: open(990, 960, 5), fresh: 20}, true, 960, 1, 3},
		{"many old open: status listings", incremental{created: created, open: open(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), fresh: 20, closed: 2}, false, -1, 0, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.inc.plan(50, false)
			if p.sweep != tc.sweep || p.lookUps != tc.lookUps || p.calls != tc.calls {
				t.Errorf("plan: sweep %v, %d look-ups, %d calls; want %v, %d, %d", p.sweep, p.lookUps, p.calls, tc.sweep, tc.lookUps, tc.calls)
			}
			if tc.cutoff >= 0 {
				if want := at(tc.cutoff); !p.cutoff.Equal(want) {
					t.Errorf("cutoff %v, want %v", p.cutoff, want)
				}
			} else if !p.cutoff.IsZero() {
				t.Errorf("cutoff %v, want none", p.cutoff)
			}
		})
	}
}

// invocationsReached counts the invocations the emulator moved to status.
func (f *fixture) invocationsReached(status string) int {
	n := 0
	for _, e := range f.sim.Truth() {
		if e.Level == "invocation" && e.To == status {
			n++
		}
	}
	return n
}

func TestParseStrategy(t *testing.T) {
	for in, want := range map[string]Strategy{"": StrategyIncremental, "full": StrategyFull, "incremental": StrategyIncremental} {
		if got, err := ParseStrategy(in); err != nil || got != want {
			t.Errorf("ParseStrategy(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseStrategy("lazy"); err == nil {
		t.Error("accepted an unknown strategy")
	}
}

// TestRefusedStatusFiltersAreDropped: seed 000 documents only Running of
// the filters the status listings use. An API that refuses Pending and
// Stopping must not stop the incremental strategy: it notices once, lists
// without them from then on, and still finds what changed.
func TestRefusedStatusFiltersAreDropped(t *testing.T) {
	f := startSim(t, 2)
	if err := f.sim.SetBehaviour(castest.Behaviour{StrictFilters: true}); err != nil {
		t.Fatal(err)
	}
	hung := f.oldOpenFleet(t)
	l := f.lister(t, func(o *Options) {
		o.PageSize, o.Strategy, o.ResyncEvery, o.HeadOverlap = 5, StrategyIncremental, time.Hour, -1
	})
	calls := func() int { return f.sim.Calls()["DescribeInvocations"] }
	if _, err := l.Snapshot(t.Context()); err != nil {
		t.Fatal(err)
	}
	before := calls()
	if _, err := l.Snapshot(t.Context()); err != nil {
		t.Fatalf("a steady cycle against strict filters: %v", err)
	}
	refusing := calls() - before
	f.stop(t, hung[0])
	before = calls()
	snap, err := l.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := find(snap, diff.Key{InvokeID: hung[0]}); r.Status != diff.StatusStopped {
		t.Errorf("the stopped invocation is %q, want Stopped", r.Status)
	}
	// Head, Running (3 pages) and one look-up: Pending and Stopping are not asked again.
	if n := calls() - before; n != 5 || refusing != 6 {
		t.Errorf("cycles took %d calls (refusals included) then %d, want 6 then 5", refusing, n)
	}
}

// TestIncrementalFindsNewInvocationsListedOldestFirst: an API that lists
// oldest first, whose oldest page holds one second only, must still be
// noticed (across pages) so that steady cycles read to the new ones.
func TestIncrementalFindsNewInvocationsListedOldestFirst(t *testing.T) {
	f := startSim(t, 2)
	if err := f.sim.SetBehaviour(castest.Behaviour{Order: castest.OrderOldest}); err != nil {
		t.Fatal(err)
	}
	ids := f.ecsInstances()
	for range 5 {
		f.run(t, "exit 0", 0, ids[0])
	}
	f.advance(2 * time.Second)
	for range 5 {
		f.run(t, "exit 0", 0, ids[0])
	}
	l := f.lister(t, func(o *Options) { o.PageSize, o.Strategy, o.ResyncEvery = 5, StrategyIncremental, time.Hour })
	if _, err := l.Snapshot(t.Context()); err != nil {
		t.Fatal(err)
	}
	for cycle := range 3 {
		f.advance(2 * time.Second)
		fresh := f.run(t, "exit 0", 0, ids[0])
		snap, err := l.Snapshot(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := find(snap, diff.Key{InvokeID: fresh}); !ok {
			t.Errorf("cycle %d: the new invocation %s, listed last, was not read", cycle, fresh)
		}
	}
}

// TestIncrementalSurvivesAnAPIClockAhead: an invocation whose
// CreationTime is in the future (the API's clock stepped back since) must
// not end later head scans before the invocations created after it.
func TestIncrementalSurvivesAnAPIClockAhead(t *testing.T) {
	f := startSim(t, 2)
	ids := f.ecsInstances()
	f.run(t, "exit 0", 0, ids[0])
	f.advance(10 * time.Minute)
	f.run(t, "exit 0", 0, ids[0]) // created ten minutes ahead
	f.advance(-10 * time.Minute)
	l := f.lister(t, func(o *Options) {
		o.PageSize, o.Strategy, o.ResyncEvery, o.Now = 5, StrategyIncremental, time.Hour, time.Now // our clock: behind the future one
	})
	if _, err := l.Snapshot(t.Context()); err != nil {
		t.Fatal(err)
	}
	var fresh []string
	for range 8 {
		f.advance(time.Second)
		fresh = append(fresh, f.run(t, "exit 0", 0, ids[0]))
	}
	snap, err := l.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range fresh {
		if _, ok := find(snap, diff.Key{InvokeID: id}); !ok {
			t.Errorf("%s, created after a future-dated invocation, was not read", id)
		}
	}
}

// TestOtherErrorsOfAFilteredCallAreNotARefusedFilter: only an error about
// the filter drops it; a signature error on a status listing fails the
// cycle, and the filter is asked again next time.
func TestOtherErrorsOfAFilteredCallAreNotARefusedFilter(t *testing.T) {
	f := startSim(t, 2)
	f.oldOpenFleet(t)
	l := f.lister(t, func(o *Options) {
		o.PageSize, o.Strategy, o.ResyncEvery, o.HeadOverlap = 5, StrategyIncremental, time.Hour, -1
	})
	if _, err := l.Snapshot(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The head scan passes; the Pending listing gets a signature error.
	if err := f.sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultError, Code: "IncompleteSignature", Skip: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Snapshot(t.Context()); err == nil || ClassOf(err) != ClassPermanent {
		t.Fatalf("a signature error on a status listing gave %v, want the cycle to fail", err)
	}
	l.api.mu.Lock()
	refused := len(l.api.refused)
	l.api.mu.Unlock()
	if refused != 0 {
		t.Errorf("a signature error was taken for a refused filter")
	}
}

// TestListingsOutliveTokensThatKeepExpiring: tokens that never last from
// one page to the next (here they expire after 1ms, and each call takes
// 5ms) made every full listing fail for good; after a few refusals the
// listing pages by number instead.
func TestListingsOutliveTokensThatKeepExpiring(t *testing.T) {
	f := startSim(t, 2)
	ids := f.ecsInstances()
	var want []string
	for range 4 {
		want = append(want, f.run(t, "exit 0", 0, ids[0]))
	}
	if err := f.sim.SetBehaviour(castest.Behaviour{TokenTTL: castest.Duration(time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if err := f.sim.InjectFault(castest.Fault{Kind: castest.FaultLatency, Latency: "5ms", Count: -1}); err != nil {
		t.Fatal(err)
	}
	results, err := NewECSResults(Options{Region: region, Endpoint: f.url, AccessKeyID: testKeyID, AccessKeySecret: testKeySecret,
		TransientRetries: -1, PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []interface {
		Snapshot(context.Context) (diff.Snapshot, error)
	}{f.lister(t, func(o *Options) { o.PageSize = 1 }), results} {
		snap, err := l.Snapshot(t.Context())
		if err != nil {
			t.Fatalf("%T: %v", l, err)
		}
		for _, id := range want {
			if _, ok := find(snap, diff.Key{InvokeID: id}); !ok {
				t.Errorf("%T: %s missing", l, id)
			}
		}
	}
}

// oldOpenFleet runs 12 invocations that hang (open, and the oldest), then
// 40 that finish, one a second (a head scan reads the whole newest second
// it knows), and waits for those to finish: the status listings are then
// the cheaper plan. It returns the hung ones, oldest first.
func (f *fixture) oldOpenFleet(t *testing.T) []string {
	t.Helper()
	ids := f.ecsInstances()
	var hung []string
	for range 12 {
		hung = append(hung, f.run(t, "hang", 0, ids[1]))
	}
	for range 40 {
		f.advance(time.Second)
		f.run(t, "exit 0", 0, ids[0])
	}
	eventually(t, 5*time.Second, "the newer 40 to finish", func() bool { return f.invocationsReached("Success") == 40 })
	return hung
}

// stop stops an invocation and waits until the emulator says it stopped.
func (f *fixture) stop(t *testing.T, invokeID string) {
	t.Helper()
	req := ecs.CreateStopInvocationRequest()
	req.InvokeId = invokeID
	if _, err := f.sdk.StopInvocation(req); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the stop", func() bool {
		for _, e := range f.sim.Truth() {
			if e.InvokeID == invokeID && e.Level == "invocation" && e.To == "Stopped" {
				return true
			}
		}
		return false
	})
}
