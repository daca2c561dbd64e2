package poller_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/testenv"
)

// invocation is one invocation of a hand-made DescribeInvocations page.
type invocation struct {
	id, status string
	instances  map[string]string // instance id -> status
}

// serve makes the emulator answer the next DescribeInvocations call with
// exactly these invocations, on one page that claims to be the last.
func (h *harness) serve(invs ...invocation) {
	h.t.Helper()
	h.servePage("", invs...)
}

// TestExpiryGuardHoldsAMassAbsence is the regression test of one wrong
// but complete listing tombstoning a shard: a listing that lacks records
// expires nothing (beyond the guard it is logged and counted), and only a
// second one that agrees does.
func TestExpiryGuardHoldsAMassAbsence(t *testing.T) {
	h := newHarness(t)
	lister, st, pub := h.parts(50)
	reg := prometheus.NewRegistry()
	metrics := poller.NewMetrics(poller.MetricsOptions{Registerer: reg})
	p := h.poller(lister, st, pub, func(o *poller.Options) { o.ExpiryGuardMin = 2; o.Metrics = metrics })
	var fleet []invocation
	for i := range 5 {
		fleet = append(fleet, invocation{id: fmt.Sprintf("t-%d", i), status: "Running", instances: map[string]string{"i-1": "Running"}})
	}
	h.serve(fleet...)
	mustRunOnce(t, p) // baseline: 10 records

	h.serve() // an empty page that says it is complete
	if rep := mustRunOnce(t, p); rep.Expired != 0 {
		t.Fatalf("one empty listing expired %d records", rep.Expired)
	}
	if got := testenv.MetricSum(t, reg, "capoller_expiry_held_total"); got != 10 {
		t.Errorf("capoller_expiry_held_total = %v, want 10", got)
	}
	h.serve(fleet...) // the listing is back: nothing was lost, nothing to announce
	if rep := mustRunOnce(t, p); rep.Expired != 0 || len(rep.Transitions) != 0 {
		t.Fatalf("after the glitch: %d expired, %+v", rep.Expired, rep.Transitions)
	}
	// A glitch, then a change: the change is announced.
	h.serve()
	mustRunOnce(t, p)
	fleet[0].status, fleet[0].instances = "Success", map[string]string{"i-1": "Success"}
	h.serve(fleet...)
	if rep := mustRunOnce(t, p); len(rep.Transitions) != 2 || rep.Transitions[0].Previous != diff.StatusRunning {
		t.Fatalf("a change after a glitch: %+v", rep.Transitions)
	}
	// Two complete listings that agree do expire.
	h.serve(fleet[:1]...)
	if rep := mustRunOnce(t, p); rep.Expired != 0 {
		t.Fatalf("first listing without four invocations expired %d", rep.Expired)
	}
	h.serve(fleet[:1]...)
	if rep := mustRunOnce(t, p); rep.Expired != 8 {
		t.Fatalf("the second listing that agrees expired %d records, want 8", rep.Expired)
	}
	// Within the guard too, one listing is never enough: a drifting page
	// may have skipped the record.
	h.serve()
	if rep := mustRunOnce(t, p); rep.Expired != 0 {
		t.Fatalf("one listing within the guard expired %d records", rep.Expired)
	}
	h.serve()
	if rep := mustRunOnce(t, p); rep.Expired != 2 {
		t.Fatalf("the second listing expired %d records, want 2", rep.Expired)
	}
}

// failCommits is a store whose next n commits fail, as when Redis goes
// away between the publisher's acknowledgement and the commit.
type failCommits struct {
	poller.Store
	skip, n atomic.Int32 // let skip commits through, then fail n
}

func (f *failCommits) Commit(ctx context.Context, shard diff.Shard, updates []diff.Update, transitions []diff.Transition) error {
	if f.skip.Add(-1) >= 0 {
		return f.Store.Commit(ctx, shard, updates, transitions)
	}
	if f.n.Add(-1) >= 0 {
		return errors.New("injected: the store went away")
	}
	return f.Store.Commit(ctx, shard, updates, transitions)
}

// MaxStaged passes the store's queue depth through, so that batches are
// staged side by side as they are on the bare store.
func (f *failCommits) MaxStaged() int {
	if q, ok := f.Store.(interface{ MaxStaged() int }); ok {
		return q.MaxStaged()
	}
	return 1
}

