package cloudassist

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	swas "github.com/aliyun/alibaba-cloud-sdk-go/services/swas-open"
	"go.uber.org/zap"

	"github.com/capoller/capoller/diff"
)

// swasConsistencyAttempts bounds how often a SWAS listing is read again
// when its pages shifted under it.
const swasConsistencyAttempts = 3

// SWAS lists Simple Application Server command invocations of one region
// through DescribeCommandInvocations (version 2020-06-01). That API pages by
// number only, so records shift between pages when invocations arrive
// while it is read; see [SWAS.Snapshot].
type SWAS struct {
	reportsWaits
	opts   Options
	client *swas.Client
	calls  caller
	skips  skipLog
	// repeating: the last listing ended on a repeated page (logged when
	// that starts, not every cycle).
	repeating atomic.Bool
	vetter    *vetter
}

// NewSWAS builds a SWAS lister. Without an endpoint it talks to
// swas.<region>.aliyuncs.com: the SDK has no endpoint data for SWAS.
func NewSWAS(opts Options) (*SWAS, error) {
	o, setup, err := prepare(opts)
	if err != nil {
		return nil, err
	}
	client, err := swas.NewClientWithOptions(o.Region, setup.config, setup.credential)
	if err != nil {
		return nil, fmt.Errorf("cloudassist: build SWAS client: %s", redact(err.Error()))
	}
	client.Domain = setup.domain
	if client.Domain == "" {
		client.Domain = "swas." + o.Region + ".aliyuncs.com"
	}
	return &SWAS{opts: o, client: client, vetter: newVetter(o.Output)}, nil
}

// Strategy is how the lister reads the API: always a full listing.
func (c *SWAS) Strategy() string { return string(StrategyFull) }

// Snapshot lists every invocation, page by page. Because pages shift when
// invocations arrive mid-listing, a record can be read twice (the later
// reading wins) or an arrival can be missed (it is read next cycle). The
// listing is Complete — absences trusted — only when every page reported
// the same total and the union holds exactly that many invocations; it is
// read again up to a few times to get there. Otherwise the snapshot still
// reports everything it read, but expires nothing.
//
// A listing that would never end fails: more pages than MaxRecords allows
// (a TotalCount that grows as it is read) is [ErrMalformed]. A full page
// with nothing new on it while TotalCount promises more (a PageNumber past
// the data answered with old pages) ends the listing, incomplete, and it
// is not read again this cycle.
func (c *SWAS) Snapshot(ctx context.Context) (diff.Snapshot, error) {
	var snap diff.Snapshot
	for attempt := 1; attempt <= swasConsistencyAttempts; attempt++ {
		var err error
		var repeated bool
		snap, repeated, err = c.list(ctx)
		if err != nil || snap.Complete || repeated {
			return snap, err
		}
		c.opts.Logger.Debug("SWAS pages shifted while listing", zap.String("region", c.opts.Region), zap.Int("attempt", attempt))
	}
	return snap, nil
}

// list reads every page once; repeated reports a listing that ended on a
// page with nothing new.
func (c *SWAS) list(ctx context.Context) (snap diff.Snapshot, repeated bool, err error) {
	snap = diff.Snapshot{Source: diff.SourceSWAS, Region: c.opts.Region, ObservedAt: c.opts.Now().UTC()}
	var acc accumulator
	t := newTally(c.opts)
	defer c.skips.report(c.opts, t)
	invocations := map[string]bool{}
	anonymous := 0 // invocations without InvokeId: listed, so counted against the total, but skipped
	totals := map[int]bool{}
	limit := c.opts.maxPages()
	for page := 1; ; page++ {
		if page > limit {
			c.opts.aborted(AbortPageLimit)
			return diff.Snapshot{}, false, fmt.Errorf("describe command invocations: %w: listing exceeded %d pages", ErrMalformed, limit)
		}
		req := swas.CreateDescribeCommandInvocationsRequest()
		req.PageNumber, req.PageSize = strconv.Itoa(page), strconv.Itoa(c.opts.PageSize)
		resp, err := invoke(ctx, c.opts, &c.calls, "DescribeCommandInvocations", func() (*swas.DescribeCommandInvocationsResponse, error) {
			return c.client.DescribeCommandInvocations(req)
		})
		if err != nil {
			return diff.Snapshot{}, false, fmt.Errorf("describe command invocations page %d: %w", page, err)
		}
		totals[resp.TotalCount] = true
		fresh := 0 // invocations this page read first (one without an id may be new)
		for _, cmd := range resp.CommandInvocations {
			acc.add(normalizeSWAS(cmd, t)...)
			switch id := cmd.InvokeId; {
			case blank(id):
				anonymous++
				fresh++
			case !invocations[id]:
				invocations[id] = true
				fresh++
			}
		}
		if len(resp.CommandInvocations) < c.opts.PageSize || page*c.opts.PageSize >= resp.TotalCount {
			snap.Complete = len(totals) == 1 && totals[len(invocations)+anonymous]
			break
		}
		if fresh == 0 {
			c.opts.aborted(AbortRepeatedPage)
			log := c.opts.Logger.Debug
			if !c.repeating.Swap(true) {
				log = c.opts.Logger.Warn
			}
			log("SWAS page held nothing new while TotalCount promised more; the listing ends here, incomplete",
				zap.String("region", c.opts.Region), zap.Int("page", page), zap.Int("total_count", resp.TotalCount), zap.Int("read", len(invocations)+anonymous))
			snap.Records = acc.records
			return snap, true, nil
		}
	}
	c.repeating.Store(false)
	snap.Records = acc.records
	return snap, false, nil
}

// normalizeSWAS turns one SWAS command invocation into records, skipping
// (and counting in t) those without an id or a status as [normalizeECS]
// does. SWAS has no run counter: a run that started counts as run 1, as on
// ECS.
func normalizeSWAS(cmd swas.Command, t *tally) []diff.Record {
	id := cmd.InvokeId
	if blank(id) {
		t.skip(SkipInvocationWithoutID, cmd.CommandId)
		return nil
	}
	name := cmd.CommandName
	if name == "" {
		name = cmd.Name
	}
	recs := make([]diff.Record, 0, 1+len(cmd.InvokeInstances))
	if status := diff.NormalizeStatus(cmd.InvocationStatus); status == "" {
		t.skip(SkipInvocationWithoutStatus, id)
	} else {
		recs = append(recs, diff.Record{Key: diff.Key{InvokeID: id}, CommandID: cmd.CommandId, CommandName: name, Status: status})
	}
	for _, ii := range cmd.InvokeInstances {
		repeats := 0
		if strings.TrimSpace(ii.StartTime) != "" {
			repeats = 1
		}
		rec, ok := instanceRecord(id, ii.InstanceId, diff.NormalizeStatus(ii.InvocationStatus), runFields{
			repeats: repeats, exitCode: ii.ExitCode, errorCode: ii.ErrorCode, errorInfo: ii.ErrorInfo,
			start: ii.StartTime, finish: ii.FinishTime,
		}, t)
		if !ok {
			continue
		}
		rec.CommandID, rec.CommandName = cmd.CommandId, name
		if t != nil { // seed 003 documents Output as the text itself
			t.output.keepOutput(&rec, ii.Output, false, 0, "")
		}
		recs = append(recs, rec)
	}
	return recs
}
