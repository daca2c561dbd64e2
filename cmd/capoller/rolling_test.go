package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/testenv"
)

// deployment runs `capoller run` processes against one emulator, one
// Redis key prefix and one stream, each with a configuration of its own:
// what operators do during a rolling deploy, or with several deployments
// on one store. Its replicaGroup holds what they share; its args lack the
// regions and sources, which each replica names.
type deployment struct {
	*replicaGroup
}

const (
	deployTTL      = 3 * time.Second
	deployInterval = time.Second
	deployTick     = deployTTL / 5 // the lease-renewal tick
)

func newDeployment(t *testing.T, regions []string) *deployment {
	t.Helper()
	sim, simURL := testenv.Emulator(t, castest.Options{AccessKeyID: "LTAIrolling", AccessKeySecret: "rolling-secret", Regions: regions, Instances: 2})
	redisURL := testenv.RedisURL(t)
	_, prefix := testenv.RedisAt(t, redisURL)
	natsURL := testenv.NATSURL(t)
	stream := testenv.Name("CAPOLLER_ROLLING")
	_, js := testenv.NATS(t, natsURL, stream)
	g := &replicaGroup{t: t, sim: sim, js: js, stream: stream,
		args: []string{"run", "--endpoint", simURL, "--redis-url", redisURL, "--key-prefix", prefix,
			"--nats-url", natsURL, "--stream", stream, "--subject-prefix", strings.ToLower(stream),
			"--interval", deployInterval.String(), "--lease-ttl", deployTTL.String(), "--initial", "emit", "--qps", "50",
			"--log-level", "info"},
		env: append(os.Environ(), beMainEnv+"=1", "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true",
			"ALIBABA_CLOUD_ACCESS_KEY_ID=LTAIrolling", "ALIBABA_CLOUD_ACCESS_KEY_SECRET=rolling-secret")}
	t.Cleanup(g.stopAll)
	return &deployment{g}
}

// start runs a replica listing regions and sources, and returns when it
// was started.
func (d *deployment) start(id string, regions []string, sources string) (*replicaProc, time.Time) {
	d.t.Helper()
	started := time.Now()
	return d.startWith(id, append(slices.Clone(d.args), "--regions", strings.Join(regions, ","), "--sources", sources)), started
}

// stop sends SIGTERM and waits for the replica to exit, as a rolling
// deploy does before it starts the next one.
func (d *deployment) stop(p *replicaProc) {
	d.t.Helper()
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		d.t.Fatalf("%s did not exit within 30s of SIGTERM", p.ID)
	}
	if p.code() != 0 {
		d.t.Errorf("%s exited %d after SIGTERM", p.ID, p.code())
	}
}

// drive runs short commands in every region until ctx ends: on ECS
// instances, and on SWAS ones where swas names the region (the regions
// whose SWAS shard is polled).
func (d *deployment) drive(ctx context.Context, swas ...string) {
	acct := d.sim.Account(castest.DefaultAccount)
	var wg sync.WaitGroup
	for region, products := range acct.Fleet() {
		if !slices.Contains(swas, region) {
			delete(products, castest.ProductSWAS)
		}
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-time.After(300 * time.Millisecond): // pacing arrivals, not waiting for a result
				}
				script := fmt.Sprintf("echo %d; sleep 0.%d; exit %d", i, 2+i%6, i%3)
				if i%2 == 0 || len(products[castest.ProductSWAS]) == 0 {
					_, _ = acct.Invoke(region, products[castest.ProductECS], script, 5)
				} else {
					_, _ = acct.InvokeSWAS(region, products[castest.ProductSWAS][:1], script, 5)
				}
			}
		})
	}
	wg.Wait()
}

// waitPolls waits until each region was polled n more times with action
// (steady polling, observed).
func (d *deployment) waitPolls(action string, regions []string, n int) {
	d.t.Helper()
	since := time.Now()
	testenv.WaitFor(d.t, time.Duration(n)*deployInterval+30*time.Second, fmt.Sprintf("%d more polls of %v", n, regions), func() error {
		for _, r := range regions {
			if got := len(d.polls(action, r)) - len(slices.DeleteFunc(d.polls(action, r), func(t time.Time) bool { return !t.Before(since) })); got < n {
				return fmt.Errorf("%s polled %d times since, want %d", r, got, n)
			}
		}
		return nil
	})
}

// polls are the times a shard was polled: the emulator's arrivals of its
// action in its region.
func (d *deployment) polls(action, region string) []time.Time { return d.sim.CallLogIn(action, region) }

// longestGap is the longest time between two polls from from to until
// (from itself counts as a poll, for a shard that must have been polled
// by then), and where it ended.
func longestGap(polls []time.Time, from, until time.Time) (time.Duration, time.Time) {
	last, longest, at := from, time.Duration(0), time.Time{}
	for _, p := range append(slices.Clone(polls), until) {
		if p.Before(from) || p.After(until) {
			continue
		}
		if gap := p.Sub(last); gap > longest {
			longest, at = gap, p
		}
		last = p
	}
	return longest, at
}

// firstAfter is the first poll at or after t (zero if none).
func firstAfter(polls []time.Time, t time.Time) time.Time {
	for _, p := range polls {
		if !p.Before(t) {
			return p
		}
	}
	return time.Time{}
}

