package castest

import (
	"fmt"
	"time"
)

// SeedOptions describes a bulk fleet history for benchmarks.
type SeedOptions struct {
	Region string // default: the first region
	// Invocations to create, each on one ECS instance.
	Invocations int
	// Active is the fraction still running, 0..1; they finish at random
	// times within ActiveFor.
	Active    float64
	ActiveFor time.Duration
}

// Seed creates a large history at once in the default account, one
// invocation every 100ms up to now, without truth entries for the finished
// part (it happened "before"). The newest Active fraction are Running and
// finish, with truth entries, within ActiveFor. See AccountHandle.Seed for
// another account.
func (s *Server) Seed(opts SeedOptions) error { return s.seed(DefaultAccount, opts) }

// seed is Seed in account.
func (s *Server) seed(account string, opts SeedOptions) error {
	if opts.Region == "" {
		opts.Region = s.opts.Regions[0]
	}
	if opts.Invocations < 0 || opts.Active < 0 || opts.Active > 1 {
		return fmt.Errorf("castest: bad seed options %+v", opts)
	}
	if opts.ActiveFor <= 0 {
		opts.ActiveFor = time.Minute
	}
	var ids []string
	for _, inst := range s.Instances() {
		if inst.Account == account && inst.Product == ProductECS && inst.Region == opts.Region {
			ids = append(ids, inst.ID)
		}
	}
	if len(ids) == 0 {
		return fmt.Errorf("castest: no ECS instance in %s", opts.Region)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	active := int(float64(opts.Invocations) * opts.Active)
	key := listKey(account, ProductECS, opts.Region)
	for i := range opts.Invocations {
		s.seq++
		created := now.Add(-time.Duration(opts.Invocations-i) * 100 * time.Millisecond) // one every 100ms, as a busy fleet
		inv := &invocation{Seq: s.seq, Account: account, Product: ProductECS, Region: opts.Region,
			InvokeID: "t-" + regionCode(opts.Region) + randomHex(8), CommandID: "c-" + regionCode(opts.Region) + randomHex(8),
			Name: "seed", Type: "RunShellScript", Timeout: 3600, RepeatMode: repeatOnce, CreationTime: created, Status: stSuccess}
		r := &run{inv: inv, heapIndex: -1, InstanceID: ids[i%len(ids)], Status: stSuccess, Repeats: 1,
			Created: created, Updated: created, Start: created, Finish: created}
		if i >= opts.Invocations-active { // the newest are still running
			d := time.Duration(float64(opts.ActiveFor) * float64(i-(opts.Invocations-active)+1) / float64(active+1))
			inv.Content = fmt.Sprintf("sleep %.3f", (time.Since(created) + d).Seconds())
			inv.Status, r.Status, r.Finish = stRunning, stRunning, time.Time{}
			r.plan = parseScript(inv.Content)
			s.schedule(r, now.Add(d))
		} else {
			inv.Content = "echo seeded"
			r.Output = "seeded"
		}
		inv.Runs = []*run{r}
		s.lists[key] = append(s.lists[key], inv)
		s.byID[inv.InvokeID] = inv
	}
	return nil
}
