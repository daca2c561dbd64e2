package castest

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	swas "github.com/aliyun/alibaba-cloud-sdk-go/services/swas-open"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func listedECS(t *testing.T, c sdkClients) []string {
	t.Helper()
	req := ecs.CreateDescribeInvocationsRequest()
	req.MaxResults = requests.NewInteger(50)
	resp, err := c.ecs.DescribeInvocations(req)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, inv := range resp.Invocations.Invocation {
		ids = append(ids, inv.InvokeId)
	}
	return ids
}

// The record limit counts execution records (one per instance and run),
// per product and region, and drops whole invocations, oldest first.
func TestRetentionCountsRecordsPerRegion(t *testing.T) {
	s, err := New(Options{AccessKeyID: keyID, AccessKeySecret: secret, Instances: 2, Regions: []string{"cn-hangzhou", "cn-beijing"},
		RetentionCount: 5})
	if err != nil {
		t.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	hz, bj := newSDK(t, base, "cn-hangzhou", nil), newSDK(t, base, "cn-beijing", nil)
	hzIDs, bjIDs := ecsIDs(s, "cn-hangzhou"), ecsIDs(s, "cn-beijing")

	// Three invocations of two records each: six records, one too many.
	inv1 := hz.runECS(t, "echo", "", "", hzIDs...)
	inv2 := hz.runECS(t, "echo", "", "", hzIDs...)
	inv3 := hz.runECS(t, "echo", "", "", hzIDs...)
	if got, want := listedECS(t, hz), []string{inv3, inv2}; !slices.Equal(got, want) {
		t.Errorf("cn-hangzhou lists %v, want %v (%s expired)", got, want, inv1)
	}
	// Another region, and another product, count their own records.
	b1 := bj.runECS(t, "echo", "", "", bjIDs...)
	b2 := bj.runECS(t, "echo", "", "", bjIDs...)
	if got, want := listedECS(t, bj), []string{b2, b1}; !slices.Equal(got, want) {
		t.Errorf("cn-beijing lists %v, want %v", got, want)
	}
	for range 3 {
		req := swas.CreateRunCommandRequest()
		req.Type, req.CommandContent, req.InstanceId = "RunShellScript", "echo", swasIDs(s, "cn-hangzhou")[0]
		if _, err := hz.swas.RunCommand(req); err != nil {
			t.Fatal(err)
		}
	}
	sreq := swas.CreateDescribeCommandInvocationsRequest()
	sreq.PageSize = "50"
	if resp, err := hz.swas.DescribeCommandInvocations(sreq); err != nil || len(resp.CommandInvocations) != 3 {
		t.Errorf("SWAS cn-hangzhou lists %d invocations (%v), want its 3", len(resp.CommandInvocations), err)
	}
	if s.Expired() != 1 {
		t.Errorf("expired %d invocations, want 1", s.Expired())
	}

	// A reboot task adds a record per run: its second run pushes inv2 out.
	every := hz.runECS(t, "echo booted", "EveryReboot", "", hzIDs[0]) // 2+2+1 records
	waitFor(t, "the reboot task to wait", func() bool { return lastTo(invocationTruth(s, every)) == stScheduled })
	for n := 1; n <= 2; n++ {
		if err := s.Reboot(hzIDs[0]); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the reboot run", func() bool {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.advance(s.opts.Now())
			inv := s.byID[every]
			return len(inv.Runs[0].History) == n && inv.Runs[0].Status == stScheduled
		})
		if n == 1 && !slices.Contains(listedECS(t, hz), inv2) {
			t.Fatalf("one run of the reboot task (still 5 records) expired %s", inv2)
		}
	}
	if got, want := listedECS(t, hz), []string{every, inv3}; !slices.Equal(got, want) {
		t.Errorf("after the second reboot run cn-hangzhou lists %v, want %v", got, want)
	}
}

