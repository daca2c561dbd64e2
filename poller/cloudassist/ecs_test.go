package cloudassist

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

const (
	testKeyID     = "LTAItestkeyid"
	testKeySecret = "test-secret-do-not-log"
	region        = "cn-hangzhou"
)

type fixture struct {
	sim  *castest.Server
	url  string
	sdk  *ecs.Client   // a raw SDK client, for RunCommand and friends
	skew *atomic.Int64 // how far the emulator's clock is ahead, in nanoseconds
}

// advance moves the emulator's clock forward, so that what is created
// next gets a later CreationTime second.
func (f *fixture) advance(d time.Duration) { f.skew.Add(int64(d)) }

func startSim(t *testing.T, instances int) *fixture {
	t.Helper()
	skew := &atomic.Int64{}
	sim, err := castest.New(castest.Options{AccessKeyID: testKeyID, AccessKeySecret: testKeySecret, Instances: instances,
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	url, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	client, err := ecs.NewClientWithOptions(region, sdk.NewConfig().WithAutoRetry(false),
		credentials.NewStaticAKCredentialsProvider(testKeyID, testKeySecret))
	if err != nil {
		t.Fatal(err)
	}
	client.Domain = strings.TrimPrefix(url, "http://")
	return &fixture{sim: sim, url: url, sdk: client, skew: skew}
}

func (f *fixture) lister(t *testing.T, mutate func(*Options)) *ECS {
	t.Helper()
	// No retries: these tests look at each error as the API gives it.
	opts := Options{Region: region, Endpoint: f.url, AccessKeyID: testKeyID, AccessKeySecret: testKeySecret, Timeout: 5 * time.Second,
		TransientRetries: -1, ThrottleRetries: -1,
		Now: func() time.Time { return time.Now().Add(time.Duration(f.skew.Load())) }} // the emulator's clock
	if mutate != nil {
		mutate(&opts)
	}
	l, err := NewECS(opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (f *fixture) ecsInstances() []string {
	var ids []string
	for _, inst := range f.sim.Instances() {
		if inst.Product == castest.ProductECS {
			ids = append(ids, inst.ID)
		}
	}
	return ids
}

func (f *fixture) run(t *testing.T, script string, timeout int, instances ...string) string {
	t.Helper()
	req := ecs.CreateRunCommandRequest()
	req.Type = "RunShellScript"
	req.CommandContent = script
	req.InstanceId = &instances
	if timeout > 0 {
		req.Timeout = requests.NewInteger(timeout)
	}
	resp, err := f.sdk.RunCommand(req)
	if err != nil {
		t.Fatalf("RunCommand: %v", err)
	}
	return resp.InvokeId
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func find(snap diff.Snapshot, k diff.Key) (diff.Record, bool) {
	for _, r := range snap.Records {
		if r.Key == k {
			return r, true
		}
	}
	return diff.Record{}, false
}

func TestSnapshotPagesWithNextToken(t *testing.T) {
	f := startSim(t, 2)
	ids := f.ecsInstances()
	var invokes []string
	for i := range 7 {
		invokes = append(invokes, f.run(t, fmt.Sprintf("echo %d", i), 0, ids...))
	}
	l := f.lister(t, func(o *Options) { o.PageSize = 2 })
	before := f.sim.Calls()["DescribeInvocations"]
	snap, err := l.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if calls := f.sim.Calls()["DescribeInvocations"] - before; calls != 4 {
		t.Errorf("listing 7 invocations 2 per page took %d calls, want 4", calls)
	}
	if len(snap.Records) != 7*(1+len(ids)) {
		t.Fatalf("snapshot has %d records, want %d", len(snap.Records), 7*(1+len(ids)))
	}
	for _, id := range invokes {
		agg, ok := find(snap, diff.Key{InvokeID: id})
		if !ok || agg.CommandID == "" || agg.Status == "" {
			t.Errorf("aggregate of %s missing or empty: %+v", id, agg)
		}
		for _, inst := range ids {
			if _, ok := find(snap, diff.Key{InvokeID: id, InstanceID: inst}); !ok {
				t.Errorf("record %s/%s missing", id, inst)
			}
		}
	}
	if snap.Source != diff.SourceECS || snap.Region != region || snap.ObservedAt.IsZero() {
		t.Errorf("bad snapshot header %+v", snap)
	}
}

func TestSnapshotReportsScriptOutcomes(t *testing.T) {
	f := startSim(t, 2)
	ids := f.ecsInstances()
	ok := f.run(t, "echo hi; exit 0", 0, ids[0])
	failed := f.run(t, "echo hi; sleep 0.1; exit 3", 0, ids[0])
	mixed := f.run(t, "exit 0", 0, ids...)
	timeout := f.run(t, "hang", 1, ids[1])
	stopped := f.run(t, "echo start; hang", 0, ids[0])
	l := f.lister(t, nil)

	var snap diff.Snapshot
	done := func(id string) bool {
		r, ok := find(snap, diff.Key{InvokeID: id})
		return ok && r.Status.Terminal()
	}
	eventually(t, 10*time.Second, "a running invocation", func() bool {
		var err error
		snap, err = l.Snapshot(t.Context())
		r, _ := find(snap, diff.Key{InvokeID: stopped, InstanceID: ids[0]})
		return err == nil && r.Status == diff.StatusRunning
	})
	stop := ecs.CreateStopInvocationRequest()
	stop.InvokeId = stopped
	if _, err := f.sdk.StopInvocation(stop); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "every invocation to finish", func() bool {
		var err error
		snap, err = l.Snapshot(t.Context())
		return err == nil && done(ok) && done(failed) && done(mixed) && done(timeout) && done(stopped)
	})
	for _, tc := range []struct {
		key      diff.Key
		status   diff.Status
		exitCode int64
		code     string
	}{
		{diff.Key{InvokeID: ok}, diff.StatusSuccess, 0, ""},
		{diff.Key{InvokeID: ok, InstanceID: ids[0]}, diff.StatusSuccess, 0, ""},
		{diff.Key{InvokeID: failed}, diff.StatusFailed, 0, ""},
		{diff.Key{InvokeID: failed, InstanceID: ids[0]}, diff.StatusFailed, 3, "ExitCodeNonzero"},
		{diff.Key{InvokeID: mixed}, diff.StatusSuccess, 0, ""},
		{diff.Key{InvokeID: timeout}, diff.StatusFailed, 0, ""},
		{diff.Key{InvokeID: timeout, InstanceID: ids[1]}, diff.StatusTimeout, 0, "ExecutionTimeout"},
		{diff.Key{InvokeID: stopped}, diff.StatusStopped, 0, ""},
		{diff.Key{InvokeID: stopped, InstanceID: ids[0]}, diff.StatusStopped, 0, ""},
	} {
		r, found := find(snap, tc.key)
		if !found || r.Status != tc.status || r.ExitCode != tc.exitCode || r.ErrorCode != tc.code {
			t.Errorf("%v: got %q exit %d code %q, want %q exit %d code %q", tc.key, r.Status, r.ExitCode, r.ErrorCode, tc.status, tc.exitCode, tc.code)
		}
	}
	if r, _ := find(snap, diff.Key{InvokeID: failed, InstanceID: ids[0]}); r.StartTime.IsZero() || r.FinishTime.Before(r.StartTime) || r.Repeats != 1 {
		t.Errorf("failed run has bad times or repeats: %+v", r)
	}
}

func TestErrorShapes(t *testing.T) {
	f := startSim(t, 1)
	f.run(t, "echo x", 0, f.ecsInstances()[0])
	for _, tc := range []struct {
		name   string
		fault  castest.FaultKind
		opts   func(*Options)
		status int
		code   string
		class  Class
	}{
		{name: "wrong secret", opts: func(o *Options) { o.AccessKeySecret = "wrong-secret" }, status: 400, code: "SignatureDoesNotMatch", class: ClassPermanent},
		{name: "unknown key", opts: func(o *Options) { o.AccessKeyID = "LTAIunknown" }, status: 404, code: "InvalidAccessKeyId.NotFound", class: ClassPermanent},
		{name: "unknown region", opts: func(o *Options) { o.Region = "xx-nowhere-1" }, status: 404, code: "InvalidRegionId.NotFound", class: ClassPermanent},
		{name: "throttled", fault: castest.FaultThrottle, status: 400, code: "Throttling.User", class: ClassThrottled},
		{name: "unavailable", fault: castest.FaultUnavailable, status: 503, code: "ServiceUnavailable", class: ClassTransient},
		{name: "internal", fault: castest.FaultInternal, status: 500, code: "InternalError.Dispatch", class: ClassTransient},
		{name: "html bad gateway", fault: castest.FaultBadGateway, status: 502, code: "", class: ClassTransient},
		{name: "malformed body", fault: castest.FaultMalformed, code: "SDK.JsonUnmarshalError", class: ClassTransient},
		{name: "truncated body", fault: castest.FaultTruncated, code: "SDK.JsonUnmarshalError", class: ClassTransient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.sim.ClearFaults()
			if tc.fault != "" {
				if err := f.sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: tc.fault, Count: -1}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(f.sim.ClearFaults)
			}
			snap, err := f.lister(t, tc.opts).Snapshot(t.Context())
			if err == nil {
				t.Fatalf("want an error, got a snapshot of %d records", len(snap.Records))
			}
			if len(snap.Records) != 0 {
				t.Errorf("an error came with %d records", len(snap.Records))
			}
			apiErr, ok := errors.AsType[*APIError](err)
			if !ok {
				t.Fatalf("error %v is not an *APIError", err)
			}
			if apiErr.HTTPStatus != tc.status || apiErr.Code != tc.code || apiErr.Class != tc.class || ClassOf(err) != tc.class {
				t.Errorf("got status %d code %q class %v, want %d %q %v (%v)", apiErr.HTTPStatus, apiErr.Code, apiErr.Class, tc.status, tc.code, tc.class, err)
			}
			assertNoSecrets(t, err.Error())
		})
	}
}

func assertNoSecrets(t *testing.T, text string) {
	t.Helper()
	for _, secret := range []string{testKeySecret, "wrong-secret", "Signature=", "Signature%3D", "AccessKeyId=LTAI", "AccessKeyId%3DLTAI", "SignatureNonce="} {
		if strings.Contains(text, secret) {
			t.Errorf("error text leaks %q: %s", secret, text)
		}
	}
}

func TestNetworkErrorIsTransientAndRedacted(t *testing.T) {
	f := startSim(t, 1)
	l := f.lister(t, func(o *Options) { o.SecurityToken = "sts-token-secret" })
	if err := f.sim.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := l.Snapshot(t.Context())
	if err == nil {
		t.Fatal("want an error from a closed server")
	}
	if ClassOf(err) != ClassTransient {
		t.Errorf("class = %v, want transient: %v", ClassOf(err), err)
	}
	if strings.Contains(err.Error(), "sts-token-secret") || strings.Contains(err.Error(), "?") {
		t.Errorf("network error leaks the signed URL: %v", err)
	}
	assertNoSecrets(t, err.Error())
}

func TestFailedMiddlePageFailsTheSnapshot(t *testing.T) {
	f := startSim(t, 1)
	for range 5 {
		f.run(t, "echo x", 0, f.ecsInstances()[0])
	}
	if err := f.sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultInternal, Skip: 1}); err != nil {
		t.Fatal(err)
	}
	l := f.lister(t, func(o *Options) { o.PageSize = 2 })
	snap, err := l.Snapshot(t.Context())
	if err == nil || len(snap.Records) != 0 {
		t.Fatalf("a failed page 2 gave %d records and err %v", len(snap.Records), err)
	}
	if !strings.Contains(err.Error(), "page 2") {
		t.Errorf("error does not say which page failed: %v", err)
	}
	// The fault was one-shot: the next listing is complete.
	snap, err = l.Snapshot(t.Context())
	if err != nil || len(snap.Records) != 10 {
		t.Fatalf("retry gave %d records, err %v", len(snap.Records), err)
	}
}

