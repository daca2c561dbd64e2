package main

import (
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/capoller/capoller/poller"
	"github.com/capoller/capoller/poller/truthcheck"
)

// TestChaosShort is the CI mode of `capoller chaos`: three replicas as
// child processes, against a redis-server and a NATS server of the
// harness's own, for 55 s of faults with a new seed each run
// (CAPOLLER_CHAOS_SEED replays one): SIGKILL and SIGSTOP of replicas,
// kills and stops armed at every step of the cycle, Redis and NATS
// restarts, API throttling, 5xx, slow and malformed responses, invalid
// NextTokens and random behaviours. Once the replicas caught up, the whole
// stream must hold every final status, in order, with consistent
// previous statuses, and nothing twice.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of chaos with replicas as processes")
	}
	seed := time.Now().UnixNano() % 1_000_000_000
	if s := os.Getenv("CAPOLLER_CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("CAPOLLER_CHAOS_SEED=%q: %v", s, err)
		}
	}
	o := chaosOptions{duration: 55 * time.Second, seed: seed, redisURL: "embedded", natsURL: "embedded", checkpoint: "redis",
		replicas: 3, interval: time.Second, leaseTTL: 4 * time.Second, faultEvery: 2500 * time.Millisecond, rate: 3,
		quota: 600, qps: 5, catchUp: 75 * time.Second, env: []string{beMainEnv + "=1"}}
	t.Logf("seed %d; replay with CAPOLLER_CHAOS_SEED=%d, or: capoller chaos --seed %d --duration %v --rate %g --fault-every %v",
		seed, seed, seed, o.duration, o.rate, o.faultEvery)
	var progress syncBuffer
	rep, err := runChaos(t.Context(), o, &progress)
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	var summary strings.Builder
	printChaos(&summary, rep)
	t.Logf("summary:\n%s", summary.String())
	if !rep.OK {
		t.Errorf("seed %d: the promise broke (or the replicas did not catch up); the summary above has the violations and the kept logs", seed)
	}
	if rep.Generated == 0 || rep.Published == 0 || sum(rep.HookHits) == 0 || rep.Faults[faultKill]+rep.Faults[faultStop] == 0 {
		t.Errorf("seed %d: the run did too little to prove anything: %d transitions, %d events, hooks hit %v, faults %v",
			seed, rep.Generated, rep.Published, rep.HookHits, rep.Faults)
	}
}

// TestChaosScheduleReplays: a seed gives the same faults and hooks; the
// engines' restarts are scheduled only when the harness runs them.
func TestChaosScheduleReplays(t *testing.T) {
	o := chaosOptions{duration: 10 * time.Minute, seed: 7, replicas: 3, leaseTTL: 4 * time.Second, faultEvery: 3 * time.Second, checkpoint: "redis"}
	a, b := chaosSchedule(o, true, true), chaosSchedule(o, true, true)
	if !reflect.DeepEqual(a, b) || len(a) < 100 {
		t.Fatalf("two schedules from one seed differ, or are short (%d faults)", len(a))
	}
	kinds := map[string]int{}
	for _, f := range a {
		kinds[f.Kind]++
		if f.At <= 0 || f.At >= o.duration {
			t.Errorf("fault at %v, outside the run", f.At)
		}
		if f.Kind == faultStop && f.For <= o.leaseTTL {
			t.Errorf("a stop of %v does not outlast the lease TTL %v", f.For, o.leaseTTL)
		}
	}
	for _, k := range []string{faultKill, faultStop, faultRedis, faultNATS, faultThrottle, faultServerError, faultSlow, faultMalformed, faultInvalidToken, faultBehaviour} {
		if kinds[k] == 0 {
			t.Errorf("no %s in 10 minutes: %v", k, kinds)
		}
	}
	for _, f := range chaosSchedule(o, false, false) {
		if f.Kind == faultRedis || f.Kind == faultNATS || f.Kind == faultNATSNode {
			t.Fatalf("%s scheduled against engines the harness did not start", f.Kind)
		}
	}
	armA, armB := chaosArms(7), chaosArms(7)
	steps := map[poller.Step]bool{}
	for range 200 {
		x, y := armA(), armB()
		if x != y {
			t.Fatalf("arms differ: %v, %v", x, y)
		}
		steps[x.step] = true
	}
	if len(steps) != 5 { // the four steps and none
		t.Errorf("arms cover %v", steps)
	}
	if len(truthcheck.Kinds()) != 5 {
		t.Errorf("kinds %v", truthcheck.Kinds())
	}
}

func TestParseHookFault(t *testing.T) {
	for _, tc := range []struct {
		fault, stopAt string
		want          hookFault
		bad           bool
	}{
		{"", "", hookFault{}, false},
		{"", "published", hookFault{step: poller.StepPublished, action: "stop", nth: 1}, false},
		{"staged:kill:3", "published", hookFault{step: poller.StepStaged, action: "kill", nth: 3}, false},
		{"committed:stop", "", hookFault{step: poller.StepCommitted, action: "stop", nth: 1}, false},
		{"nowhere:kill", "", hookFault{}, true},
		{"fetched:explode", "", hookFault{}, true},
		{"fetched:kill:0", "", hookFault{}, true},
		{"fetched", "", hookFault{}, true},
	} {
		got, err := parseHookFault(tc.fault, tc.stopAt)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("parseHookFault(%q, %q) = %+v, %v", tc.fault, tc.stopAt, got, err)
		}
	}
}
