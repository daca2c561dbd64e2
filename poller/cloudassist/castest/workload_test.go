package castest

import (
	"context"
	"testing"
	"time"
)

// TestWorkloadOnAFleetOfOne: the workload runs on one instance per region
// (casim --instances 1 --workload), where it has no other instance to add
// to an invocation.
func TestWorkloadOnAFleetOfOne(t *testing.T) {
	s, err := New(Options{AccessKeyID: keyID, AccessKeySecret: secret, Instances: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.RunWorkload(ctx, WorkloadOptions{Every: time.Millisecond, Scripts: []string{"echo hi"}})
	}()
	// Thirty invocations: the chance that none asked for two more
	// instances, which a fleet of one does not have, is (2/3)^30.
	waitFor(t, "thirty invocations", func() bool {
		n := 0
		for _, e := range s.Truth() {
			if e.Level == "invocation" && e.From == "" {
				n++
			}
		}
		return n >= 30
	})
	cancel()
	<-done
}
