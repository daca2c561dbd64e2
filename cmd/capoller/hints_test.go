package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/hintintake"
	"github.com/capoller/capoller/poller/testenv"
	"github.com/capoller/capoller/publisher"
)

// hintReplica is one in-process daemon with hints on.
type hintReplica struct {
	hints, metrics string
	logs           *syncBuffer
	done           chan int
	stop           context.CancelFunc
}

// taskCompleted is EventBridge's push for one instance's run, as casim
// builds its own.
func taskCompleted(invokeID, instanceID, status string) string {
	b, _ := json.Marshal(castest.NewTaskCompleted("cn-hangzhou", "1234567890123456", invokeID, instanceID, status, time.Now()))
	return string(b)
}

// TestHintsAnnounceAtOnceAtASlowPoll: two replicas poll every 60s with
// hints on; each push goes to a random replica. A terminal run is
// announced soon after its hint, not at the next poll, with the status the
// API gives (the push's own is never published); a hint for an unknown
// invocation announces nothing; a flood of hints for one invocation costs
// a bounded few look-ups; a push without the token gets 401.
func TestHintsAnnounceAtOnceAtASlowPoll(t *testing.T) {
	sim, simURL := startEmulator(t)
	g := startHintGroup(t, simURL, "60s")
	replicas, js, stream, metric := g.replicas, g.js, g.stream, g.metric
	post := func(token, body string) int {
		r := replicas[rand.IntN(len(replicas))]
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+r.hints+hintintake.Path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/cloudevents+json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}

	instance := ecsInstance(sim)
	run := func(script string) string {
		invokeID := runOnEmulator(t, simURL, instance, script)
		testenv.WaitFor(t, 10*time.Second, "the run to end in the emulator", func() error {
			for _, e := range sim.Truth() {
				if e.InvokeID == invokeID && e.InstanceID == instance && (e.To == "Failed" || e.To == "Success") {
					return nil
				}
			}
			return fmt.Errorf("%s still running", invokeID)
		})
		return invokeID
	}
	announced := func(invokeID string) string {
		for _, p := range testenv.StreamEvents(t, js, stream) {
			if p.Event.Data.InvokeID == invokeID && p.Event.Data.InstanceID != "" && p.Event.Data.Terminal {
				return string(p.Event.Data.Status)
			}
		}
		return ""
	}

	if code := post("", taskCompleted("t-x", instance, "Failed")); code != http.StatusUnauthorized {
		t.Errorf("a push without the token: %d, want 401", code)
	}
	if code := post("wrong", taskCompleted("t-x", instance, "Failed")); code != http.StatusUnauthorized {
		t.Errorf("a push with a wrong token: %d, want 401", code)
	}
	if code := post("hint-S3cret", taskCompleted("t-unknown-invocation", instance, "Success")); code != http.StatusAccepted {
		t.Errorf("a push for an unknown invocation: %d, want 202", code)
	}

	// A run that fails, hinted as a success: Failed is announced, at once.
	failed := run("echo no; exit 3")
	start := time.Now()
	if code := post("hint-S3cret", taskCompleted(failed, instance, "Success")); code != http.StatusAccepted {
		t.Fatalf("a push: %d, want 202", code)
	}
	testenv.WaitFor(t, 15*time.Second, "the hinted run's event", func() error {
		if st := announced(failed); st == "" {
			return fmt.Errorf("%s not announced", failed)
		}
		return nil
	})
	t.Logf("announced %v after the hint, at a 60s interval", time.Since(start).Round(time.Millisecond))
	if st := announced(failed); st != "Failed" {
		t.Errorf("the hinted run was announced %s; the API says Failed (the push said Success)", st)
	}
	if st := announced("t-unknown-invocation"); st != "" {
		t.Errorf("a hint for an unknown invocation announced %s", st)
	}

	// A flood of hints for one invocation: a bounded few look-ups.
	flood := run("echo flood")
	before := metric("capoller_hint_invocations_looked_up_total")
	var wg sync.WaitGroup
	for range 300 {
		wg.Go(func() {
			if code := post("hint-S3cret", taskCompleted(flood, instance, "Success")); code != http.StatusAccepted {
				t.Errorf("a push of the flood: %d", code)
			}
		})
	}
	wg.Wait()
	testenv.WaitFor(t, 20*time.Second, "the flood to reach the owner", func() error {
		if n := metric("capoller_hints_forwarded_total", "result", "ok"); n < 302 {
			return fmt.Errorf("%v forwarded", n)
		}
		return nil
	})
	testenv.WaitFor(t, 15*time.Second, "the flooded run's event", func() error {
		if announced(flood) == "" {
			return fmt.Errorf("%s not announced", flood)
		}
		return nil
	})
	if n := metric("capoller_hint_invocations_looked_up_total") - before; n < 1 || n > 5 {
		t.Errorf("300 hints for one invocation cost %v look-ups; want 1 to 5", n)
	}
	if n := metric("capoller_hints_total", "outcome", "coalesced"); n < 250 {
		t.Errorf("%v of 300 hints coalesced", n)
	}
}

