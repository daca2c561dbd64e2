package castest

import (
	"fmt"
	"net/url"
	"testing"
	"time"
)

func TestParseFrequency(t *testing.T) {
	base := time.Date(2026, 11, 22, 10, 0, 7, 0, time.UTC) // a Sunday
	for _, tc := range []struct {
		expr string
		want time.Time
	}{
		{"rate(5s)", base.Add(5 * time.Second)},
		{"rate(5m)", base.Add(5 * time.Minute)},
		{"rate(1d)", base.Add(24 * time.Hour)},
		{"*/10 * * * * *", time.Date(2026, 11, 22, 10, 0, 10, 0, time.UTC)},
		{"0 */20 * * * *", time.Date(2026, 11, 22, 10, 20, 0, 0, time.UTC)},
		{"0 0 12 * * ?", time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)},
		{"0 30 9 * * 1-5", time.Date(2026, 11, 23, 9, 30, 0, 0, time.UTC)}, // next weekday
		{"0 0 0 1 1 *", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"0 0 10 * * * Asia/Shanghai", time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)},
	} {
		s, err := parseFrequency(tc.expr)
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		if got := s.next(base); !got.Equal(tc.want) {
			t.Errorf("%q: next(%v) = %v, want %v", tc.expr, base, got, tc.want)
		}
	}
	for _, bad := range []string{"rate(0s)", "rate(5x)", "rate()", "* * * *", "61 * * * * *", "*/0 * * * * *", "0 0 0 * * * Mars/Base"} {
		if _, err := parseFrequency(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ecsIDs(s *Server, region string) []string {
	var ids []string
	for _, inst := range s.Instances() {
		if inst.Product == ProductECS && inst.Region == region {
			ids = append(ids, inst.ID)
		}
	}
	return ids
}

func TestPeriodicTaskRunsAndKeepsHistory(t *testing.T) {
	s, _ := newServer(t)
	ids := ecsIDs(s, "cn-hangzhou")
	inv, e := s.createInvocation(ProductECS, "cn-hangzhou", ids, invocationSpec{Type: "RunShellScript",
		Content: "echo tick; exit 2", Timeout: 60, RepeatMode: repeatPeriod, Frequency: "rate(1s)"})
	if e != nil {
		t.Fatal(e)
	}
	waitFor(t, "three runs", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.advance(s.opts.Now())
		return len(inv.Runs[0].History) >= 3 && len(inv.Runs[1].History) >= 3
	})
	s.mu.Lock()
	rows := s.rows(inv, true, "PlainText")
	current := s.rows(inv, false, "PlainText")
	status := inv.Status
	s.mu.Unlock()
	if status != stScheduled && status != stRunning {
		t.Errorf("a periodic task's aggregate is %q, want Scheduled or Running", status)
	}
	for _, row := range current {
		if row.InvocationStatus != stScheduled && row.InvocationStatus != stRunning {
			t.Errorf("current status between runs: %q", row.InvocationStatus)
		}
	}
	runs := map[string][]int{}
	for _, row := range rows {
		if row.Repeats > 0 && terminal(row.InvocationStatus) && (row.InvocationStatus != stFailed || row.ExitCode != 2 || row.ErrorCode != "ExitCodeNonzero" || row.Output != "tick") {
			t.Errorf("history row %+v", row)
		}
		runs[row.InstanceId] = append(runs[row.InstanceId], row.Repeats)
	}
	for id, reps := range runs {
		for i := 1; i < len(reps); i++ {
			if reps[i] != reps[i-1]+1 {
				t.Errorf("%s: runs %v are not consecutive", id, reps)
			}
		}
	}
	// Stopping ends it.
	if e := s.stopInvocation(DefaultAccount, ProductECS, "cn-hangzhou", inv.InvokeID, nil); e != nil {
		t.Fatal(e)
	}
	waitFor(t, "the task to stop", func() bool { return s.status(inv.InvokeID) == stStopped })
}

func TestRebootTasks(t *testing.T) {
	s, _ := newServer(t)
	id := ecsIDs(s, "cn-hangzhou")[0]
	every, e := s.createInvocation(ProductECS, "cn-hangzhou", []string{id}, invocationSpec{Type: "RunShellScript", Content: "exit 0", Timeout: 60, RepeatMode: repeatEveryReboot})
	if e != nil {
		t.Fatal(e)
	}
	once, e := s.createInvocation(ProductECS, "cn-hangzhou", []string{id}, invocationSpec{Type: "RunShellScript", Content: "exit 0", Timeout: 60, RepeatMode: repeatNextRebootOnly})
	if e != nil {
		t.Fatal(e)
	}
	runsOf := func(inv *invocation) (int, string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.advance(s.opts.Now())
		return len(inv.Runs[0].History), inv.Runs[0].Status
	}
	waitFor(t, "both to be scheduled", func() bool {
		_, a := runsOf(every)
		_, b := runsOf(once)
		return a == stScheduled && b == stScheduled
	})
	for range 2 {
		if err := s.Reboot(id); err != nil {
			t.Fatal(err)
		}
		before, _ := runsOf(every)
		waitFor(t, "a reboot run", func() bool { n, st := runsOf(every); return n > before && st == stScheduled })
	}
	if n, st := runsOf(every); n != 2 || st != stScheduled {
		t.Errorf("EveryReboot after two reboots: %d runs, %q", n, st)
	}
	if n, st := runsOf(once); n != 1 || st != stSuccess || s.status(once.InvokeID) != stSuccess {
		t.Errorf("NextRebootOnly after two reboots: %d runs, %q", n, st)
	}
}

func TestInstanceFailuresProduceDocumentedCodes(t *testing.T) {
	s, _ := newServer(t)
	ids := ecsIDs(s, "cn-hangzhou")
	region := "cn-hangzhou"
	run := func(id, script string, timeout int64) *invocation {
		inv, e := s.createInvocation(ProductECS, region, []string{id}, invocationSpec{Type: "RunShellScript", Content: script, Timeout: timeout})
		if e != nil {
			t.Fatal(e)
		}
		return inv
	}
	current := func(inv *invocation) (string, string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.advance(s.opts.Now())
		return inv.Runs[0].Status, inv.Runs[0].ErrorCode
	}
	running := func(inv *invocation) bool { st, _ := current(inv); return st == stRunning }

	released := run(ids[0], "hang", 600)
	waitFor(t, "running", func() bool { return running(released) })
	if err := s.SetInstance(ids[0], InstanceReleased, ""); err != nil {
		t.Fatal(err)
	}
	afterRelease := run(ids[0], "echo", 60)

	agentDown := run(ids[1], "hang", 600)
	waitFor(t, "running", func() bool { return running(agentDown) })
	if err := s.SetInstance(ids[1], "", AgentNotResponding); err != nil {
		t.Fatal(err)
	}
	undelivered := run(ids[1], "echo", 60) // waits for the agent, then gives up
	if err := s.SetInstance(ids[1], InstanceStopped, ""); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		inv          *invocation
		status, code string
	}{
		{released, stTerminated, "InstanceReleased"},
		{afterRelease, stInvalid, "InstanceNotExists"},
		{agentDown, stError, "ClientNotResponse"},
		{undelivered, stAborted, "InstanceNotRunning"},
	} {
		waitFor(t, tc.status, func() bool { st, _ := current(tc.inv); return terminal(st) })
		if st, code := current(tc.inv); st != tc.status || code != tc.code {
			t.Errorf("%s: %s/%s, want %s/%s", tc.inv.InvokeID, st, code, tc.status, tc.code)
		}
	}
	if err := s.SetInstance(ids[1], InstanceRunning, AgentNotResponding); err != nil {
		t.Fatal(err)
	}
	timedOut := run(ids[1], "echo", 60)
	waitFor(t, "delivery timeout", func() bool { st, _ := current(timedOut); return terminal(st) })
	if st, code := current(timedOut); st != stAborted || code != "DeliveryTimeout" {
		t.Errorf("unresponsive agent: %s/%s, want Aborted/DeliveryTimeout", st, code)
	}
}

