package cloudassist

import (
	"cmp"
	"context"
	"slices"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/capoller/capoller/diff"
)

// ECSResults lists ECS Cloud Assistant results of one region through
// DescribeInvocationResults. That API reports instances only; the
// invocation's aggregate is derived from them with [diff.Aggregate]. Every
// run of periodic tasks is recovered with IncludeHistory, as for [ECS].
type ECSResults struct {
	reportsWaits
	api *ecsAPI
}

// NewECSResults builds an ecs-results lister.
func NewECSResults(opts Options) (*ECSResults, error) {
	api, err := newECSAPI(opts)
	if err != nil {
		return nil, err
	}
	return &ECSResults{api: api}, nil
}

// Strategy is how the lister reads the API: always a full listing.
func (c *ECSResults) Strategy() string { return string(StrategyFull) }

// Snapshot lists every result of the region, derives the aggregates, and
// adds the history of periodic tasks. A failed page fails the snapshot.
func (c *ECSResults) Snapshot(ctx context.Context) (diff.Snapshot, error) {
	return c.api.withRestarts(ctx, c.list)
}

func (c *ECSResults) list(ctx context.Context) (diff.Snapshot, error) {
	a := c.api
	snap := diff.Snapshot{Source: diff.SourceECS, Region: a.opts.Region, ObservedAt: a.opts.Now().UTC(), Complete: true}
	var acc accumulator
	t := newTally(a.opts)
	defer a.skips.report(a.opts, t)
	err := a.describeResults(ctx, nil, func(r resultRow) error {
		if rec, ok := resultRecord(r, t); ok {
			acc.add(rec)
		}
		return nil
	})
	if err != nil {
		return diff.Snapshot{}, err
	}
	// Results carry no RepeatMode: ask which tasks will run again.
	periodic := map[string]periodicTask{}
	err = a.describeInvocations(ctx, func(req *ecs.DescribeInvocationsRequest) { req.Timed = requests.NewBoolean(true) },
		func(inv ecs.Invocation) error {
			id := inv.InvokeId
			if blank(id) { // its history cannot be asked for: a look-up without InvokeId lists everything
				t.skip(SkipInvocationWithoutID, inv.CommandId)
				return nil
			}
			if hasHistory(inv.RepeatMode) {
				periodic[id] = periodicTask{commandID: inv.CommandId, commandName: inv.CommandName, active: true}
			}
			return nil
		})
	if err != nil {
		return diff.Snapshot{}, err
	}
	a.mu.Lock()
	for id := range a.active { // stopped since the last listing: read their history once more
		if _, ok := periodic[id]; !ok {
			periodic[id] = periodicTask{}
		}
	}
	a.mu.Unlock()

	// A task active now, or at the last listing (it just stopped), is
	// recurring: its aggregate follows the periodic rules.
	records := deriveAggregates(acc.records, func(id string) bool { _, ok := periodic[id]; return ok })
	if records, err = a.withHistory(ctx, records, periodic, t); err != nil {
		return diff.Snapshot{}, err
	}
	snap.Records = records
	return snap, nil
}

// deriveAggregates adds, before each invocation's instance records, an
// aggregate record whose status follows the documented rules: those of a
// periodic task while it is recurring (see diff.AggregateRecurring), the
// one-time rules otherwise.
func deriveAggregates(instances []diff.Record, recurring func(invokeID string) bool) []diff.Record {
	slices.SortStableFunc(instances, func(x, y diff.Record) int { return cmp.Compare(x.InvokeID, y.InvokeID) })
	out := make([]diff.Record, 0, len(instances)+len(instances)/2)
	for start := 0; start < len(instances); {
		end := start
		var statuses []diff.Status
		for end < len(instances) && instances[end].InvokeID == instances[start].InvokeID {
			statuses = append(statuses, instances[end].Status)
			end++
		}
		first := instances[start]
		agg := diff.Record{Key: diff.Key{InvokeID: first.InvokeID}, CommandID: first.CommandID, CommandName: first.CommandName,
			Status: diff.Aggregate(statuses)}
		if recurring(first.InvokeID) {
			agg.Status = diff.AggregateRecurring(statuses)
			agg.Repeats = diff.AggregateRun(agg.Status, maxRepeats(instances[start:end]))
		}
		out = append(out, agg)
		out = append(out, instances[start:end]...)
		start = end
	}
	return out
}
