package cloudassist

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"go.uber.org/zap"

	"github.com/capoller/capoller/diff"
)

// ErrMalformed marks a response that decoded but cannot be trusted: a record
// without an id or a status, or a paging token that does not advance.
var ErrMalformed = errors.New("cloudassist: malformed response")

// ECS lists ECS Cloud Assistant invocations of one region through
// DescribeInvocations, paging with NextToken.
type ECS struct {
	opts   Options
	client *ecs.Client
	calls  caller
}

// NewECS builds an ECS lister.
func NewECS(opts Options) (*ECS, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	setup, err := newSDKSetup(o)
	if err != nil {
		return nil, err
	}
	client, err := ecs.NewClientWithOptions(o.Region, setup.config, setup.credential)
	if err != nil {
		return nil, fmt.Errorf("cloudassist: build ECS client: %s", redact(err.Error()))
	}
	if setup.domain != "" {
		client.Domain = setup.domain
	}
	return &ECS{opts: o, client: client}, nil
}

// Source is the event source of the records this lister returns.
func (c *ECS) Source() diff.Source { return diff.SourceECS }

// Region is the region this lister watches.
func (c *ECS) Region() string { return c.opts.Region }

// Snapshot lists every invocation of the region, page after page, and
// returns them as one normalized snapshot: an aggregate record per
// invocation and a record per instance. Any failed page fails the whole
// snapshot. A refused NextToken restarts the listing from the first page,
// at most a few times.
func (c *ECS) Snapshot(ctx context.Context) (diff.Snapshot, error) {
	for attempt := 0; ; attempt++ {
		snap, err := c.list(ctx)
		if err == nil || ClassOf(err) != ClassInvalidToken || attempt == maxRestarts {
			return snap, err
		}
		c.opts.Logger.Warn("NextToken refused; restarting the listing", zap.String("region", c.opts.Region), zap.Int("attempt", attempt+1))
	}
}

func (c *ECS) list(ctx context.Context) (diff.Snapshot, error) {
	// A NextToken listing is a cursor: records created while it pages do not
	// shift it, so what it does not return is gone.
	snap := diff.Snapshot{Source: diff.SourceECS, Region: c.opts.Region, ObservedAt: c.opts.Now().UTC(), Complete: true}
	index := map[diff.Key]int{} // a record seen twice (it moved while we paged) keeps its latest state
	var badTimes int
	token := ""
	for page := 1; ; page++ {
		req := ecs.CreateDescribeInvocationsRequest() // fresh every call: SDK requests are sticky
		req.MaxResults = requests.NewInteger(c.opts.PageSize)
		req.NextToken = token
		resp, err := do(ctx, &c.calls, func() (*ecs.DescribeInvocationsResponse, error) { return c.client.DescribeInvocations(req) })
		if err != nil {
			if ctx.Err() != nil {
				return diff.Snapshot{}, fmt.Errorf("describe invocations page %d: %w", page, ctx.Err())
			}
			return diff.Snapshot{}, fmt.Errorf("describe invocations page %d: %w", page, translate("DescribeInvocations", err))
		}
		for _, inv := range resp.Invocations.Invocation {
			recs, bad, err := normalizeECS(inv)
			if err != nil {
				return diff.Snapshot{}, fmt.Errorf("describe invocations page %d (request %s): %w", page, resp.RequestId, err)
			}
			badTimes += bad
			for _, r := range recs {
				if i, dup := index[r.Key]; dup {
					snap.Records[i] = r
					continue
				}
				index[r.Key] = len(snap.Records)
				snap.Records = append(snap.Records, r)
			}
		}
		if resp.NextToken == "" {
			break
		}
		if resp.NextToken == token {
			return diff.Snapshot{}, fmt.Errorf("describe invocations page %d: %w: NextToken %q repeats", page, ErrMalformed, resp.NextToken)
		}
		token = resp.NextToken
	}
	if badTimes > 0 {
		c.opts.Logger.Warn("unparseable timestamps left empty", zap.String("region", c.opts.Region), zap.Int("count", badTimes))
	}
	return snap, nil
}

// normalizeECS turns one SDK invocation into records: the aggregate first,
// then one per instance. It reports how many timestamps it could not parse.
func normalizeECS(inv ecs.Invocation) ([]diff.Record, int, error) {
	id := strings.TrimSpace(inv.InvokeId)
	if id == "" {
		return nil, 0, fmt.Errorf("%w: invocation without InvokeId", ErrMalformed)
	}
	status := diff.NormalizeStatus(inv.InvocationStatus)
	if status == "" {
		status = diff.NormalizeStatus(inv.InvokeStatus) // legacy field, when the current one is absent
	}
	if status == "" {
		return nil, 0, fmt.Errorf("%w: invocation %s has no status", ErrMalformed, id)
	}
	recs := make([]diff.Record, 0, 1+len(inv.InvokeInstances.InvokeInstance))
	recs = append(recs, diff.Record{Key: diff.Key{InvokeID: id}, CommandID: inv.CommandId, CommandName: inv.CommandName, Status: status})
	bad := 0
	for _, ii := range inv.InvokeInstances.InvokeInstance {
		instance := strings.TrimSpace(ii.InstanceId)
		if instance == "" {
			return nil, 0, fmt.Errorf("%w: invocation %s lists an instance without InstanceId", ErrMalformed, id)
		}
		st := diff.NormalizeStatus(ii.InvocationStatus)
		if st == "" {
			st = diff.NormalizeStatus(ii.InstanceInvokeStatus)
		}
		if st == "" {
			return nil, 0, fmt.Errorf("%w: invocation %s on %s has no status", ErrMalformed, id, instance)
		}
		start, ok1 := parseTime(ii.StartTime)
		finish, ok2 := parseTime(ii.FinishTime)
		for _, ok := range []bool{ok1, ok2} {
			if !ok {
				bad++
			}
		}
		recs = append(recs, diff.Record{
			Key:       diff.Key{InvokeID: id, InstanceID: instance},
			CommandID: inv.CommandId, CommandName: inv.CommandName,
			Status: st, Repeats: ii.Repeats, ExitCode: ii.ExitCode,
			ErrorCode: ii.ErrorCode, ErrorInfo: ii.ErrorInfo,
			StartTime: start, FinishTime: finish,
		})
	}
	return recs, bad, nil
}

// parseTime reads the API's timestamps leniently: ECS sends
// 2006-01-02T15:04:05Z, SWAS sometimes omits the Z (UTC is assumed). An
// empty value is a valid zero time; an unparseable one reports false.
func parseTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, true
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04Z", "2006-01-02 15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}