func TestRetention(t *testing.T) {
	s, _ := newServer(t)
	id := ecsIDs(s, "cn-hangzhou")[0]
	var invs []*invocation
	for range 5 {
		inv, e := s.createInvocation(ProductECS, "cn-hangzhou", []string{id}, invocationSpec{Type: "RunShellScript", Content: "exit 0", Timeout: 60})
		if e != nil {
			t.Fatal(e)
		}
		invs = append(invs, inv)
	}
	if err := s.SetRetention(0, 3); err != nil {
		t.Fatal(err)
	}
	if s.Expired() != 2 || s.status(invs[0].InvokeID) != "" || s.status(invs[1].InvokeID) != "" || s.status(invs[2].InvokeID) == "" {
		t.Errorf("count retention: expired %d", s.Expired())
	}
	if err := s.SetRetention(time.Nanosecond, 0); err != nil {
		t.Fatal(err)
	}
	if s.Expired() != 5 {
		t.Errorf("age retention: expired %d, want 5", s.Expired())
	}
}

func TestEveryDocumentedFailure(t *testing.T) {
	s, _ := newServer(t)
	ids := ecsIDs(s, "cn-hangzhou")
	type outcome struct{ status, code string }
	results := map[string]outcome{}
	check := func(name string, inv *invocation) {
		waitFor(t, name, func() bool { return terminal(s.status(inv.InvokeID)) })
		s.mu.Lock()
		results[name] = outcome{inv.Runs[0].Status, inv.Runs[0].ErrorCode}
		s.mu.Unlock()
	}
	spec := func(mutate func(*invocationSpec)) invocationSpec {
		sp := invocationSpec{Type: "RunShellScript", Content: "echo ok", Timeout: 60}
		mutate(&sp)
		return sp
	}
	for name, sp := range map[string]invocationSpec{
		"bat on linux":  spec(func(s *invocationSpec) { s.Type = "RunBatScript" }),
		"no such user":  spec(func(s *invocationSpec) { s.Username = "nouser42" }),
		"no such dir":   spec(func(s *invocationSpec) { s.WorkingDir = "/nonexistent/x" }),
		"crash":         spec(func(s *invocationSpec) { s.Content = "echo a; crash" }),
		"non-zero exit": spec(func(s *invocationSpec) { s.Content = "exit 9" }),
	} {
		inv, e := s.createInvocation(ProductECS, "cn-hangzhou", ids[:1], sp)
		if e != nil {
			t.Fatal(e)
		}
		check(name, inv)
	}
	for agent, name := range map[string]string{AgentUpgrading: "upgrading", AgentOutdated: "outdated", AgentNotRunning: "agent down"} {
		if err := s.SetInstance(ids[1], "", agent); err != nil {
			t.Fatal(err)
		}
		inv, e := s.createInvocation(ProductECS, "cn-hangzhou", ids[1:2], spec(func(*invocationSpec) {}))
		if e != nil {
			t.Fatal(e)
		}
		check(name, inv)
	}
	for name, want := range map[string]outcome{
		"bat on linux":  {stInvalid, "CommandNotApplicable"},
		"no such user":  {stInvalid, "AccountNotExists"},
		"no such dir":   {stInvalid, "DirectoryNotExists"},
		"crash":         {stError, "ExecutionException"},
		"non-zero exit": {stFailed, "ExitCodeNonzero"},
		"upgrading":     {stAborted, "ClientIsUpgrading"},
		"outdated":      {stAborted, "ClientNeedUpgrade"},
		"agent down":    {stAborted, "ClientNotRunning"},
	} {
		if results[name] != want {
			t.Errorf("%s: %+v, want %+v", name, results[name], want)
		}
	}
}