// DiscardOldestStaged passes through too.
func (f *failCommits) DiscardOldestStaged(ctx context.Context, s diff.Shard) error {
	if d, ok := f.Store.(interface {
		DiscardOldestStaged(context.Context, diff.Shard) error
	}); ok {
		return d.DiscardOldestStaged(ctx, s)
	}
	return f.Store.Stage(ctx, s, diff.Result{})
}

// TestPreviousStatusHoldsAcrossAFailedCommit is the regression test of
// previousStatus contradicting the previous event: a batch acknowledged
// but not committed, then a change before the retry, must give
// Pending→Running then Running→Success — never Pending→Success — whether
// the same process retries or a new one (after a crash) does.
func TestPreviousStatusHoldsAcrossAFailedCommit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		restart bool
		kv      bool
	}{{"redis same process", false, false}, {"redis after a crash", true, false}, {"natskv after a crash", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			lister, redisStore, pub := h.parts(50)
			var base poller.Store = redisStore
			if tc.kv {
				bucket := testenv.Name("CAPOLLER_KV")
				_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
				kv, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
				if err != nil {
					t.Fatal(err)
				}
				base = kv
			}
			st := &failCommits{Store: base}
			p := h.poller(lister, st, pub, nil)
			inv := func(status string) invocation {
				return invocation{id: "t-1", status: status, instances: map[string]string{"i-1": status}}
			}
			h.serve(inv("Pending"))
			mustRunOnce(t, p)
			h.serve(inv("Running"))
			st.n.Store(1)
			rep := p.RunOnce(t.Context())
			if ce, ok := errors.AsType[*poller.CycleError](rep.Err); !ok || ce.Stage != poller.StageCommit || rep.Published != 2 {
				t.Fatalf("the injected commit failure gave %v after %d published", rep.Err, rep.Published)
			}
			if tc.restart {
				fresh, err := cloudassist.NewECS(h.listerOptions(50))
				if err != nil {
					t.Fatal(err)
				}
				p = h.poller(fresh, base, h.publisher(h.js), nil)
			}
			h.serve(inv("Success"))
			rep = mustRunOnce(t, p)
			if rep.Duplicates != 2 {
				t.Errorf("the staged batch was re-published with %d duplicates, want 2", rep.Duplicates)
			}
			chain := map[diff.Key][]string{}
			for _, e := range h.events() {
				k := recordKey(e.Event.Data)
				chain[k] = append(chain[k], string(e.Event.Data.PreviousStatus+">"+e.Event.Data.Status))
			}
			for _, k := range []diff.Key{{InvokeID: "t-1"}, {InvokeID: "t-1", InstanceID: "i-1"}} {
				if got := fmt.Sprint(chain[k]); got != "[Pending>Running Running>Success]" {
					t.Errorf("%v: events %s, want [Pending>Running Running>Success]", k, got)
				}
			}
		})
	}
}

// TestLostCheckpointIsRebuiltFromTheStream is the regression test of a
// lost checkpoint silently losing events: Redis restarted without
// persistence (or a new KV bucket) made the shard look new, and the next
// cycle baselined every change since without a word.
func TestLostCheckpointIsRebuiltFromTheStream(t *testing.T) {
	for _, kv := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "natskv"}[kv], func(t *testing.T) {
			h := newHarness(t)
			lister, redisStore, pub := h.parts(50)
			newStore := func() poller.Store {
				if !kv {
					return redisStore
				}
				bucket := testenv.Name("CAPOLLER_KV")
				_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
				s, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			p := h.poller(lister, newStore(), pub, func(o *poller.Options) { o.Recovery = pub })
			inv := func(id, status string) invocation {
				return invocation{id: id, status: status, instances: map[string]string{"i-1": status}}
			}
			h.serve(inv("t-1", "Running"))
			mustRunOnce(t, p) // baseline
			h.serve(inv("t-1", "Success"), inv("t-2", "Running"))
			if rep := mustRunOnce(t, p); len(rep.Transitions) != 4 {
				t.Fatalf("%d transitions, want 4", len(rep.Transitions))
			}
			// The checkpoint is lost: Redis flushed, or a new bucket.
			if !kv {
				for _, key := range h.redis.Keys(t.Context(), h.prefix+"*").Val() {
					h.redis.Del(t.Context(), key)
				}
			}
			reg := prometheus.NewRegistry()
			metrics := poller.NewMetrics(poller.MetricsOptions{Registerer: reg})
			fresh, err := cloudassist.NewECS(h.listerOptions(50))
			if err != nil {
				t.Fatal(err)
			}
			p = h.poller(fresh, newStore(), h.publisher(h.js), func(o *poller.Options) { o.Recovery = pub; o.Metrics = metrics })
			h.serve(inv("t-1", "Success"), inv("t-2", "Failed"), inv("t-3", "Running"))
			rep := mustRunOnce(t, p)
			got := map[string]bool{}
			for _, tr := range rep.Transitions {
				got[fmt.Sprintf("%s/%s %s>%s", tr.Record.InvokeID, tr.Record.InstanceID, tr.Previous, tr.Record.Status)] = true
			}
			for _, want := range []string{"t-2/ Running>Failed", "t-2/i-1 Running>Failed", "t-3/ >Running", "t-3/i-1 >Running"} {
				if !got[want] {
					t.Errorf("missing %s; got %v", want, got)
				}
			}
			if len(got) != 4 {
				t.Errorf("transitions %v, want exactly 4 (t-1 did not change)", got)
			}
			if n := testenv.MetricSum(t, reg, "capoller_checkpoint_recoveries_total"); n != 1 {
				t.Errorf("capoller_checkpoint_recoveries_total = %v, want 1", n)
			}
		})
	}
}

