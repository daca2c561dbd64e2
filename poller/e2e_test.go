package poller_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/capoller/capoller/checkpoint"
	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
	"github.com/capoller/capoller/publisher/embedded"
	"github.com/capoller/capoller/publisher/events"
)

const (
	keyID  = "LTAIe2e"
	secret = "e2e-secret"
	region = "cn-hangzhou"
)

var shard = diff.Shard{Source: diff.SourceECS, Region: region} //nolint:gochecknoglobals // test constant

// harness is one emulator, one Redis key prefix and one stream, shared by
// the pollers (processes) a test starts and stops.
type harness struct {
	t         testing.TB
	sim       *castest.Server
	simURL    string
	sdk       *ecs.Client
	redis     *redis.Client
	prefix    string
	js        jetstream.JetStream
	stream    string
	subjects  string
	instances []string
}

func newHarness(t testing.TB) *harness { return newHarnessWith(t, nil) }

func newHarnessWith(t testing.TB, mutate func(*castest.Options)) *harness {
	t.Helper()
	simOpts := castest.Options{AccessKeyID: keyID, AccessKeySecret: secret, Instances: 3}
	if mutate != nil {
		mutate(&simOpts)
	}
	sim, simURL := testenv.Emulator(t, simOpts)
	client, err := ecs.NewClientWithOptions(region, sdk.NewConfig(), credentials.NewStaticAKCredentialsProvider(keyID, secret))
	if err != nil {
		t.Fatal(err)
	}
	client.Domain = strings.TrimPrefix(simURL, "http://")
	rdb, prefix := testenv.Redis(t)
	stream := testenv.Name("CAPOLLER_E2E")
	_, js := testenv.NATS(t, testenv.NATSURL(t), stream)
	h := &harness{t: t, sim: sim, simURL: simURL, sdk: client, redis: rdb, prefix: prefix, js: js, stream: stream, subjects: strings.ToLower(stream)}
	for _, inst := range sim.Instances() {
		if inst.Product == castest.ProductECS {
			h.instances = append(h.instances, inst.ID)
		}
	}
	return h
}

// parts builds the components of one capoller process.
func (h *harness) parts(pageSize int) (*cloudassist.ECS, *checkpoint.Redis, natsPublisher) {
	h.t.Helper()
	lister, err := cloudassist.NewECS(h.listerOptions(pageSize))
	if err != nil {
		h.t.Fatal(err)
	}
	return lister, h.store(), h.publisher(h.js)
}

func (h *harness) listerOptions(pageSize int) cloudassist.Options {
	// No call retries: tests of faults look at failed cycles.
	return cloudassist.Options{Region: region, Endpoint: h.simURL, AccessKeyID: keyID, AccessKeySecret: secret, PageSize: pageSize,
		Timeout: 5 * time.Second, TransientRetries: -1, ThrottleRetries: -1}
}

func (h *harness) store() *checkpoint.Redis {
	h.t.Helper()
	store, err := checkpoint.NewRedis(h.redis, checkpoint.RedisOptions{KeyPrefix: h.prefix})
	if err != nil {
		h.t.Fatal(err)
	}
	return store
}

func (h *harness) publisher(js jetstream.JetStream) natsPublisher {
	h.t.Helper()
	pub, err := publisher.New(js, publisher.Options{Stream: h.stream, SubjectPrefix: h.subjects, AckTimeout: 3 * time.Second})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := pub.EnsureStream(h.t.Context()); err != nil {
		h.t.Fatal(err)
	}
	return natsPublisher{pub}
}

// natsPublisher is the NATS publisher under the poller's contract, as the
// daemon wires it.
type natsPublisher struct{ *publisher.NATS }

func (n natsPublisher) Publish(ctx context.Context, batch []diff.Transition) (poller.PublishResult, error) {
	r, err := n.NATS.Publish(ctx, batch)
	return poller.PublishResult{Published: r.Published, Duplicates: r.Duplicates}, err
}