func TestQuotaThrottlesPerWindow(t *testing.T) {
	s, base := newServer(t)
	if err := s.SetQuota(3, time.Hour); err != nil {
		t.Fatal(err)
	}
	codes := []string{}
	for range 5 {
		_, body := call(t, base, url.Values{"Action": {"DescribeInvocations"}}, secret, time.Now())
		code, _ := body["Code"].(string)
		codes = append(codes, code)
	}
	// Another action has its own quota.
	_, other := call(t, base, url.Values{"Action": {"DescribeInvocationResults"}}, secret, time.Now())
	if fmt.Sprint(codes) != "[   Throttling.User Throttling.User]" || other["Code"] != nil {
		t.Errorf("codes %q, other action %v", codes, other["Code"])
	}
	if s.Throttled()["DescribeInvocations"] != 2 || len(s.CallLog("DescribeInvocations")) != 3 {
		t.Errorf("throttled %v, logged %d", s.Throttled(), len(s.CallLog("DescribeInvocations")))
	}
}

func TestSeed(t *testing.T) {
	s, _ := newServer(t)
	if err := s.Seed(SeedOptions{Invocations: 1000, Active: 0.01, ActiveFor: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	list := s.lists[listKey(DefaultAccount, ProductECS, "cn-hangzhou")]
	running := 0
	for _, inv := range list {
		if inv.Status == stRunning {
			running++
		}
	}
	s.mu.Unlock()
	if len(list) != 1000 || running != 10 {
		t.Fatalf("seeded %d invocations, %d running; want 1000 and 10", len(list), running)
	}
	waitFor(t, "the active ones to finish", func() bool {
		n := 0
		for _, e := range s.Truth() {
			if e.Level == "instance" && e.To == stSuccess {
				n++
			}
		}
		return n == 10
	})
}