// failLoads is a store whose next n loads fail.
type failLoads struct {
	poller.Store
	n atomic.Int32
}

func (f *failLoads) Load(ctx context.Context, shard diff.Shard, keys []diff.Key) (diff.Previous, error) {
	if f.n.Add(-1) >= 0 {
		return diff.Previous{}, errors.New("injected: redis load refused")
	}
	return f.Store.Load(ctx, shard, keys)
}

// failPublishes is a publisher whose next n batches fail.
type failPublishes struct {
	poller.Publisher
	n atomic.Int32
}

func (f *failPublishes) Publish(ctx context.Context, batch []diff.Transition) (poller.PublishResult, error) {
	if f.n.Add(-1) >= 0 {
		return poller.PublishResult{}, errors.New("injected: nats publish refused")
	}
	return f.Publisher.Publish(ctx, batch)
}

// TestFailuresAreBlamedOnTheirStage is the regression test of errors and
// metrics blaming the wrong stage: a load, publish or commit failure
// inside an ECS listing read as "describe invocations page N: …", and
// capoller_cycles_failed_total{stage} stayed 0 for every stage.
func TestFailuresAreBlamedOnTheirStage(t *testing.T) {
	for _, strategy := range []cloudassist.Strategy{cloudassist.StrategyFull, cloudassist.StrategyIncremental} {
		t.Run(string(strategy), func(t *testing.T) {
			h := newHarness(t)
			opts := h.listerOptions(2)
			opts.Strategy = strategy
			lister, err := cloudassist.NewECS(opts)
			if err != nil {
				t.Fatal(err)
			}
			loads := &failLoads{Store: h.store()}
			commits := &failCommits{Store: loads}
			pubs := &failPublishes{Publisher: h.publisher(h.js)}
			reg := prometheus.NewRegistry()
			metrics := poller.NewMetrics(poller.MetricsOptions{Registerer: reg})
			p := h.poller(lister, commits, pubs, func(o *poller.Options) { o.Metrics = metrics })
			mustRunOnce(t, p)
			for i := range 3 {
				h.run(fmt.Sprintf("exit %d", i), 0, h.instances[0])
			}
			eventually(t, 5*time.Second, "the runs to finish", func() bool { return allFinal(truthByRecord(h.sim)) })
			for _, tc := range []struct {
				stage  poller.Stage
				inject func()
				text   string
			}{
				{poller.StageLoad, func() { loads.n.Store(1) }, "injected: redis load refused"},
				{poller.StagePublish, func() { pubs.n.Store(1) }, "injected: nats publish refused"},
				{poller.StageCommit, func() { commits.n.Store(1) }, "injected: the store went away"},
			} {
				tc.inject()
				rep := p.RunOnce(t.Context())
				ce, ok := errors.AsType[*poller.CycleError](rep.Err)
				if !ok || ce.Stage != tc.stage {
					t.Fatalf("injected %s failure gave %v", tc.stage, rep.Err)
				}
				if got := rep.Err.Error(); got != string(tc.stage)+": "+tc.text {
					t.Errorf("error %q, want %q: the pager must not wrap the cycle's own errors", got, string(tc.stage)+": "+tc.text)
				}
				if n := testenv.MetricSum(t, reg, "capoller_cycles_failed_total", "stage", string(tc.stage)); n != 1 {
					t.Errorf("capoller_cycles_failed_total{stage=%q} = %v, want 1", tc.stage, n)
				}
			}
			mustRunOnce(t, p)
		})
	}
}

