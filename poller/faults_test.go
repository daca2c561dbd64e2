package poller_test

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// TestDeliversUnderThrottlingAndFaults: with 30% of calls throttled and 5%
// failing with a 5xx, on top of a real per-window quota, every transition
// still arrives, exactly once, and capoller never exceeds the quota.
func TestDeliversUnderThrottlingAndFaults(t *testing.T) {
	for _, strategy := range []cloudassist.Strategy{cloudassist.StrategyIncremental, cloudassist.StrategyFull} {
		t.Run(string(strategy), func(t *testing.T) {
			// 20 calls/s as 6 per 300ms window: short windows keep the
			// throttle waits (past the next window) short.
			const quota, window = 6, 300 * time.Millisecond
			h := newHarness(t)
			if err := h.sim.SetQuota(quota, window); err != nil {
				t.Fatal(err)
			}
			for _, f := range []castest.Fault{
				{Action: "DescribeInvocations", Kind: castest.FaultUnavailable, Skip: 5}, // at least one, whatever the dice say
				{Action: "DescribeInvocations", Kind: castest.FaultThrottle, Rate: 0.30},
				{Action: "DescribeInvocations", Kind: castest.FaultUnavailable, Rate: 0.05 / 0.70}, // 5% of all calls
			} {
				if err := h.sim.InjectFault(f); err != nil {
					t.Fatal(err)
				}
			}
			limits, err := cloudassist.NewLimits(cloudassist.LimitsOptions{QPS: 15})
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			backoffs := map[cloudassist.Class]int{}
			opts := h.listerOptions(1)                         // one invocation a page: a full listing needs more calls than the quota allows
			opts.TransientRetries, opts.ThrottleRetries = 0, 0 // the defaults: retry
			opts.Strategy, opts.ResyncEvery, opts.Limits, opts.ThrottleWindow = strategy, 2*time.Second, limits, window
			opts.OnBackoff = func(c cloudassist.Class, _ time.Duration) { mu.Lock(); backoffs[c]++; mu.Unlock() }
			lister, err := cloudassist.NewECS(opts)
			if err != nil {
				t.Fatal(err)
			}
			kill := startPoller(t, h.poller(lister, h.store(), h.publisher(h.js), func(o *poller.Options) {
				o.Interval, o.MaxBackoff = 100*time.Millisecond, 500*time.Millisecond
			}))
			defer kill()
			eventually(t, 20*time.Second, "the baseline", func() bool {
				prev, err := h.store().Load(t.Context(), shard, nil)
				return err == nil && prev.Known
			})
			for i := range 12 {
				h.run(fmt.Sprintf("echo %d; sleep 0.%d; exit %d", i, i%5, i%3), 0, h.instances[i%3])
				time.Sleep(60 * time.Millisecond) // pacing our own RunCommand calls under the quota
			}
			waitCaughtUp(t, h, 60*time.Second)
			kill()

			ids := map[string]bool{}
			for _, e := range h.events() {
				if ids[e.MsgID] {
					t.Errorf("event %s published twice", e.MsgID)
				}
				ids[e.MsgID] = true
			}
			if refused := h.sim.Throttled(); refused["DescribeInvocations"] != 0 {
				t.Errorf("the quota refused %d calls: capoller went over it", refused["DescribeInvocations"])
			}
			calls := h.sim.CallLog("DescribeInvocations")
			perWindow := map[int64]int{}
			for _, at := range calls {
				perWindow[at.Truncate(window).UnixNano()]++
			}
			busiest := 0
			for _, n := range perWindow {
				busiest = max(busiest, n)
			}
			if busiest > quota {
				t.Errorf("%d calls in one window, quota %d", busiest, quota)
			}
			mu.Lock()
			defer mu.Unlock()
			if backoffs[cloudassist.ClassThrottled] == 0 || backoffs[cloudassist.ClassTransient] == 0 {
				t.Errorf("no backoff recorded: %v", backoffs)
			}
			windows := make([]int64, 0, len(perWindow))
			for w := range perWindow {
				windows = append(windows, w)
			}
			sort.Slice(windows, func(i, j int) bool { return windows[i] < windows[j] })
			t.Logf("%s: %d events, %d calls over %d windows (busiest %d/%d), backoffs %v",
				strategy, len(ids), len(calls), len(windows), busiest, quota, backoffs)
		})
	}
}
