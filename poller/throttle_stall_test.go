package poller_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// TestWaitingForTheQuotaIsNotAStall: a cycle that waits for the API's
// quota — throttled again and again, or held by the rate limit — for far
// longer than the stall timeout still succeeds; a call that hangs still
// fails the cycle as stalled, throttled before or not.
func TestWaitingForTheQuotaIsNotAStall(t *testing.T) {
	const stall = 300 * time.Millisecond
	stallAfter := func(o *poller.Options) { o.StallTimeout = stall }
	for _, tc := range []struct {
		name      string
		faults    []castest.Fault
		qps       float64 // the rate limit; 0: none
		throttles int     // throttled waits expected
		stalled   bool
	}{
		{
			// Three throttles in a row, each waiting past the next 400ms
			// window: over a second without a page.
			name:      "throttled again and again",
			faults:    []castest.Fault{{Action: "DescribeInvocations", Kind: castest.FaultThrottle, Count: 3}},
			throttles: 3,
		},
		{
			// Two calls a second: 500ms between pages.
			name: "held by the rate limit",
			qps:  2,
		},
		{
			name: "a hung call after throttles",
			faults: []castest.Fault{
				{Action: "DescribeInvocations", Kind: castest.FaultThrottle, Count: 2},
				{Action: "DescribeInvocations", Kind: castest.FaultLatency, Latency: "2s"},
			},
			throttles: 2,
			stalled:   true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			for range 3 {
				h.run("exit 0", 0, h.instances[0])
			}
			for _, f := range tc.faults {
				if err := h.sim.InjectFault(f); err != nil {
					t.Fatal(err)
				}
			}
			core, logs := observer.New(zapcore.InfoLevel)
			var mu sync.Mutex
			backoffs := map[cloudassist.Class]int{}
			opts := h.listerOptions(1) // three pages
			opts.ThrottleRetries, opts.ThrottleWindow, opts.Logger = 0, 400*time.Millisecond, zap.New(core)
			opts.OnBackoff = func(c cloudassist.Class, _ time.Duration) { mu.Lock(); backoffs[c]++; mu.Unlock() }
			if tc.qps > 0 {
				limits, err := cloudassist.NewLimits(cloudassist.LimitsOptions{QPS: tc.qps})
				if err != nil {
					t.Fatal(err)
				}
				opts.Limits = limits
			}
			lister, err := cloudassist.NewECS(opts)
			if err != nil {
				t.Fatal(err)
			}
			rep := h.poller(lister, h.store(), h.publisher(h.js), stallAfter).RunOnce(t.Context())
			switch {
			case tc.stalled && (rep.Err == nil || !strings.Contains(rep.Err.Error(), "no progress for 300ms")):
				t.Fatalf("err %v; want the hung call to fail the cycle as stalled", rep.Err)
			case !tc.stalled && (rep.Err != nil || rep.Records != 6):
				t.Fatalf("%d records, err %v (after %v); want all 6 read: waiting for the quota is not a stall", rep.Records, rep.Err, rep.Duration)
			case !tc.stalled && rep.Duration < 2*stall:
				t.Fatalf("the cycle took %v: it did not wait for the quota", rep.Duration)
			}
			mu.Lock()
			defer mu.Unlock()
			if backoffs[cloudassist.ClassThrottled] != tc.throttles {
				t.Errorf("OnBackoff saw %d throttled waits, want %d", backoffs[cloudassist.ClassThrottled], tc.throttles)
			}
			if n := logs.FilterMessage("API throttled; waiting for the next quota window").FilterField(zap.String("action", "DescribeInvocations")).Len(); n != tc.throttles {
				t.Errorf("logged %d throttled waits, want %d (one per window)", n, tc.throttles)
			}
		})
	}
}