// servePage makes the emulator answer the next DescribeInvocations call
// with one hand-made page of these invocations and this NextToken.
func (h *harness) servePage(next string, invs ...invocation) {
	h.t.Helper()
	var list []any
	for _, inv := range invs {
		var insts []any
		for id, st := range inv.instances {
			insts = append(insts, map[string]any{"InstanceId": id, "InvocationStatus": st, "Repeats": 1})
		}
		list = append(list, map[string]any{"InvokeId": inv.id, "InvocationStatus": inv.status, "Parameters": "{}",
			"CommandId": "c-1", "CommandName": "deploy", "InvokeInstances": map[string]any{"InvokeInstance": insts}})
	}
	body, err := json.Marshal(map[string]any{"RequestId": "r", "NextToken": next, "Invocations": map[string]any{"Invocation": list}})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultRaw, Body: string(body)}); err != nil {
		h.t.Fatal(err)
	}
}

// TestARecordReadTwiceInOneCycleKeepsItsLastState: a listing restarted
// after a refused NextToken reads a record again in the same cycle, in a
// later chunk and a later state. Split into batches of one event, the
// cycle must still commit the last state, and a failure between batches
// must leave the checkpoint agreeing with the stream.
func TestARecordReadTwiceInOneCycleKeepsItsLastState(t *testing.T) {
	h := newHarness(t)
	lister, st, pub := h.parts(1)
	commits := &failCommits{Store: st}
	p := h.poller(lister, commits, pub, func(o *poller.Options) { o.MaxBatch = 1 })
	agg := func(id, status string) invocation { return invocation{id: id, status: status} }
	h.serve(agg("t-a", "Pending"), agg("t-b", "Pending"))
	mustRunOnce(t, p)
	cycle := func() {
		h.servePage("n1", agg("t-a", "Running"))
		if err := h.sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultInvalidToken}); err != nil {
			t.Fatal(err)
		}
		h.servePage("", agg("t-a", "Success"), agg("t-b", "Running"))
	}
	cycle()
	commits.skip.Store(1) // the second batch's commit fails, after its publish
	commits.n.Store(1)
	if rep := p.RunOnce(t.Context()); rep.Err == nil {
		t.Fatal("the injected commit failure did not fail the cycle")
	}
	h.serve(agg("t-a", "Success"), agg("t-b", "Success"))
	mustRunOnce(t, p)
	chain := map[string][]string{}
	for _, e := range h.events() {
		chain[e.Event.Data.InvokeID] = append(chain[e.Event.Data.InvokeID], string(e.Event.Data.PreviousStatus+">"+e.Event.Data.Status))
	}
	if got := fmt.Sprint(chain["t-a"]); got != "[Pending>Running Running>Success]" {
		t.Errorf("t-a: %s, want [Pending>Running Running>Success]", got)
	}
	if got := fmt.Sprint(chain["t-b"]); got != "[Pending>Running Running>Success]" {
		t.Errorf("t-b: %s, want [Pending>Running Running>Success]", got)
	}
	prev, err := st.Load(t.Context(), shard, []diff.Key{{InvokeID: "t-a"}, {InvokeID: "t-b"}})
	if err != nil || prev.States[diff.Key{InvokeID: "t-a"}].Status != diff.StatusSuccess || prev.States[diff.Key{InvokeID: "t-b"}].Status != diff.StatusSuccess {
		t.Errorf("checkpoint %+v, %v", prev.States, err)
	}
}

// TestACorruptStagedBatchIsDiscarded: a staged batch that cannot be
// decoded is dropped, logged and counted; it must not block the shard.
func TestACorruptStagedBatchIsDiscarded(t *testing.T) {
	h := newHarness(t)
	lister, st, pub := h.parts(50)
	reg := prometheus.NewRegistry()
	metrics := poller.NewMetrics(poller.MetricsOptions{Registerer: reg})
	p := h.poller(lister, st, pub, func(o *poller.Options) { o.Metrics = metrics })
	h.redis.Set(t.Context(), h.prefix+"outbox:{default/ecs/"+region+"}", "\xff\xff\xff\xff\x0fgarbage", 0)
	h.serve(invocation{id: "t-1", status: "Running"})
	mustRunOnce(t, p)
	if n := testenv.MetricSum(t, reg, "capoller_staged_batches_discarded_total"); n != 1 {
		t.Errorf("capoller_staged_batches_discarded_total = %v, want 1", n)
	}
}