// TestRollingDeployAddingRegionsEndToEnd: two replicas list regions A
// and B; a rolling deploy restarts each (SIGTERM, then a start) listing A
// to F, against real Redis and NATS, with --lease-ttl 3s --interval 1s.
// Every new region is first polled within 5 s of the restart of the first
// replica that lists it (its start-up included); no shard goes over 4 s
// without a poll; and the stream holds every record's transitions in
// order against the emulator's truth, previousStatus chained.
func TestRollingDeployAddingRegionsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts replicas as processes")
	}
	all := []string{"cn-hangzhou", "cn-shanghai", "cn-beijing", "cn-shenzhen", "cn-qingdao", "cn-zhangjiakou"}
	old, wide := all[:2], all
	d := newDeployment(t, all)
	ctx, stopWork := context.WithCancel(t.Context())
	defer stopWork()
	var work sync.WaitGroup
	work.Go(func() { d.drive(ctx) })
	defer work.Wait()

	const action = "DescribeInvocations"
	r1, _ := d.start("r1", old, "ecs")
	r2, _ := d.start("r2", old, "ecs")
	testenv.WaitFor(t, 30*time.Second, "both old regions polled", func() error {
		for _, r := range old {
			if len(d.polls(action, r)) == 0 {
				return fmt.Errorf("%s not polled yet", r)
			}
		}
		return nil
	})
	steady := time.Now()
	d.waitPolls(action, old, 4)

	// The rolling deploy: r2 first, then r1, each replaced by one listing
	// all six regions.
	d.stop(r2)
	_, restarted := d.start("r2-new", wide, "ecs")
	testenv.WaitFor(t, 30*time.Second, "the new regions polled", func() error {
		for _, r := range wide[2:] {
			if len(d.polls(action, r)) == 0 {
				return fmt.Errorf("%s not polled yet", r)
			}
		}
		return nil
	})
	for _, r := range wide[2:] {
		first := firstAfter(d.polls(action, r), restarted)
		t.Logf("%s first polled %v after r2-new started", r, first.Sub(restarted).Round(time.Millisecond))
		if first.Sub(restarted) > 5*time.Second {
			t.Errorf("%s was first polled %v after the replica listing it started, more than 5s", r, first.Sub(restarted))
		}
	}
	d.waitPolls(action, wide, 4)
	d.stop(r1)
	d.start("r1-new", wide, "ecs")
	d.waitPolls(action, wide, 6)

	stopWork()
	work.Wait()
	truth := d.waitCaughtUp(90 * time.Second)
	end := time.Now()
	for _, r := range all {
		from := steady
		if !slices.Contains(old, r) {
			from = firstAfter(d.polls(action, r), restarted)
		}
		gap, at := longestGap(d.polls(action, r), from, end)
		t.Logf("%s: longest time without a poll %v (ending %v after the rolling deploy began)", r, gap.Round(time.Millisecond), at.Sub(restarted).Round(time.Millisecond))
		if gap > 4*time.Second {
			t.Errorf("%s went %v without a poll, more than 4s (the gap ended %v after r2-new started)", r, gap, at.Sub(restarted))
		}
	}
	testenv.CheckAgainstTruth(t, truth, testenv.StreamEvents(t, d.js, d.stream))
}

// TestTwoDeploymentsOnOneStoreEndToEnd: two deployments with disjoint
// shards, on one Redis and key prefix and one stream, as a newcomer
// would run them (one polls cn-hangzhou with ecs and swas, the other
// cn-shanghai with ecs-results): each polls its own shards from its first
// cycle, every shard within one interval plus a tick all along, and the
// stream holds every transition in order.
func TestTwoDeploymentsOnOneStoreEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts replicas as processes")
	}
	d := newDeployment(t, []string{"cn-hangzhou", "cn-shanghai"})
	ctx, stopWork := context.WithCancel(t.Context())
	defer stopWork()
	var work sync.WaitGroup
	work.Go(func() { d.drive(ctx, "cn-hangzhou") })
	defer work.Wait()

	_, eastStart := d.start("east", []string{"cn-hangzhou"}, "ecs,swas")
	_, westStart := d.start("west", []string{"cn-shanghai"}, "ecs-results")
	shards := []struct {
		action, region string
		started        time.Time
	}{
		{"DescribeInvocations", "cn-hangzhou", eastStart},
		{"DescribeCommandInvocations", "cn-hangzhou", eastStart},
		{"DescribeInvocationResults", "cn-shanghai", westStart},
	}
	testenv.WaitFor(t, 30*time.Second, "every shard polled", func() error {
		for _, s := range shards {
			if len(d.polls(s.action, s.region)) == 0 {
				return fmt.Errorf("%s %s not polled yet", s.action, s.region)
			}
		}
		return nil
	})
	for _, s := range shards {
		d.waitPolls(s.action, []string{s.region}, 12)
	}
	stopWork()
	work.Wait()
	truth := d.waitCaughtUp(60 * time.Second)
	end := time.Now()
	for _, s := range shards {
		polls := d.polls(s.action, s.region)
		first := polls[0]
		gap, at := longestGap(polls, first, end)
		t.Logf("%s in %s: first polled %v after its replica started; longest gap %v", s.action, s.region,
			first.Sub(s.started).Round(time.Millisecond), gap.Round(time.Millisecond))
		if first.Sub(s.started) > 5*time.Second {
			t.Errorf("%s in %s first polled %v after its replica started", s.action, s.region, first.Sub(s.started))
		}
		if gap > deployInterval+deployTick {
			t.Errorf("%s in %s went %v without a poll (until %v), more than an interval plus a tick", s.action, s.region, gap, at.Format(time.RFC3339Nano))
		}
	}
	testenv.CheckAgainstTruth(t, truth, testenv.StreamEvents(t, d.js, d.stream))
}