// TestHintsNeedAToken: an endpoint that would take anyone's pushes is
// refused at start-up, and so is a uid that is not one.
func TestHintsNeedAToken(t *testing.T) {
	env := append(dropEnv(cleanEnv(t), "CAPOLLER_HINTS_TOKEN"), "ALIBABA_CLOUD_ACCESS_KEY_ID=LTAIx", "ALIBABA_CLOUD_ACCESS_KEY_SECRET=y")
	code, _, stderr := runBinaryEnv(t, env, "config", "check", "--hints-listen", "127.0.0.1:0")
	if code != 2 || !strings.Contains(stderr, "hints-listen: a token is required (CAPOLLER_HINTS_TOKEN or hints-token-file)") {
		t.Errorf("hints without a token: exit %d, stderr:\n%s", code, stderr)
	}
	code, stdout, stderr := runBinaryEnv(t, append(env, "CAPOLLER_HINTS_TOKEN=hint-S3cret"), "config", "check", "--hints-listen", "127.0.0.1:0", "--hints-uid", "12x")
	if code != 2 || !strings.Contains(stderr, "hints-uid: want the default account's numeric uid") || strings.Contains(stdout+stderr, "hint-S3cret") {
		t.Errorf("a bad uid: exit %d, stderr:\n%s", code, stderr)
	}
	code, stdout, _ = runBinaryEnv(t, append(env, "CAPOLLER_HINTS_TOKEN=hint-S3cret"), "config", "check", "--hints-listen", "127.0.0.1:0")
	if code != 0 || strings.Contains(stdout, "hint-S3cret") || !strings.Contains(stdout, "token: REDACTED") {
		t.Errorf("config check with hints: exit %d, stdout:\n%s", code, stdout)
	}
}

// hintGroup is two in-process replicas with hints on, sharing a store and
// a stream.
type hintGroup struct {
	replicas []*hintReplica
	nc       *nats.Conn
	js       jetstream.JetStream
	stream   string
}

// startHintGroup starts two replicas polling simURL every interval with
// hints on (token hint-S3cret), stopped when the test ends, and waits for
// their first cycle.
func startHintGroup(t *testing.T, simURL, interval string) *hintGroup {
	t.Setenv("CAPOLLER_HINTS_TOKEN", "hint-S3cret")
	g := &hintGroup{stream: testenv.Name("CAPOLLER_HINTS")}
	natsURL := testenv.NATSURL(t)
	g.nc, g.js = testenv.NATS(t, natsURL, g.stream)
	redisURL := testenv.RedisURL(t)
	_, prefix := testenv.RedisAt(t, redisURL)
	ctx, cancel := context.WithCancel(context.Background())
	for i := range 2 {
		hintsAddr, err := harness.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		metricsAddr, err := harness.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		r := &hintReplica{hints: hintsAddr, metrics: metricsAddr, logs: &syncBuffer{}, done: make(chan int, 1)}
		g.replicas = append(g.replicas, r)
		ctx, stop := context.WithCancel(ctx)
		r.stop = stop
		go func() {
			r.done <- cli(ctx, []string{"run", "--endpoint", simURL, "--redis-url", redisURL, "--key-prefix", prefix, "--nats-url", natsURL,
				"--stream", g.stream, "--subject-prefix", strings.ToLower(g.stream), "--interval", interval, "--lease-ttl", "3s",
				"--replica-id", fmt.Sprintf("hints-%d", i), "--hints-listen", hintsAddr, "--metrics-addr", metricsAddr}, io.Discard, r.logs)
		}()
	}
	t.Cleanup(func() {
		cancel()
		for i, r := range g.replicas {
			<-r.done
			if t.Failed() {
				t.Logf("replica %d:\n%s", i, r.logs.String())
			}
		}
	})
	testenv.WaitFor(t, 30*time.Second, "the baseline cycle", func() error {
		if n := g.metric("capoller_cycles_total"); n < 1 {
			return fmt.Errorf("%v cycles", n)
		}
		return nil
	})
	return g
}