// TestHugeTextsAndMassExpiryFitTheKVStore: a 2 MB errorInfo and an expiry
// of thousands of records must not make the staged batch (a KV value,
// bounded by max_payload) too large to store, which would stop the shard.
func TestHugeTextsAndMassExpiryFitTheKVStore(t *testing.T) {
	h := newHarness(t)
	lister, _, pub := h.parts(50)
	bucket := testenv.Name("CAPOLLER_KV")
	_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
	kv, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	p := h.poller(lister, kv, pub, func(o *poller.Options) { o.ExpiryGuard = 1 })
	var fleet []invocation
	for i := range 6000 {
		fleet = append(fleet, invocation{id: fmt.Sprintf("t-%05d", i), status: "Success"})
	}
	h.serve(fleet...)
	mustRunOnce(t, p)
	body, _ := json.Marshal(map[string]any{"RequestId": "r", "NextToken": "", "Invocations": map[string]any{"Invocation": []any{
		map[string]any{"InvokeId": "t-huge", "InvocationStatus": "Failed", "Parameters": "{}", "InvokeInstances": map[string]any{
			"InvokeInstance": []any{map[string]any{"InstanceId": "i-1", "InvocationStatus": "Failed", "ErrorInfo": strings.Repeat("x", 2<<20)}}}},
	}}})
	if err := h.sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultRaw, Body: string(body), Count: 2}); err != nil {
		t.Fatal(err)
	}
	rep := mustRunOnce(t, p)
	if len(rep.Transitions) != 2 {
		t.Fatalf("%d transitions, want 2", len(rep.Transitions))
	}
	if again := mustRunOnce(t, p); again.Expired != 6000 {
		t.Fatalf("%d expired, want 6000", again.Expired)
	}
	if info := rep.Transitions[1].Record; len(info.ErrorInfo) > diff.MaxText || info.Cut&diff.FieldErrorInfo == 0 {
		t.Errorf("errorInfo of %d bytes, cut %v", len(info.ErrorInfo), info.Cut)
	}
}

// TestAnEmptyListingOfAKnownShardIsNotALostCheckpoint: a listing with no
// records (everything aged out, an API glitch) on a shard the store knows
// must not be taken for a lost checkpoint and rebuilt from the stream.
func TestAnEmptyListingOfAKnownShardIsNotALostCheckpoint(t *testing.T) {
	h := newHarness(t)
	lister, st, pub := h.parts(50)
	reg := prometheus.NewRegistry()
	metrics := poller.NewMetrics(poller.MetricsOptions{Registerer: reg})
	p := h.poller(lister, st, pub, func(o *poller.Options) { o.Recovery = pub; o.Metrics = metrics })
	h.serve(invocation{id: "t-1", status: "Running"})
	mustRunOnce(t, p) // baseline
	h.serve(invocation{id: "t-1", status: "Success"})
	if rep := mustRunOnce(t, p); len(rep.Transitions) != 1 {
		t.Fatalf("%d transitions, want 1", len(rep.Transitions))
	}
	for range 2 {
		h.serve()
		mustRunOnce(t, p)
	}
	if n := testenv.MetricSum(t, reg, "capoller_checkpoint_recoveries_total"); n != 0 {
		t.Errorf("an empty listing of a known shard counted %v checkpoint recoveries", n)
	}
}

