package castest

import (
	"context"
	"math/rand/v2"
	"time"
)

// WorkloadOptions shapes a simulated operator who keeps running commands.
type WorkloadOptions struct {
	// Every is the pause between two invocations; default 2s.
	Every time.Duration
	// Scripts to pick from; default a mix that succeeds, fails, times out
	// and gets stopped.
	Scripts []string
	// Timeout of each command in seconds; default 3.
	Timeout int64
}

// RunWorkload invokes commands on random ECS instances of the default
// account until ctx ends, and now and then stops one that hangs. The demo
// uses it as its fleet's users. See AccountHandle.RunWorkload for another
// account.
func (s *Server) RunWorkload(ctx context.Context, opts WorkloadOptions) {
	s.runWorkload(ctx, DefaultAccount, opts)
}

// runWorkload is RunWorkload in account.
func (s *Server) runWorkload(ctx context.Context, account string, opts WorkloadOptions) {
	if opts.Every <= 0 {
		opts.Every = 2 * time.Second
	}
	if len(opts.Scripts) == 0 {
		opts.Scripts = []string{
			"echo deploying; sleep 1; echo done",
			"echo checking disk; sleep 0.5; exit 1",
			"echo hi; sleep 1.5; exit 3",
			"echo warming cache; hang",
			"uptime",
			"echo quick",
		}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 3
	}
	var ecs []string
	var regions []string
	for _, inst := range s.Instances() {
		if inst.Account == account && inst.Product == ProductECS && inst.Status == InstanceRunning {
			ecs = append(ecs, inst.ID)
			regions = append(regions, inst.Region)
		}
	}
	if len(ecs) == 0 {
		return
	}
	ticker := time.NewTicker(opts.Every)
	defer ticker.Stop()
	var hanging []*invocation
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if len(hanging) > 0 && rand.IntN(3) == 0 {
			_ = s.stopInvocation(account, ProductECS, hanging[0].Region, hanging[0].InvokeID, nil)
			hanging = hanging[1:]
			continue
		}
		first := rand.IntN(len(ecs))
		targets := []string{ecs[first]}
		// Up to two more instances, as many as the fleet has: a fleet of
		// one instance has no other to add.
		for _, i := range rand.Perm(len(ecs))[:min(rand.IntN(3), len(ecs))] {
			if regions[i] == regions[first] && i != first {
				targets = append(targets, ecs[i])
			}
		}
		script := opts.Scripts[rand.IntN(len(opts.Scripts))]
		inv, e := s.createInvocation(ProductECS, regions[first], targets, invocationSpec{
			Account: account, Type: "RunShellScript", Content: script, Timeout: opts.Timeout,
		})
		if e == nil && parseScript(script).hang {
			hanging = append(hanging, inv)
		}
	}
}

// RunCommand runs c once on ECS instances of the default account in
// region, as the RunCommand API would, and returns the invocation id. See
// AccountHandle.RunCommand for another account.
func (s *Server) RunCommand(region string, instanceIDs []string, c Command) (string, error) {
	return s.Account(DefaultAccount).RunCommand(region, instanceIDs, c)
}

// Invoke runs script once on ECS instances of the default account in
// region, as RunCommand would, for in-process drivers such as benchmarks.
// It returns the invocation id. See AccountHandle.Invoke for another
// account.
func (s *Server) Invoke(region string, instanceIDs []string, script string, timeoutSeconds int64) (string, error) {
	return s.Account(DefaultAccount).Invoke(region, instanceIDs, script, timeoutSeconds)
}
