package poller_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/cloudassist"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/testenv"
)

// mixSeeds are the seeds of the behaviour mixes to run:
// CAPOLLER_MIX_SEEDS is a list ("7,11") or a count ("20": seeds 1..20);
// by default three seeds drawn from the clock, so that each run tries new
// mixes (the test logs them, to replay a failure).
func mixSeeds(t *testing.T) []int64 {
	t.Helper()
	env := os.Getenv("CAPOLLER_MIX_SEEDS")
	if n, err := strconv.Atoi(env); err == nil && !strings.Contains(env, ",") && n > 0 && n < 1000 {
		var out []int64
		for i := 1; i <= n; i++ {
			out = append(out, int64(i))
		}
		return out
	}
	if env != "" {
		var out []int64
		for _, f := range strings.Split(env, ",") {
			s, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
			if err != nil {
				t.Fatalf("CAPOLLER_MIX_SEEDS=%q: %v", env, err)
			}
			out = append(out, s)
		}
		return out
	}
	base := time.Now().UnixNano() % 1_000_000
	return []int64{base, base + 1, base + 2}
}

// TestGroundTruthUnderAMixOfBehaviours runs one-shot, periodic and SWAS
// work against an emulator whose undocumented behaviours (listing order,
// ties, unstable order, drifting and expiring tokens, strict filters) are
// a random mix from a seed, with the incremental ECS strategy or
// ecs-results, and holds the stream against the emulator's ground truth:
// every record's final status is announced, each record's events are an
// in-order subsequence of its true statuses, and each previousStatus is
// the status of the record's previous event.
func TestGroundTruthUnderAMixOfBehaviours(t *testing.T) {
	for _, seed := range mixSeeds(t) {
		b := castest.RandomBehaviour(seed)
		source := []string{"ecs", "ecs-results"}[seed&1]
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			t.Logf("behaviour %s, source %s; replay with CAPOLLER_MIX_SEEDS=%d", b, source, seed)
			h := newHarnessWith(t, func(o *castest.Options) { o.Behaviour = b })
			opts := h.listerOptions(2)
			// No resync during the test (the first cycle is the only full
			// listing), so that nothing missed is hidden until one; the
			// daemon's head overlap for a short interval.
			opts.TransientRetries, opts.ResyncEvery, opts.HeadOverlap = 0, time.Hour, 10*time.Second
			var ecsLister poller.Lister
			var err error
			if source == "ecs" {
				opts.Strategy = cloudassist.StrategyIncremental
				ecsLister, err = cloudassist.NewECS(opts)
			} else {
				ecsLister, err = cloudassist.NewECSResults(opts)
			}
			if err != nil {
				t.Fatal(err)
			}
			swasLister, err := cloudassist.NewSWAS(opts)
			if err != nil {
				t.Fatal(err)
			}
			st, pub := h.store(), h.publisher(h.js)
			pe := h.poller(ecsLister, st, pub, func(o *poller.Options) { o.Interval = 60 * time.Millisecond })
			ps := h.poller(swasLister, st, pub, func(o *poller.Options) {
				o.Shard, o.Interval = diff.Shard{Source: diff.SourceSWAS, Region: region}, 60*time.Millisecond
			})
			mustRunOnce(t, pe)
			mustRunOnce(t, ps)
			killE, killS := startPoller(t, pe), startPoller(t, ps)
			var swasIDs []string
			for _, inst := range h.sim.Instances() {
				if inst.Product == castest.ProductSWAS {
					swasIDs = append(swasIDs, inst.ID)
				}
			}
			req := ecs.CreateRunCommandRequest()
			req.Type, req.CommandContent, req.InstanceId = "RunShellScript", "echo tick", &[]string{h.instances[0]}
			req.RepeatMode, req.Frequency = "Period", "rate(1s)"
			periodic, err := h.sdk.RunCommand(req)
			if err != nil {
				t.Fatal(err)
			}
			stopped := h.run("echo start; hang", 0, h.instances[2])
			for i := range 14 {
				script := fmt.Sprintf("echo %d; sleep 0.%d; exit %d", i, i%4, i%3)
				h.run(script, 0, h.instances[i%2], h.instances[2])
				if i%2 == 0 {
					h.swasRun(script, swasIDs[i%len(swasIDs)])
				}
				time.Sleep(40 * time.Millisecond) // pacing the arrivals, not waiting for a result
			}
			h.run("echo waiting; hang", 1, h.instances[1]) // times out
			eventually(t, 15*time.Second, "three periodic runs", func() bool {
				return len(finishedRuns(h.sim, periodic.InvokeId, "Success")[h.instances[0]]) >= 3
			})
			for _, id := range []string{periodic.InvokeId, stopped} {
				stop := ecs.CreateStopInvocationRequest()
				stop.InvokeId = id
				if _, err := h.sdk.StopInvocation(stop); err != nil {
					t.Fatal(err)
				}
			}
			truth := waitCaughtUp(t, h, 30*time.Second)
			killE()
			killS()
			testenv.CheckAgainstTruth(t, truth, h.events())
		})
	}
}