// TestACrashAfterStagingALargeBatchIsFinishedByTheNextProcess: the
// process dies after staging a batch too large for one KV value (long
// ids) but before publishing it. A new process, with a new store on the
// same bucket, publishes exactly that batch before it diffs anything, so
// the records' later changes chain from it.
func TestACrashAfterStagingALargeBatchIsFinishedByTheNextProcess(t *testing.T) {
	h := newHarness(t)
	lister, _, pub := h.parts(50)
	bucket := testenv.Name("CAPOLLER_KV")
	_, js := testenv.NATS(t, testenv.NATSURL(t), bucket)
	openKV := func() poller.Store {
		kv, err := checkpoint.NewKV(t.Context(), js, checkpoint.KVOptions{Bucket: bucket})
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}
	dying := &failPublishes{Publisher: pub}
	p := h.poller(lister, openKV(), dying, nil)
	var fleet []invocation
	for i := range 40 {
		fleet = append(fleet, invocation{id: fmt.Sprintf("t-%02d-%s", i, strings.Repeat("é", 3000)), status: "Pending",
			instances: map[string]string{strings.Repeat("i", 6000): "Pending"}})
	}
	h.serve(fleet...)
	mustRunOnce(t, p) // baseline
	for i := range fleet {
		fleet[i].status, fleet[i].instances[strings.Repeat("i", 6000)] = "Running", "Running"
	}
	h.serve(fleet...)
	dying.n.Store(1) // staged, then the process dies before its publish is acknowledged
	if rep := p.RunOnce(t.Context()); rep.Err == nil || rep.Published != 0 {
		t.Fatalf("the dying cycle: %v, %d published", rep.Err, rep.Published)
	}
	fresh, err := cloudassist.NewECS(h.listerOptions(50))
	if err != nil {
		t.Fatal(err)
	}
	p = h.poller(fresh, openKV(), h.publisher(h.js), nil)
	for i := range fleet {
		fleet[i].status, fleet[i].instances[strings.Repeat("i", 6000)] = "Success", "Success"
	}
	h.serve(fleet...)
	if rep := mustRunOnce(t, p); rep.Published != 160 {
		t.Errorf("the new process published %d events, want 80 staged and 80 new", rep.Published)
	}
	chains := map[diff.Key][]string{}
	for _, e := range h.events() {
		k := recordKey(e.Event.Data)
		chains[k] = append(chains[k], string(e.Event.Data.PreviousStatus+">"+e.Event.Data.Status))
	}
	if len(chains) != 80 {
		t.Fatalf("%d records announced, want 80", len(chains))
	}
	for k, c := range chains {
		if got := fmt.Sprint(c); got != "[Pending>Running Running>Success]" {
			t.Errorf("%.20q…: %s, want [Pending>Running Running>Success]", k.InvokeID, got)
		}
	}
}

// TestQueuedBatchesAreAllFinishedInOrder: batches staged side by side
// (Redis queues up to four) whose commits failed are all published again
// and committed, oldest first, before anything is diffed again; finishing
// only the oldest would announce the others' records from their older
// checkpointed status (Pending→Success after Pending→Running).
func TestQueuedBatchesAreAllFinishedInOrder(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			h := newHarness(t)
			lister, redisStore, pub := h.parts(50)
			st := &failCommits{Store: redisStore}
			p := h.poller(lister, st, pub, func(o *poller.Options) { o.MaxBatch = 2 })
			all := func(status string) []invocation {
				var out []invocation
				for i := range 4 {
					out = append(out, invocation{id: fmt.Sprint("t-", i), status: status, instances: map[string]string{"i-1": status}})
				}
				return out
			}
			h.serve(all("Pending")...)
			mustRunOnce(t, p)
			h.serve(all("Running")...)
			st.n.Store(100)
			if rep := p.RunOnce(t.Context()); rep.Err == nil || rep.Published == 0 {
				t.Fatalf("the failing commits gave %v after %d published", rep.Err, rep.Published)
			}
			st.n.Store(0)
			if restart {
				fresh, err := cloudassist.NewECS(h.listerOptions(50))
				if err != nil {
					t.Fatal(err)
				}
				p = h.poller(fresh, redisStore, h.publisher(h.js), func(o *poller.Options) { o.MaxBatch = 2 })
			}
			h.serve(all("Success")...)
			mustRunOnce(t, p)
			if _, ok, err := redisStore.Staged(t.Context(), shard); ok || err != nil {
				t.Fatalf("a batch is still staged: %v %v", ok, err)
			}
			chain := map[diff.Key][]string{}
			for _, e := range h.events() {
				k := recordKey(e.Event.Data)
				chain[k] = append(chain[k], string(e.Event.Data.PreviousStatus+">"+e.Event.Data.Status))
			}
			for i := range 4 {
				for _, k := range []diff.Key{{InvokeID: fmt.Sprint("t-", i)}, {InvokeID: fmt.Sprint("t-", i), InstanceID: "i-1"}} {
					if got := fmt.Sprint(chain[k]); got != "[Pending>Running Running>Success]" {
						t.Errorf("%v: events %s, want [Pending>Running Running>Success]", k, got)
					}
				}
			}
		})
	}
}