func (h *harness) poller(src poller.Lister, st poller.Store, pub poller.Publisher, mutate func(*poller.Options)) *poller.Poller {
	h.t.Helper()
	opts := poller.Options{Shard: shard, Interval: 50 * time.Millisecond}
	if mutate != nil {
		mutate(&opts)
	}
	p, err := poller.New(src, st, pub, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

func (h *harness) run(script string, timeout int, instances ...string) string {
	h.t.Helper()
	req := ecs.CreateRunCommandRequest()
	req.Type, req.CommandContent, req.InstanceId = "RunShellScript", script, &instances
	if timeout > 0 {
		req.Timeout = requests.NewInteger(timeout)
	}
	resp, err := h.sdk.RunCommand(req)
	if err != nil {
		h.t.Fatalf("RunCommand: %v", err)
	}
	return resp.InvokeId
}

// published is one message of the stream.
type published = testenv.Published

func (h *harness) events() []published { return testenv.StreamEvents(h.t, h.js, h.stream) }

func recordKey(d events.Data) diff.Key { return testenv.RecordKey(d) }

// finalFromEvents is the last status announced for every record.
func finalFromEvents(evs []published) map[diff.Key]events.Data {
	out := map[diff.Key]events.Data{}
	for _, e := range evs {
		out[recordKey(e.Event.Data)] = e.Event.Data
	}
	return out
}

func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// truthByRecord groups the emulator's ground truth per record, in order.
func truthByRecord(sim *castest.Server) map[diff.Key][]castest.TruthEntry {
	return testenv.TruthByRecord(sim.Truth())
}

// waitCaughtUp waits until the last event of every record the emulator
// knows reports the record's last status, and returns that truth.
func waitCaughtUp(t *testing.T, h *harness, d time.Duration) map[diff.Key][]castest.TruthEntry {
	t.Helper()
	eventually(t, d, "every invocation to finish", func() bool { return allFinal(truthByRecord(h.sim)) })
	truth := truthByRecord(h.sim)
	var behind []string
	deadline := time.Now().Add(d)
	for {
		behind = behind[:0]
		final := finalFromEvents(h.events())
		for k, entries := range truth {
			if got, want := final[k].Status, entries[len(entries)-1].To; string(got) != want {
				behind = append(behind, fmt.Sprintf("%v: announced %q, ended %q", k, got, want))
			}
		}
		if len(behind) == 0 {
			return truth
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, capoller has not published every final status:\n%s", d, strings.Join(behind, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func allFinal(truth map[diff.Key][]castest.TruthEntry) bool {
	for _, entries := range truth {
		if !diff.Status(entries[len(entries)-1].To).Terminal() {
			return false
		}
	}
	return len(truth) > 0
}

// startPoller runs p in the background; the returned func kills it and
// waits until it is gone.
func startPoller(t *testing.T, p *poller.Poller) (kill func()) {
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	return func() { cancel(); wg.Wait() }
}

func TestEndToEndAcrossRestarts(t *testing.T) {
	h := newHarness(t)
	i0, i1, i2 := h.instances[0], h.instances[1], h.instances[2]
	var cycles atomic.Int64
	onCycle := func(o *poller.Options) {
		o.OnCycle = func(r poller.Report) {
			if r.Err == nil {
				cycles.Add(1)
			}
		}
	}
	src, st, pub := h.parts(2) // small pages: every cycle pages
	kill := startPoller(t, h.poller(src, st, pub, onCycle))
	eventually(t, 5*time.Second, "the baseline cycle", func() bool { return cycles.Load() > 0 })

	ok := h.run("echo hi; sleep 0.3; exit 0", 0, i0, i1)
	failed := h.run("echo oops; sleep 0.2; exit 3", 0, i0)
	timedOut := h.run("echo waiting; hang", 1, i1)
	stopped := h.run("echo start; hang", 0, i2)
	eventually(t, 10*time.Second, "the first invocation's success event", func() bool {
		return finalFromEvents(h.events())[diff.Key{InvokeID: ok}].Status == "Success"
	})
	kill() // the process dies

	// While capoller is down: a stop, an agent failure, more work.
	stop := ecs.CreateStopInvocationRequest()
	stop.InvokeId = stopped
	if _, err := h.sdk.StopInvocation(stop); err != nil {
		t.Fatal(err)
	}
	if err := h.sim.SetInstance(i2, "", castest.AgentNotRunning); err != nil {
		t.Fatal(err)
	}
	partial := h.run("exit 0", 0, i0, i2)
	eventually(t, 10*time.Second, "every invocation to finish", func() bool { return allFinal(truthByRecord(h.sim)) })

	// A new process with the same checkpoint and stream catches up.
	cycles.Store(0)
	src, st, pub = h.parts(2)
	kill = startPoller(t, h.poller(src, st, pub, onCycle))
	eventually(t, 10*time.Second, "a catch-up cycle", func() bool { return cycles.Load() > 1 })
	kill()

	truth := truthByRecord(h.sim)
	evs := h.events()
	// Nothing lost: the last state of every record was announced.
	final := finalFromEvents(evs)
	for k, entries := range truth {
		if got, want := final[k].Status, entries[len(entries)-1].To; string(got) != want {
			t.Errorf("%v: last event says %q, the emulator ended %q", k, got, want)
		}
	}
	// Nothing twice: every event id reached the stream exactly once.
	ids := map[string]int{}
	for _, e := range evs {
		ids[e.MsgID]++
		if e.MsgID != e.Event.ID {
			t.Errorf("Nats-Msg-Id %q differs from the event id %q", e.MsgID, e.Event.ID)
		}
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("event %s is in the stream %d times", id, n)
		}
	}
	// Per record, events chain and follow the truth's order.
	chains := map[diff.Key][]events.Data{}
	for _, e := range evs {
		chains[recordKey(e.Event.Data)] = append(chains[recordKey(e.Event.Data)], e.Event.Data)
		d := e.Event.Data
		want := strings.Join([]string{h.subjects, "ecs", region, string(d.Level), strings.ToLower(string(d.Status)), d.InvokeID}, ".")
		if d.InstanceID != "" {
			want += "." + d.InstanceID
		}
		if e.Subject != want {
			t.Errorf("subject %q, want %q", e.Subject, want)
		}
	}
	for k, chain := range chains {
		var truthStatuses []string
		for _, e := range truth[k] {
			truthStatuses = append(truthStatuses, e.To)
		}
		pos := 0
		for i, d := range chain {
			var wantPrev events.Status
			if i > 0 {
				wantPrev = chain[i-1].Status
			}
			if d.PreviousStatus != wantPrev {
				t.Errorf("%v event %d: previousStatus %q, want %q", k, i, d.PreviousStatus, wantPrev)
			}
			at := slices.Index(truthStatuses[pos:], string(d.Status))
			if at < 0 {
				t.Errorf("%v: status %q is not in the emulator's remaining history %v", k, d.Status, truthStatuses[pos:])
				continue
			}
			pos += at + 1
		}
	}
	// The outcomes, at both levels.
	for _, c := range []struct {
		key      diff.Key
		status   string
		exitCode int64
		code     string
	}{
		{diff.Key{InvokeID: ok}, "Success", 0, ""},
		{diff.Key{InvokeID: ok, InstanceID: i1}, "Success", 0, ""},
		{diff.Key{InvokeID: failed}, "Failed", 0, ""},
		{diff.Key{InvokeID: failed, InstanceID: i0}, "Failed", 3, "ExitCodeNonzero"},
		{diff.Key{InvokeID: timedOut, InstanceID: i1}, "Timeout", 0, "ExecutionTimeout"},
		{diff.Key{InvokeID: stopped}, "Stopped", 0, ""},
		{diff.Key{InvokeID: stopped, InstanceID: i2}, "Stopped", 0, ""},
		{diff.Key{InvokeID: partial}, "PartialFailed", 0, ""},
		{diff.Key{InvokeID: partial, InstanceID: i2}, "Aborted", 0, "ClientNotRunning"},
	} {
		d := final[c.key]
		exit := int64(0)
		if d.ExitCode != nil {
			exit = *d.ExitCode
		}
		if string(d.Status) != c.status || exit != c.exitCode || d.ErrorCode != c.code {
			t.Errorf("%v: got %q exit %d code %q, want %q exit %d code %q", c.key, d.Status, exit, d.ErrorCode, c.status, c.exitCode, c.code)
		}
	}

	// A third start publishes nothing at all.
	src, st, pub = h.parts(50)
	rep := h.poller(src, st, pub, nil).RunOnce(t.Context())
	if rep.Err != nil || len(rep.Transitions) != 0 || len(h.events()) != len(evs) {
		t.Errorf("an idle restart produced %d transitions (err %v)", len(rep.Transitions), rep.Err)
	}
}

// failingStore fails its first Commit without writing, as Redis failing
// between the publish and the checkpoint would.
type failingStore struct {
	poller.Store
	failed atomic.Bool
}

func (f *failingStore) Commit(ctx context.Context, s diff.Shard, u []diff.Update, tr []diff.Transition) error {
	if f.failed.CompareAndSwap(false, true) {
		return errors.New("injected: redis went away")
	}
	return f.Store.Commit(ctx, s, u, tr)
}

func TestCrashBetweenPublishAndCommitRepublishesSameIDs(t *testing.T) {
	h := newHarness(t)
	src, st, pub := h.parts(50)
	if rep := h.poller(src, st, pub, nil).RunOnce(t.Context()); rep.Err != nil {
		t.Fatal(rep.Err) // baseline
	}
	invoke := h.run("hang", 600, h.instances[0], h.instances[1])
	eventually(t, 5*time.Second, "the runs to start", func() bool {
		entries := truthByRecord(h.sim)[diff.Key{InvokeID: invoke}]
		return len(entries) > 0 && entries[len(entries)-1].To == "Running"
	})
	flaky := &failingStore{Store: st}
	rep := h.poller(src, flaky, pub, nil).RunOnce(t.Context())
	var cycleErr *poller.CycleError
	if !errors.As(rep.Err, &cycleErr) || cycleErr.Stage != poller.StageCommit || rep.Published != 3 {
		t.Fatalf("first cycle: err %v, published %d; want a commit failure after 3 events", rep.Err, rep.Published)
	}
	rep = h.poller(src, flaky, pub, nil).RunOnce(t.Context())
	if rep.Err != nil || rep.Published != 0 || rep.Duplicates != 3 {
		t.Fatalf("retry: err %v published %d duplicates %d; want the same 3 ids again, all duplicates", rep.Err, rep.Published, rep.Duplicates)
	}
	if n := len(h.events()); n != 3 {
		t.Errorf("stream holds %d events, want 3", n)
	}
}

// stoppingPublisher cancels the cycle's context as soon as its events are
// acknowledged, as a SIGTERM arriving at that moment would.
type stoppingPublisher struct {
	poller.Publisher
	stop context.CancelFunc
}

func (s stoppingPublisher) Publish(ctx context.Context, batch []diff.Transition) (poller.PublishResult, error) {
	res, err := s.Publisher.Publish(ctx, batch)
	s.stop()
	return res, err
}

func TestStopAfterAcksStillCommits(t *testing.T) {
	h := newHarness(t)
	src, st, pub := h.parts(50)
	if rep := h.poller(src, st, pub, nil).RunOnce(t.Context()); rep.Err != nil {
		t.Fatal(rep.Err) // baseline
	}
	invoke := h.run("hang", 600, h.instances[0])
	eventually(t, 5*time.Second, "the run to start", func() bool {
		entries := truthByRecord(h.sim)[diff.Key{InvokeID: invoke}]
		return len(entries) > 0 && entries[len(entries)-1].To == "Running"
	})
	ctx, stop := context.WithCancel(t.Context())
	rep := h.poller(src, st, stoppingPublisher{pub, stop}, nil).RunOnce(ctx)
	if rep.Published == 0 || rep.Err != nil {
		t.Fatalf("stopped cycle: published %d, err %v; want its events acknowledged and committed", rep.Published, rep.Err)
	}
	rep = h.poller(src, st, pub, nil).RunOnce(t.Context())
	if rep.Err != nil || len(rep.Transitions) != 0 || rep.Duplicates != 0 {
		t.Fatalf("after restart: err %v, %d transitions, %d duplicates; want nothing to publish again", rep.Err, len(rep.Transitions), rep.Duplicates)
	}
}

func TestSlowListingIsNotAStall(t *testing.T) {
	h := newHarness(t)
	for range 6 {
		h.run("exit 0", 0, h.instances[0])
	}
	// Each page takes 150ms: the listing takes about a second, well past
	// the stall timeout, but no page is late.
	if err := h.sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultLatency, Latency: "150ms", Count: -1}); err != nil {
		t.Fatal(err)
	}
	src, st, pub := h.parts(1)
	stallAfter := func(o *poller.Options) { o.StallTimeout = 400 * time.Millisecond }
	if rep := h.poller(src, st, pub, stallAfter).RunOnce(t.Context()); rep.Err != nil || rep.Records != 12 {
		t.Fatalf("slow but steady listing: %d records, err %v; want all 12 read", rep.Records, rep.Err)
	}
	// One page that takes a second is a stall.
	h.sim.ClearFaults()
	if err := h.sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultLatency, Latency: "1s", Skip: 2}); err != nil {
		t.Fatal(err)
	}
	src, st, pub = h.parts(1)
	rep := h.poller(src, st, pub, stallAfter).RunOnce(t.Context())
	if rep.Err == nil || !strings.Contains(rep.Err.Error(), "no progress for 400ms") {
		t.Fatalf("stalled listing: err %v; want it to fail as stalled", rep.Err)
	}
}