// metric sums a metric over the replicas.
func (g *hintGroup) metric(name string, match ...string) float64 {
	total := 0.0
	for _, r := range g.replicas {
		if m, err := harness.ScrapeMetrics(context.Background(), r.metrics); err == nil {
			total += m.Sum(name, match...)
		}
	}
	return total
}

// TestHintsFromCasimsPushes: two replicas poll every 60 s; casim pushes
// TaskCompleted for every run that ends, through a proxy that hands each
// push to a random replica, and drops a fifth of them. Every run whose
// push came is announced within seconds of it, not at the next poll; every
// run whose push was dropped is still announced, by polling, and counted
// as unhinted.
func TestHintsFromCasimsPushes(t *testing.T) {
	sim, simURL := testenv.Emulator(t, castest.Options{AccessKeyID: "LTAIrun", AccessKeySecret: "run-secret", Instances: 2})
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIrun")
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "run-secret")
	t.Setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
	g := startHintGroup(t, simURL, "60s")
	var mu sync.Mutex
	pushed, announced := map[string]time.Time{}, map[string]time.Time{} // invocation/instance → first push, first terminal event
	sub, err := g.nc.Subscribe(strings.ToLower(g.stream)+".>", func(m *nats.Msg) {
		var ev publisher.Event
		if json.Unmarshal(m.Data, &ev) != nil || ev.Data.InstanceID == "" || !ev.Data.Terminal {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if run := ev.Data.InvokeID + "/" + ev.Data.InstanceID; announced[run].IsZero() {
			announced[run] = time.Now()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var push castest.TaskCompleted
		if json.Unmarshal(body, &push) == nil {
			mu.Lock()
			if run := push.Data.InvokeID + "/" + push.Data.InstanceID; pushed[run].IsZero() {
				pushed[run] = time.Now()
			}
			mu.Unlock()
		}
		req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+g.replicas[rand.IntN(len(g.replicas))].hints+r.URL.Path, bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	defer proxy.Close()
	if err := sim.SetEventBridge(castest.EventBridge{URL: proxy.URL + hintintake.Path, Token: "hint-S3cret", Delivery: castest.PushDelivery{Drop: 0.2}}); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sim.RunWorkload(ctx, castest.WorkloadOptions{Every: 200 * time.Millisecond})
	}()
	testenv.WaitFor(t, 30*time.Second, "pushes to come", func() error {
		if st := sim.PushStats(); st.Sent < 10 || st.Dropped < 1 {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	stop()
	<-done
	final := map[string]string{} // invocation/instance → its last status, by the emulator
	testenv.WaitFor(t, 90*time.Second, "every run's last status announced (the dropped ones at the next poll)", func() error {
		for _, e := range sim.Truth() {
			if e.Level == "instance" && e.Product == castest.ProductECS {
				final[e.InvokeID+"/"+e.InstanceID] = e.To
			}
		}
		got := map[string]string{}
		for _, p := range testenv.StreamEvents(t, g.js, g.stream) {
			if d := p.Event.Data; d.InstanceID != "" {
				got[d.InvokeID+"/"+d.InstanceID] = string(d.Status)
			}
		}
		for run, st := range final {
			if got[run] != st {
				return fmt.Errorf("%s is %s, announced %q", run, st, got[run])
			}
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	var unpushed int
	for run, st := range final {
		if st != "Success" && st != "Failed" {
			continue // a push is only for a run's end
		}
		at, ok := pushed[run]
		if !ok {
			unpushed++
			continue
		}
		if announced[run].IsZero() {
			t.Errorf("%s: no terminal event came on the events' subjects", run)
		} else if lag := announced[run].Sub(at); lag > 5*time.Second {
			t.Errorf("%s was announced %v after its push: at the poll, not at the hint", run, lag.Round(time.Millisecond))
		}
	}
	t.Logf("%d runs pushed, %d not (dropped), %+v", len(pushed), unpushed, sim.PushStats())
	if unpushed == 0 {
		t.Error("no run's push was dropped: polling's part was not shown")
	}
	if n := g.metric("capoller_transitions_unhinted_total"); n < 1 {
		t.Errorf("%v transitions counted unhinted, with %d pushes dropped", n, unpushed)
	}
	if n := g.metric("capoller_hints_refused_total"); n != 0 {
		t.Errorf("%v of casim's pushes refused", n)
	}
}

// TestAnEmptyHintsTokenFileStopsTheStart: a token file that is empty (a
// Secret mounted before it was filled) would have every push refused with
// 401 while the daemon looked healthy; run stops at once and names it.
func TestAnEmptyHintsTokenFileStopsTheStart(t *testing.T) {
	_, simURL := startEmulator(t)
	stream := testenv.Name("CAPOLLER_HINTS_EMPTY")
	natsURL := testenv.NATSURL(t)
	testenv.NATS(t, natsURL, stream)
	redisURL := testenv.RedisURL(t)
	_, prefix := testenv.RedisAt(t, redisURL)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	env := dropEnv(os.Environ(), "CAPOLLER_HINTS_TOKEN")
	code, _, stderr := runBinaryIn(t, time.Minute, env, "run", "--endpoint", simURL, "--redis-url", redisURL, "--key-prefix", prefix,
		"--nats-url", natsURL, "--stream", stream, "--subject-prefix", strings.ToLower(stream), "--hints-listen", addr, "--hints-token-file", file)
	if code == 0 || !strings.Contains(stderr, "hints-token-file "+file+": empty") {
		t.Errorf("an empty token file: exit %d, stderr:\n%s", code, stderr)
	}
}

// TestAHintAtAStoppingOwnerIsNotLost: the owner of the shard takes a hint
// but cannot look it up (the API throttles it) and is stopped, as a
// rolling deploy does; the hint dies with its queue. The replica that
// takes the shard over lists it at once, and the run is announced then:
// seconds after the hint, not at the next 60 s poll.
func TestAHintAtAStoppingOwnerIsNotLost(t *testing.T) {
	sim, simURL := startEmulator(t)
	g := startHintGroup(t, simURL, "60s")
	owned := func(r *hintReplica) bool {
		m, err := harness.ScrapeMetrics(context.Background(), r.metrics)
		return err == nil && m.Sum("capoller_shard_owned") == 1
	}
	var owner, next *hintReplica
	testenv.WaitFor(t, 20*time.Second, "both replicas in the group, and one owning the shard", func() error {
		owner, next = nil, nil
		for i, r := range g.replicas {
			m, err := harness.ScrapeMetrics(context.Background(), r.metrics)
			if err != nil || m.Sum("capoller_group_replicas") != 2 {
				return fmt.Errorf("replica %d does not see both (%w)", i, err)
			}
			if owned(r) {
				owner, next = r, g.replicas[1-i]
			}
		}
		if owner == nil {
			return errors.New("no owner")
		}
		return nil
	})
	instance := ecsInstance(sim)
	invokeID := runOnEmulator(t, simURL, instance, "echo bye; exit 4")
	testenv.WaitFor(t, 10*time.Second, "the run to fail in the emulator", func() error {
		if !slices.ContainsFunc(sim.Truth(), func(e castest.TruthEntry) bool {
			return e.InvokeID == invokeID && e.InstanceID == instance && e.To == "Failed"
		}) {
			return errors.New("still running")
		}
		return nil
	})

	if err := sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultThrottle, Count: -1}); err != nil {
		t.Fatal(err)
	}
	body := taskCompleted(invokeID, instance, "Failed")
	hreq, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+owner.hints+hintintake.Path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hreq.Header.Set("Content-Type", "application/cloudevents+json")
	hreq.Header.Set("Authorization", "Bearer hint-S3cret")
	hresp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	_ = hresp.Body.Close()
	if hresp.StatusCode != http.StatusAccepted {
		t.Fatalf("the push: %d, want 202", hresp.StatusCode)
	}
	start := time.Now()
	testenv.WaitFor(t, 10*time.Second, "the owner's look-up to be throttled", func() error {
		m, err := harness.ScrapeMetrics(context.Background(), owner.metrics)
		if err != nil || m.Sum("capoller_api_errors_total", "class", "throttled") == 0 {
			return fmt.Errorf("no call throttled yet (%w)", err)
		}
		return nil
	})
	// The owner waits for the next quota window; the next owner will not.
	sim.ClearFaults()
	owner.stop()
	code := <-owner.done
	owner.done <- code // for the cleanup

	testenv.WaitFor(t, 30*time.Second, "the run announced by the shard's next owner", func() error {
		for _, p := range testenv.StreamEvents(t, g.js, g.stream) {
			if d := p.Event.Data; d.InvokeID == invokeID && d.InstanceID == instance && d.Status == "Failed" {
				return nil
			}
		}
		return errors.New("not announced")
	})
	if lag := time.Since(start); lag >= 60*time.Second {
		t.Errorf("announced %v after the hint: at the next poll, not at the hand-off", lag)
	}
	t.Logf("announced %v after the hint, through a hand-off", time.Since(start).Round(time.Millisecond))
	if !owned(next) {
		t.Error("the other replica does not own the shard")
	}
}
