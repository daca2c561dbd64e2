package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/capoller/capoller/cmd/internal/harness"
	"github.com/capoller/capoller/poller/cloudassist/castest"
	"github.com/capoller/capoller/poller/testenv"
)

// TestMetricsMatchTheEventsAndTheCalls scrapes /metrics while the daemon
// runs against the emulator and checks the counters against what happened
// elsewhere: the API calls the emulator counted, per action; the errors
// it was told to answer, per code; the events in the stream, per level and
// status; and the records of the last complete listing.
func TestMetricsMatchTheEventsAndTheCalls(t *testing.T) {
	sim, simURL := startEmulator(t)
	for _, f := range []castest.Fault{
		{Action: "DescribeInvocations", Kind: castest.FaultError, Code: "Throttling.User", Skip: 1, Count: 2},
		{Action: "DescribeInvocations", Kind: castest.FaultError, Code: "ServiceUnavailable", Status: 503, Skip: 3},
	} {
		if err := sim.InjectFault(f); err != nil {
			t.Fatal(err)
		}
	}
	stream := testenv.Name("CAPOLLER_METRICS")
	prefix := strings.ToLower(stream)
	natsURL := testenv.NATSURL(t)
	_, js := testenv.NATS(t, natsURL, stream)
	_, keys := testenv.Redis(t)
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli(ctx, []string{"run", "--endpoint", simURL, "--redis-url", testenv.RedisURL(t), "--key-prefix", keys,
			"--nats-url", natsURL, "--stream", stream, "--subject-prefix", prefix, "--interval", "200ms", "--strategy", "full",
			"--throttle-window", "1s", "--metrics-addr", addr}, io.Discard, &stderr)
	}()
	defer func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("logs:\n%s", stderr.String())
		}
	}()
	scrape := func() (harness.Metrics, error) { return harness.ScrapeMetrics(t.Context(), addr) }
	testenv.WaitFor(t, 30*time.Second, "a first successful cycle", func() error {
		m, err := scrape()
		if err != nil {
			return err
		}
		if n := m.Sum("capoller_cycles_total") - m.Sum("capoller_cycles_failed_total"); n < 1 {
			return fmt.Errorf("%v successful cycles", n)
		}
		return nil
	})
	var ecsIDs []string
	for _, inst := range sim.Instances() {
		if inst.Product == castest.ProductECS && inst.Region == "cn-hangzhou" {
			ecsIDs = append(ecsIDs, inst.ID)
		}
	}
	for i, script := range []string{"echo ok", "exit 3", "echo two"} {
		if _, err := sim.Invoke("cn-hangzhou", ecsIDs[i%len(ecsIDs):i%len(ecsIDs)+1], script, 60); err != nil {
			t.Fatal(err)
		}
	}

	// The daemon polls on; a scrape between two cycles sees every counter
	// agree with the emulator and the stream at once.
	testenv.WaitFor(t, 60*time.Second, "the metrics to agree with the emulator and the stream", func() error {
		truth := finalStatuses(sim.Truth())
		if len(truth) != 6 || slices.Contains(slices.Collect(maps.Values(truth)), "Running") {
			return fmt.Errorf("the emulator's work is not done: %v", truth)
		}
		before := sim.Calls()
		m, err := scrape()
		if err != nil {
			return err
		}
		if after := sim.Calls(); !maps.Equal(before, after) {
			return fmt.Errorf("a call was in flight") // the next scrape, between cycles
		}
		var errs []string
		for _, action := range []string{"DescribeInvocations", "DescribeInvocationResults"} {
			if got, want := m.Sum("capoller_api_calls_total", "action", action), float64(before[action]); got != want {
				errs = append(errs, fmt.Sprintf("%s: %v calls counted, the emulator had %v", action, got, want))
			}
		}
		for code, want := range map[string]float64{"Throttling.User": 2, "ServiceUnavailable": 1} {
			if got := m.Sum("capoller_api_errors_total", "action", "DescribeInvocations", "code", code); got != want {
				errs = append(errs, fmt.Sprintf("%v errors %s, want %v", got, code, want))
			}
		}
		if got := m.Sum("capoller_api_errors_total", "class", "throttled"); got != 2 {
			errs = append(errs, fmt.Sprintf("%v throttled errors, want 2", got))
		}
		bySubject, err := streamSubjects(t.Context(), js, stream, prefix)
		if err != nil {
			return err
		}
		var events float64
		for kind, n := range bySubject {
			events += n
			if got := m.Sum("capoller_transitions_total", "level", kind[0], "status", kind[1]); got != n {
				errs = append(errs, fmt.Sprintf("%s %s: %v transitions counted, the stream has %v", kind[0], kind[1], got, n))
			}
		}
		if got := m.Sum("capoller_transitions_total"); got != events {
			errs = append(errs, fmt.Sprintf("%v transitions counted, the stream has %v events", got, events))
		}
		if got := m.Sum("capoller_events_published_total"); got != events || events < 6 {
			errs = append(errs, fmt.Sprintf("%v events acknowledged, the stream has %v (want at least 6)", got, events))
		}
		if got := m.Sum("capoller_events_duplicate_total"); got != 0 {
			errs = append(errs, fmt.Sprintf("%v duplicates", got))
		}
		if got := m.Sum("capoller_records", "source", "ecs"); got != 6 {
			errs = append(errs, fmt.Sprintf("%v records tracked, the emulator has 6", got))
		}
		if got := m.Sum("capoller_checkpoint_commits_total"); got < 1 {
			errs = append(errs, fmt.Sprintf("%v commits", got))
		}
		// Three finished instance runs, each with a finish time, and perhaps
		// their Running with a start time.
		if got, instance := m.Sum("capoller_detection_lag_seconds"), bySubject[[2]string{"instance", "success"}]+bySubject[[2]string{"instance", "failed"}]; got < instance || got > bySubject.level("instance") {
			errs = append(errs, fmt.Sprintf("%v detection lags observed, for %v finished instance runs", got, instance))
		}
		if len(errs) > 0 {
			return fmt.Errorf("%s", strings.Join(errs, "; "))
		}
		return nil
	})
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz answered %d", resp.StatusCode)
	}
}

// finalStatuses is each record's last true status.
func finalStatuses(truth []castest.TruthEntry) map[string]string {
	out := map[string]string{}
	for _, e := range truth {
		out[e.Product+"/"+e.InvokeID+"/"+e.InstanceID] = e.To
	}
	return out
}

// subjectCounts counts a stream's events by level and status.
type subjectCounts map[[2]string]float64

func (c subjectCounts) level(level string) float64 {
	var n float64
	for k, v := range c {
		if k[0] == level {
			n += v
		}
	}
	return n
}

// streamSubjects counts the events under prefix by the level and status
// tokens of their subjects, <prefix>.<source>.<region>.<level>.<status>.….
func streamSubjects(ctx context.Context, js jetstream.JetStream, stream, prefix string) (subjectCounts, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(prefix+".>"))
	if err != nil {
		return nil, err
	}
	out := subjectCounts{}
	for subject, n := range info.State.Subjects {
		tokens := strings.Split(strings.TrimPrefix(subject, prefix+"."), ".")
		if len(tokens) < 4 {
			return nil, fmt.Errorf("subject %q", subject)
		}
		out[[2]string{tokens[2], tokens[3]}] += float64(n)
	}
	return out, nil
}