// TestACorruptOldestBatchDropsOnlyItself: the oldest of two queued staged
// batches cannot be decoded; dropping it must keep the valid one behind
// it, whose events are already in the stream (from the hostile review).
func TestACorruptOldestBatchDropsOnlyItself(t *testing.T) {
	h := newHarness(t)
	lister, redisStore, pub := h.parts(50)
	st := &failCommits{Store: redisStore}
	p := h.poller(lister, st, pub, func(o *poller.Options) { o.MaxBatch = 2 })
	two := func(status string) []invocation {
		return []invocation{
			{id: "t-1", status: status, instances: map[string]string{"i-1": status}},
			{id: "t-2", status: status, instances: map[string]string{"i-1": status}},
		}
	}
	h.serve(two("Pending")...)
	mustRunOnce(t, p)
	h.serve(two("Running")...)
	st.n.Store(1)
	if rep := p.RunOnce(t.Context()); rep.Err == nil {
		t.Fatal("want a failed commit")
	}
	if err := h.redis.LSet(t.Context(), h.prefix+"staged:{"+shard.String()+"}", 0, "\xffgarbage").Err(); err != nil {
		t.Fatal(err)
	}
	h.serve(two("Success")...)
	mustRunOnce(t, p)
	chain := map[diff.Key][]string{}
	for _, e := range h.events() {
		k := recordKey(e.Event.Data)
		chain[k] = append(chain[k], string(e.Event.Data.PreviousStatus+">"+e.Event.Data.Status))
	}
	for _, k := range []diff.Key{{InvokeID: "t-2"}, {InvokeID: "t-2", InstanceID: "i-1"}} {
		if got := fmt.Sprint(chain[k]); got != "[Pending>Running Running>Success]" {
			t.Errorf("%v: events %s, want [Pending>Running Running>Success]", k, got)
		}
	}
}

// TestTheReportHoldsWhatWasCommittedOnce: a cycle's report lists the
// transitions it committed, each once and in the order committed, when
// the cycle is split into batches, when one batch's commit fails, and when
// the next cycle first finishes the batches left staged and then delivers
// its own.
func TestTheReportHoldsWhatWasCommittedOnce(t *testing.T) {
	h := newHarness(t)
	lister, st, pub := h.parts(50)
	commits := &failCommits{Store: st}
	p := h.poller(lister, commits, pub, func(o *poller.Options) { o.MaxBatch = 2 })
	agg := func(id, status string) invocation { return invocation{id: id, status: status} }
	all := func(status string, more ...invocation) {
		h.serve(append([]invocation{agg("t-a", status), agg("t-b", status), agg("t-c", status), agg("t-d", status), agg("t-e", status)}, more...)...)
	}
	// check compares a report with what it should hold: these invocations'
	// events, in this order, each exactly as the stream holds it.
	check := func(what string, rep poller.Report, status string, invokes ...string) {
		t.Helper()
		streamed := map[string]string{} // invocation -> its event of this status
		for _, e := range h.events() {
			if string(e.Event.Data.Status) == status {
				streamed[e.Event.Data.InvokeID] = e.Event.ID
			}
		}
		var got, want []string
		for _, tr := range rep.Transitions {
			got = append(got, tr.Record.InvokeID+"="+tr.ID)
		}
		for _, inv := range invokes {
			want = append(want, inv+"="+streamed[inv])
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s reported %v, want %v", what, got, want)
		}
	}
	all("Pending")
	mustRunOnce(t, p) // the baseline
	all("Running")
	check("a cycle of three batches", mustRunOnce(t, p), "Running", "t-a", "t-b", "t-c", "t-d", "t-e")

	all("Success")
	commits.skip.Store(1) // the second batch's commit fails, after its publish
	commits.n.Store(1)
	rep := p.RunOnce(t.Context())
	if rep.Err == nil {
		t.Fatal("the injected commit failure did not fail the cycle")
	}
	check("a cycle whose second commit failed", rep, "Success", "t-a", "t-b")
	all("Success", agg("t-f", "Success"))
	check("the next cycle, which finished the staged batches first,", mustRunOnce(t, p), "Success", "t-c", "t-d", "t-e", "t-f")
}
