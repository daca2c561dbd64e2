package cloudassist

import (
	"context"
	"errors"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/capoller/capoller/diff"
)

// errLookedUp stops a look-up after its first page: one invocation's page
// holds all its instances, and an API that hands out NextTokens without
// end costs no more.
var errLookedUp = errors.New("cloudassist: looked up")

// LookUp reads the invocations ids by id, one DescribeInvocations each
// (with their output, once the events that announce an outcome carry it),
// as a partial listing for a hint (see poller.LookUper): normalized as a
// listing's pages are, periodic tasks' runs read in order, never
// Complete. An id the API does not know yields no record; a row for
// another id (the API's filter ignored) is not this look-up's and is left
// out. It leaves the listing's own state (the incremental strategy's
// cursors) as it is.
func (c *ECS) LookUp(ctx context.Context, ids []string) (diff.Snapshot, error) {
	a := c.api
	var acc accumulator
	ch := a.newChunker(false, func(chunk diff.Snapshot) error {
		acc.add(chunk.Records...)
		return nil
	})
	defer ch.report()
	withOutput := a.opts.Output.For != OutputNone
	for _, id := range ids {
		lctx := ctx
		if withOutput {
			lctx = context.WithValue(ctx, rawBodyKey{}, func(body []byte) error {
				out, err := parseOutputs(body)
				ch.output = out
				return err
			})
		}
		err := a.describeInvocationPages(lctx, func(req *ecs.DescribeInvocationsRequest) {
			req.InvokeId = id
			if withOutput {
				req.IncludeOutput = requests.NewBoolean(true)
			}
		}, func(page []ecs.Invocation) error {
			mine := page[:0:0]
			for _, inv := range page {
				if inv.InvokeId == id {
					mine = append(mine, inv)
				}
			}
			if err := ch.page(mine); err != nil {
				return err
			}
			return errLookedUp
		})
		ch.output = nil
		if err != nil && !errors.Is(err, errLookedUp) {
			return diff.Snapshot{}, wrapAPI(err, "look up %s for a hint", id)
		}
	}
	if err := ch.finish(ctx); err != nil {
		return diff.Snapshot{}, err
	}
	return diff.Snapshot{Source: diff.SourceECS, Region: a.opts.Region, ObservedAt: a.opts.Now().UTC(), Records: acc.records}, nil
}

// LookUp reads the invocations ids by id, for a hint, as the ecs-results
// listing reads them: DescribeInvocationResults filtered by InvokeId, all
// its pages, with the aggregate derived from the instances. Results do not
// say whether a task recurs, so each id first costs one DescribeInvocations
// page: a periodic task's runs are recovered from its history, which the
// listing reads whole, and a look-up leaves them to it (yielding no
// record). So does an id the API does not know. The snapshot is never
// Complete, and the listing's own state is left as it is.
func (c *ECSResults) LookUp(ctx context.Context, ids []string) (diff.Snapshot, error) {
	a := c.api
	var acc accumulator
	t := newTally(a.opts)
	defer a.skips.report(a.opts, t)
	for _, id := range ids {
		oneTime := false
		err := a.describeInvocationPages(ctx, func(req *ecs.DescribeInvocationsRequest) { req.InvokeId = id },
			func(page []ecs.Invocation) error {
				for _, inv := range page {
					if inv.InvokeId == id {
						oneTime = !hasHistory(inv.RepeatMode)
					}
				}
				return errLookedUp
			})
		if err != nil && !errors.Is(err, errLookedUp) {
			return diff.Snapshot{}, wrapAPI(err, "look up %s for a hint", id)
		}
		if !oneTime {
			continue
		}
		var instances []diff.Record
		err = a.describeResults(ctx, func(req *ecs.DescribeInvocationResultsRequest) { req.InvokeId = id }, func(r resultRow) error {
			if rec, ok := resultRecord(r, t); ok && rec.InvokeID == id {
				instances = append(instances, rec)
			}
			return nil
		})
		if err != nil {
			return diff.Snapshot{}, wrapAPI(err, "look up the results of %s for a hint", id)
		}
		acc.add(deriveAggregates(instances, func(string) bool { return false })...)
	}
	return diff.Snapshot{Source: diff.SourceECS, Region: a.opts.Region, ObservedAt: a.opts.Now().UTC(), Records: acc.records}, nil
}
