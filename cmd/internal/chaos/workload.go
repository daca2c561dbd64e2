package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// task is an invocation the workload stops later: a hanging command
// or a periodic task.
type task struct {
	product, region, id string
	at                  time.Time
	periodic            bool
}

// workload keeps the fleet busy until ctx ends: in every account and
// region, one-time commands on ECS (on one to three instances) and SWAS
// that succeed, fail or time out, commands that hang until stopped, and
// periodic tasks stopped after a while; rate is invocations per second
// over the fleet. When ctx ends, every task still going is stopped, so
// that each record reaches a final status.
func workload(ctx context.Context, sim *castest.Server, seed int64, rate float64) {
	type place struct {
		acct   *castest.AccountHandle
		region string
		ids    map[string][]string
	}
	var places []place
	for _, name := range sim.Accounts() {
		acct := sim.Account(name)
		fleet := acct.Fleet()
		regions := make([]string, 0, len(fleet))
		for r := range fleet {
			regions = append(regions, r)
		}
		sort.Strings(regions)
		for _, r := range regions {
			places = append(places, place{acct: acct, region: r, ids: fleet[r]})
		}
	}
	mean := time.Duration(float64(len(places)) / rate * float64(time.Second))
	var wg sync.WaitGroup
	for n, p := range places {
		rng := rand.New(rand.NewPCG(uint64(seed), uint64(n)+0x776f726b)) // "work"
		wg.Go(func() {
			var tasks []task
			periodic := 0
			defer func() {
				for _, t := range tasks {
					_ = p.acct.Stop(t.product, t.region, t.id)
				}
			}()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Duration(rng.ExpFloat64() * float64(mean))): // pacing arrivals
				}
				now := time.Now()
				kept := tasks[:0]
				for _, t := range tasks {
					if now.After(t.at) {
						_ = p.acct.Stop(t.product, t.region, t.id)
						if t.periodic {
							periodic--
						}
						continue
					}
					kept = append(kept, t)
				}
				tasks = kept
				ecs, swas := p.ids[castest.ProductECS], p.ids[castest.ProductSWAS]
				script := fmt.Sprintf("echo %d; sleep 0.%d; exit %d", i, rng.IntN(10), rng.IntN(4)/3)
				switch r := rng.IntN(100); {
				case r < 50:
					k := 1 + rng.IntN(min(3, len(ecs)))
					_, _ = p.acct.Invoke(p.region, ecs[:k], script, 10)
				case r < 75:
					_, _ = p.acct.InvokeSWAS(p.region, swas[rng.IntN(len(swas)):][:1], script, 10)
				case r < 85:
					if id, err := p.acct.Invoke(p.region, ecs[rng.IntN(len(ecs)):][:1], "echo warming; hang", 60); err == nil {
						tasks = append(tasks, task{product: castest.ProductECS, region: p.region, id: id, at: now.Add(time.Duration(500+rng.IntN(5000)) * time.Millisecond)})
					}
				case r < 92 && periodic < 2:
					id, err := p.acct.InvokePeriodic(p.region, ecs[:1+rng.IntN(2)], fmt.Sprintf("echo tick; exit %d", rng.IntN(2)), "rate(2s)", 10)
					if err == nil {
						periodic++
						tasks = append(tasks, task{product: castest.ProductECS, region: p.region, id: id, at: now.Add(time.Duration(4+rng.IntN(16)) * time.Second), periodic: true})
					}
				default:
					_, _ = p.acct.Invoke(p.region, ecs[:1], "echo slow; sleep 3", 1) // times out
				}
			}
		})
	}
	wg.Wait()
}
