package poller_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capoller/capoller/poller"
)

// TestASpacedHintIsLookedUpWithoutAnotherEvent: a second hint for an
// invocation that was just looked up waits for its spacing, and is then
// looked up on its own: no other hint, and no cycle of the listing (the
// interval is an hour), has to come and wake the poller.
func TestASpacedHintIsLookedUpWithoutAnotherEvent(t *testing.T) {
	h := newHarness(t)
	reg := prometheus.NewRegistry()
	metrics := poller.NewMetrics(poller.MetricsOptions{Registerer: reg})
	src, st, pub := h.parts(10)
	var cycles atomic.Int64
	p := h.poller(src, st, pub, func(o *poller.Options) {
		o.Interval, o.Metrics = time.Hour, metrics
		o.Hints = &poller.HintOptions{Spacing: 200 * time.Millisecond}
		o.OnCycle = func(poller.Report) { cycles.Add(1) }
	})
	kill := startPoller(t, p)
	defer kill()
	eventually(t, 5*time.Second, "the first cycle", func() bool { return cycles.Load() > 0 })
	id := h.run("echo hi", 0, h.instances[0])
	lookedUp := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "capoller_hint_invocations_looked_up_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	if !p.Hint(poller.Hint{InvokeID: id}) {
		t.Fatal("the first hint was not queued")
	}
	eventually(t, 5*time.Second, "the first look-up", func() bool { return lookedUp() == 1 })
	if !p.Hint(poller.Hint{InvokeID: id}) { // within the spacing: it waits
		t.Fatal("the second hint was not queued")
	}
	eventually(t, 5*time.Second, "the spaced look-up, with nothing else to wake the poller", func() bool { return lookedUp() == 2 })
}