func TestRetentionPolicies(t *testing.T) {
	for _, tc := range []struct {
		opts  Options
		age   time.Duration
		count int
	}{
		{Options{}, 30 * 24 * time.Hour, 10_000},
		{Options{Retention: RetentionCurrent}, 30 * 24 * time.Hour, 10_000},
		{Options{Retention: RetentionLegacy}, 28 * 24 * time.Hour, 100_000},
		{Options{Retention: RetentionLegacy, RetentionCount: 7}, 28 * 24 * time.Hour, 7},
	} {
		tc.opts.AccessKeyID, tc.opts.AccessKeySecret = keyID, secret
		s, err := New(tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		if s.retentionAge != tc.age || s.retentionCount != tc.count {
			t.Errorf("%q: %v and %d records, want %v and %d", tc.opts.Retention, s.retentionAge, s.retentionCount, tc.age, tc.count)
		}
		_ = s.Close()
	}
	if _, err := New(Options{AccessKeyID: keyID, AccessKeySecret: secret, Retention: "forever"}); err == nil {
		t.Error("an unknown retention policy was accepted")
	}
	s, base := newServer(t)
	for body, want := range map[string]int{`{"policy":"legacy"}`: http.StatusNoContent, `{"policy":"forever"}`: http.StatusBadRequest} {
		resp, err := http.Post(base+"/_casim/retention", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST /_casim/retention %s: %d, want %d", body, resp.StatusCode, want)
		}
	}
	if s.retentionAge != 28*24*time.Hour || s.retentionCount != 100_000 {
		t.Errorf("after the legacy policy: %v and %d records", s.retentionAge, s.retentionCount)
	}
}

// A periodic task past the retention age is no longer listed, and its
// schedule ends with it: no more runs, nothing more in the truth log.
// Under the legacy policy that happens after four weeks, not 30 days.
func TestExpiredPeriodicTaskStopsRunning(t *testing.T) {
	for _, tc := range []struct {
		policy  RetentionPolicy
		expires time.Duration
	}{
		{RetentionCurrent, 30 * 24 * time.Hour},
		{RetentionLegacy, 28 * 24 * time.Hour},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			clock := &fakeClock{t: time.Now()}
			s, err := New(Options{AccessKeyID: keyID, AccessKeySecret: secret, Instances: 1, Now: clock.Now, Retention: tc.policy})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			id := ecsIDs(s, "cn-hangzhou")[0]
			spec := invocationSpec{Type: "RunShellScript", Content: "echo tick", Timeout: 60, RepeatMode: repeatPeriod, Frequency: "rate(6h)"}
			old, e := s.createInvocation(ProductECS, "cn-hangzhou", []string{id}, spec)
			if e != nil {
				t.Fatal(e)
			}
			clock.add(tc.expires - 24*time.Hour)
			young, e := s.createInvocation(ProductECS, "cn-hangzhou", []string{id}, spec)
			if e != nil {
				t.Fatal(e)
			}
			clock.add(24 * time.Hour) // exactly the age: still kept
			if s.status(old.InvokeID) == "" {
				t.Fatalf("expired at exactly %v", tc.expires)
			}
			entries := func(inv *invocation) int {
				n := 0
				for _, e := range s.Truth() {
					if e.InvokeID == inv.InvokeID {
						n++
					}
				}
				return n
			}
			clock.add(time.Second)
			if s.status(old.InvokeID) != "" || s.Expired() != 1 {
				t.Fatalf("past %v: status %q, expired %d", tc.expires, s.status(old.InvokeID), s.Expired())
			}
			before, youngBefore := entries(old), entries(young)
			clock.add(2 * 24 * time.Hour)
			if after := entries(old); after != before {
				t.Errorf("the expired task went on: %d truth entries, then %d", before, after)
			}
			if entries(young) <= youngBefore {
				t.Error("the task still kept stopped running too")
			}
			s.mu.Lock()
			for _, r := range s.queue {
				if r.inv == old {
					t.Error("the expired task is still scheduled")
				}
			}
			s.mu.Unlock()
		})
	}
}