func TestBadInputGivesAClearErrorAndNoEvent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stage poller.Stage
		want  string
		setup func(h *harness) (poller.Lister, poller.Store, poller.Publisher)
	}{
		{
			name: "malformed API response", stage: poller.StageFetch, want: "SDK.JsonUnmarshalError",
			setup: func(h *harness) (poller.Lister, poller.Store, poller.Publisher) {
				if err := h.sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultMalformed}); err != nil {
					h.t.Fatal(err)
				}
				return h.parts(50)
			},
		},
		{
			name: "failed page in the middle", stage: poller.StageFetch, want: "page 2",
			setup: func(h *harness) (poller.Lister, poller.Store, poller.Publisher) {
				if err := h.sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultUnavailable, Skip: 1}); err != nil {
					h.t.Fatal(err)
				}
				return h.parts(1)
			},
		},
		{
			name: "redis unreachable", stage: poller.StageLoad, want: "connection refused",
			setup: func(h *harness) (poller.Lister, poller.Store, poller.Publisher) {
				src, _, pub := h.parts(50)
				dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
				h.t.Cleanup(func() { _ = dead.Close() })
				st, _ := checkpoint.NewRedis(dead, checkpoint.RedisOptions{KeyPrefix: h.prefix})
				return src, st, pub
			},
		},
		{
			name: "nats unreachable", stage: poller.StagePublish, want: "not acknowledged",
			setup: func(h *harness) (poller.Lister, poller.Store, poller.Publisher) {
				src, st, _ := h.parts(50)
				srv, err := embedded.Run(embedded.Options{StoreDir: h.t.TempDir()})
				if err != nil {
					h.t.Fatal(err)
				}
				_, js := testenv.NATS(h.t, srv.URL())
				pub := h.publisher(js)
				srv.Shutdown()
				return src, st, pub
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			src, st, pub := h.parts(50)
			if rep := h.poller(src, st, pub, nil).RunOnce(t.Context()); rep.Err != nil {
				t.Fatal(rep.Err) // baseline
			}
			h.run("exit 0", 0, h.instances[0])
			h.run("exit 1", 0, h.instances[1])
			eventually(t, 5*time.Second, "the runs to finish", func() bool { return allFinal(truthByRecord(h.sim)) })

			badSrc, badStore, badPub := tc.setup(h)
			rep := h.poller(badSrc, badStore, badPub, nil).RunOnce(t.Context())
			var cycleErr *poller.CycleError
			if !errors.As(rep.Err, &cycleErr) || cycleErr.Stage != tc.stage || !strings.Contains(rep.Err.Error(), tc.want) {
				t.Fatalf("err = %v; want stage %s mentioning %q", rep.Err, tc.stage, tc.want)
			}
			if n := len(h.events()); n != 0 {
				t.Fatalf("a failed cycle left %d events in the stream", n)
			}
			assertNoSecret(t, rep.Err.Error())

			// The next good cycle catches up.
			h.sim.ClearFaults()
			rep = h.poller(src, st, pub, nil).RunOnce(t.Context())
			// Two invocations on one instance each: two records apiece.
			if rep.Err != nil || len(rep.Transitions) != 4 {
				t.Fatalf("catch-up: err %v, %d transitions, want 4", rep.Err, len(rep.Transitions))
			}
			if n := len(h.events()); n != 4 {
				t.Errorf("stream holds %d events after the catch-up, want 4", n)
			}
		})
	}
}

func assertNoSecret(t *testing.T, s string) {
	t.Helper()
	if strings.Contains(s, secret) || strings.Contains(s, "Signature=") {
		t.Errorf("error leaks a secret: %s", s)
	}
}