func TestRefusedTokenRestartsTheListing(t *testing.T) {
	f := startSim(t, 1)
	for range 5 {
		f.run(t, "echo x", 0, f.ecsInstances()[0])
	}
	if err := f.sim.InjectFault(castest.Fault{Action: "DescribeInvocations", Kind: castest.FaultInvalidToken, Skip: 1}); err != nil {
		t.Fatal(err)
	}
	before := f.sim.Calls()["DescribeInvocations"]
	snap, err := f.lister(t, func(o *Options) { o.PageSize = 2 }).Snapshot(t.Context())
	if err != nil || len(snap.Records) != 10 {
		t.Fatalf("got %d records, err %v", len(snap.Records), err)
	}
	if calls := f.sim.Calls()["DescribeInvocations"] - before; calls != 5 {
		t.Errorf("calls = %d, want 5 (2 before the refusal, 3 after the restart)", calls)
	}
}

func TestSnapshotHonoursContext(t *testing.T) {
	f := startSim(t, 1)
	if err := f.sim.InjectFault(castest.Fault{Kind: castest.FaultLatency, Latency: "2s"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := f.lister(t, nil).Snapshot(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline", err)
	}
}

func TestOptionsValidation(t *testing.T) {
	for name, o := range map[string]Options{
		"no region":      {},
		"bad endpoint":   {Region: region, Endpoint: "ftp://x"},
		"page size":      {Region: region, PageSize: 51},
		"key w/o secret": {Region: region, AccessKeyID: "x"},
	} {
		if _, err := NewECS(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCallsAreRetriedByClass(t *testing.T) {
	f := startSim(t, 1)
	for range 5 {
		f.run(t, "echo x", 0, f.ecsInstances()[0])
	}
	for _, fault := range []castest.Fault{
		{Action: "DescribeInvocations", Kind: castest.FaultUnavailable, Skip: 1},
		{Action: "DescribeInvocations", Kind: castest.FaultMalformed, Skip: 1},
		{Action: "DescribeInvocations", Kind: castest.FaultThrottle, Skip: 2},
		{Action: "DescribeInvocations", Kind: castest.FaultThrottle, Skip: 2},
	} {
		if err := f.sim.InjectFault(fault); err != nil {
			t.Fatal(err)
		}
	}
	limits, err := NewLimits(LimitsOptions{QPS: 100})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	waits := map[Class]int{}
	l := f.lister(t, func(o *Options) {
		o.PageSize, o.TransientRetries, o.ThrottleRetries, o.ThrottleWindow, o.Limits = 2, 0, 0, 200*time.Millisecond, limits
		o.OnBackoff = func(c Class, d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			waits[c]++
			if c == ClassThrottled && d > 220*time.Millisecond {
				t.Errorf("throttle wait %v is past the next window plus jitter", d)
			}
		}
	})
	snap, err := l.Snapshot(t.Context())
	if err != nil || len(snap.Records) != 10 {
		t.Fatalf("got %d records, err %v", len(snap.Records), err)
	}
	if waits[ClassTransient] != 2 || waits[ClassThrottled] != 2 {
		t.Errorf("backoffs %v, want 2 transient and 2 throttled", waits)
	}
	if r := limits.Rate(region, "DescribeInvocations"); r >= 100 {
		t.Errorf("the rate stayed at %v after two throttles", r)
	}
	// Permanent errors are not retried.
	before := f.sim.Calls()["DescribeInvocations"]
	if _, err := f.lister(t, func(o *Options) { o.AccessKeySecret, o.TransientRetries, o.ThrottleRetries = "wrong", 0, 0 }).Snapshot(t.Context()); ClassOf(err) != ClassPermanent {
		t.Fatalf("err %v", err)
	}
	if calls := f.sim.Calls()["DescribeInvocations"] - before; calls != 0 {
		t.Errorf("a rejected signature was retried (%d signed calls)", calls)
	}
}

func TestLimitsAdapt(t *testing.T) {
	l, err := NewLimits(LimitsOptions{QPS: 16})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for range 5 {
		l.throttled("r", "A", now, time.Minute)
	}
	if got := l.Rate("r", "A"); got != 8 {
		t.Errorf("after 5 refusals in one window: %v calls/s, want one halving to 8", got)
	}
	for i := range 10 {
		l.throttled("r", "A", now.Add(time.Duration(i+1)*time.Minute), time.Minute)
	}
	if got := l.Rate("r", "A"); got != 1 {
		t.Errorf("after throttling in many windows: %v calls/s, want the floor 1", got)
	}
	if l.Rate("r", "B") != 16 {
		t.Error("another action's bucket was slowed")
	}
	for range 20 * 20 {
		l.passed("r", "A")
	}
	if got := l.Rate("r", "A"); got != 16 {
		t.Errorf("after many calls: %v calls/s, want back at 16", got)
	}
}
