package cloudassist

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"go.uber.org/zap"

	"github.com/capoller/capoller/diff"
)

// ErrMalformed marks a listing that cannot be trusted: a NextToken that
// comes back, or more pages than the API can hold. (A record without an id
// or a status is skipped, not an error: see [Options.OnSkipped].)
var ErrMalformed = errors.New("cloudassist: malformed response")

// ecsAPI is an ECS client shared by the two ECS views, plus the memory of
// which periodic tasks were active, so that their last runs are fetched
// once more after they stop.
type ecsAPI struct {
	opts   Options
	client *ecs.Client
	calls  caller

	mu      sync.Mutex
	active  map[string]bool // periodic invocations active at the last listing
	refused map[string]bool // InvokeStatus filter values the API refused

	pagedByNumber atomic.Bool // a listing fell back to page numbers (logged once)

	skips  skipLog
	vetter *vetter
}

// ecsClients serializes the building of ECS clients: the SDK's
// ecs.NewClientWithOptions fills its package's endpoint map on first use,
// unguarded, so two listers built at once (two shards, or two daemons in a
// test) would race on it.
var ecsClients sync.Mutex //nolint:gochecknoglobals // guards the SDK's own global

func newECSAPI(opts Options) (*ecsAPI, error) {
	o, setup, err := prepare(opts)
	if err != nil {
		return nil, err
	}
	ecsClients.Lock()
	client, err := ecs.NewClientWithOptions(o.Region, setup.config, setup.credential)
	ecsClients.Unlock()
	if err != nil {
		return nil, fmt.Errorf("cloudassist: build ECS client: %s", redact(err.Error()))
	}
	if setup.domain != "" {
		client.Domain = setup.domain
	}
	return &ecsAPI{opts: o, client: client, active: map[string]bool{}, vetter: newVetter(o.Output)}, nil
}

// ECS lists ECS Cloud Assistant invocations of one region through
// DescribeInvocations, paging with NextToken, and recovers every run of
// periodic tasks through DescribeInvocationResults with IncludeHistory.
// With [StrategyIncremental] it reads only what can still change.
type ECS struct {
	reportsWaits
	api *ecsAPI
	inc incremental // only Snapshot touches it; a poller calls it from one goroutine
	// outputSpent is how long this listing's output look-ups took so far
	// (see FillOutputs); a listing starts it afresh.
	outputSpent time.Duration
}

// NewECS builds an ECS lister.
func NewECS(opts Options) (*ECS, error) {
	api, err := newECSAPI(opts)
	if err != nil {
		return nil, err
	}
	return &ECS{api: api}, nil
}

// Source is the event source of the records this lister returns.
func (c *ECS) Source() diff.Source { return diff.SourceECS }

// Region is the region this lister watches.
func (c *ECS) Region() string { return c.api.opts.Region }

// Strategy is how the lister reads the API: incremental or full.
func (c *ECS) Strategy() string { return string(c.api.opts.Strategy) }

// Snapshot lists every invocation of the region, page after page, and
// returns them as one normalized snapshot: an aggregate record per
// invocation and a record per instance — per run, for periodic tasks. Any
// failed page fails the whole snapshot. A refused NextToken restarts the
// listing from the first page, at most a few times.
func (c *ECS) Snapshot(ctx context.Context) (diff.Snapshot, error) {
	defer func() { c.outputSpent = 0 }() // the output of this listing is looked up after it
	var acc accumulator
	var observedAt time.Time
	complete, err := c.Stream(ctx, func(chunk diff.Snapshot) error {
		if observedAt.IsZero() {
			observedAt = chunk.ObservedAt
		}
		acc.add(chunk.Records...)
		return nil
	})
	if err != nil {
		return diff.Snapshot{}, err
	}
	if observedAt.IsZero() {
		observedAt = c.api.opts.Now().UTC()
	}
	return diff.Snapshot{Source: diff.SourceECS, Region: c.api.opts.Region, ObservedAt: observedAt, Records: acc.records, Complete: complete}, nil
}

// Stream reads the region and hands its records over as it reads them,
// one chunk per API page, then a chunk with every run of the periodic
// tasks (their instance records are held back until their history is
// read, so that runs stay in order). Chunks of a full listing are marked
// Complete (see poller.Streamer). It reports whether the listing was
// complete, so that its absences may expire records. A failed page stops
// the stream with an error.
//
// An error of emit is returned as it is, without the listing's context:
// it is the caller's, not the API's.
func (c *ECS) Stream(ctx context.Context, emit func(diff.Snapshot) error) (bool, error) {
	c.outputSpent = 0
	var complete bool
	var err error
	if c.api.opts.Strategy == StrategyIncremental {
		complete, err = c.api.streamWithRestarts(ctx, func(ctx context.Context) (bool, error) { return c.streamIncremental(ctx, emit) })
	} else {
		complete, err = c.api.streamWithRestarts(ctx, func(ctx context.Context) (bool, error) { return true, c.streamFull(ctx, emit) })
	}
	if ce, ok := errors.AsType[callbackError](err); ok {
		return complete, ce.err
	}
	return complete, err
}

// callbackError is an error of the caller's emit, marked so that the
// layers of a listing pass it up as it is rather than blame the API for
// it (see [wrapAPI]); Stream unmarks it.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }
func (e callbackError) Unwrap() error { return e.err }

// wrapAPI adds context to an error of the API, and leaves a callback's
// error as it is.
func wrapAPI(err error, format string, args ...any) error {
	if _, ok := errors.AsType[callbackError](err); ok {
		return err
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

func (a *ecsAPI) streamWithRestarts(ctx context.Context, stream func(context.Context) (bool, error)) (bool, error) {
	for attempt := 0; ; attempt++ {
		if attempt == maxRestarts {
			// Tokens that expire whenever the data changes never last a
			// long listing of a busy region: page by number instead. Pages
			// may then skip or repeat records that move, which a cycle
			// tolerates (a record read twice is diffed once, and one
			// listing never expires anything).
			log := a.opts.Logger.Debug
			if a.pagedByNumber.CompareAndSwap(false, true) { // once: an API like this does it every cycle
				log = a.opts.Logger.Warn
			}
			log("NextToken refused again and again; listing by page number this time",
				zap.String("region", a.opts.Region), zap.Int("attempts", attempt))
			ctx = context.WithValue(ctx, pageNumbersKey{}, true)
		}
		complete, err := stream(ctx)
		if err == nil || ClassOf(err) != ClassInvalidToken || attempt == maxRestarts {
			return complete, err
		}
		a.opts.Logger.Debug("NextToken refused; restarting the listing", zap.String("region", a.opts.Region), zap.Int("attempt", attempt+1))
	}
}

// pageNumbersKey marks a context whose listings page by PageNumber.
type pageNumbersKey struct{}

// pageRequest is how to ask for the page after token: by NextToken, or by
// page number when ctx says so (the token is then the page number).
func pageRequest(ctx context.Context, token string) (byNumber bool, number int) {
	if on, _ := ctx.Value(pageNumbersKey{}).(bool); !on {
		return false, 0
	}
	n, err := strconv.Atoi(token)
	if err != nil || n < 1 {
		n = 1
	}
	return true, n
}

// nextPage is the "token" of the page after number, or "" after the last.
func nextPage(number, size, got int, total int64) string {
	if got < size || int64(number*size) >= total {
		return ""
	}
	return strconv.Itoa(number + 1)
}

// chunker turns pages of invocations into chunks, holding back the
// instance records of periodic tasks for their history.
type chunker struct {
	a        *ecsAPI
	full     bool // chunks of a full listing: marked Complete, see poller.Streamer
	emit     func(diff.Snapshot) error
	wasOpen  map[string]bool // periodic tasks active at the previous listing
	periodic map[string]periodicTask
	held     []diff.Record
	t        *tally
	onRecord func(rec diff.Record, created time.Time) // sees every aggregate record emitted
	// output is what the instances of the invocation being looked up
	// printed, while an incremental look-up that asked for it is read.
	output map[runKey]instanceOutput
}

func (a *ecsAPI) newChunker(full bool, emit func(diff.Snapshot) error) *chunker {
	a.mu.Lock()
	defer a.mu.Unlock()
	marked := func(chunk diff.Snapshot) error {
		if err := emit(chunk); err != nil {
			return callbackError{err}
		}
		return nil
	}
	return &chunker{a: a, full: full, emit: marked, wasOpen: maps.Clone(a.active), periodic: map[string]periodicTask{}, t: newTally(a.opts)}
}

// report logs what the chunker's listing skipped; call it once the
// listing ended, however it ended.
func (ch *chunker) report() { ch.a.skips.report(ch.a.opts, ch.t) }

// page normalizes and emits one page.
func (ch *chunker) page(invs []ecs.Invocation) error {
	a := ch.a
	chunk := diff.Snapshot{Source: diff.SourceECS, Region: a.opts.Region, ObservedAt: a.opts.Now().UTC(), Complete: ch.full}
	for _, inv := range invs {
		recs := normalizeECS(inv, ch.t)
		for i := range recs {
			ch.keepLookedUpOutput(&recs[i])
		}
		if len(recs) == 0 || recs[0].InstanceID != "" {
			// No aggregate (skipped): nothing to track or hold back; its
			// instances, if any, go out as they are.
			chunk.Records = append(chunk.Records, recs...)
			continue
		}
		id := recs[0].InvokeID
		if ch.onRecord != nil {
			created, _ := parseTime(inv.CreationTime)
			ch.onRecord(recs[0], created)
		}
		hold := false
		if hasHistory(inv.RepeatMode) {
			recs[0].Repeats = diff.AggregateRun(recs[0].Status, maxRepeats(recs[1:]))
			task := periodicTask{commandID: inv.CommandId, commandName: inv.CommandName, active: !recs[0].Status.Terminal() || inv.Timed}
			ch.periodic[id] = task
			hold = task.active || ch.wasOpen[id]
		}
		if hold {
			chunk.Records = append(chunk.Records, recs[0])
			ch.held = append(ch.held, recs[1:]...)
		} else {
			chunk.Records = append(chunk.Records, recs...)
		}
	}
	if len(chunk.Records) == 0 {
		return nil
	}
	return ch.emit(chunk)
}

// finish emits the runs of the periodic tasks.
func (ch *chunker) finish(ctx context.Context) error {
	records, err := ch.a.withHistory(ctx, ch.held, ch.periodic, ch.t)
	if err != nil {
		return err
	}
	if len(records) == 0 {
		return nil
	}
	return ch.emit(diff.Snapshot{Source: diff.SourceECS, Region: ch.a.opts.Region, ObservedAt: ch.a.opts.Now().UTC(), Records: records, Complete: ch.full})
}

// streamFull lists every invocation.
func (c *ECS) streamFull(ctx context.Context, emit func(diff.Snapshot) error) error {
	ch := c.api.newChunker(true, emit)
	defer ch.report()
	if err := c.api.describeInvocationPages(ctx, nil, ch.page); err != nil {
		return err
	}
	return ch.finish(ctx)
}

// withRestarts lists, and lists again from the first page when the API
// refused a NextToken, a few times at most.
func (a *ecsAPI) withRestarts(ctx context.Context, list func(context.Context) (diff.Snapshot, error)) (diff.Snapshot, error) {
	var snap diff.Snapshot
	_, err := a.streamWithRestarts(ctx, func(ctx context.Context) (bool, error) {
		var err error
		snap, err = list(ctx)
		return snap.Complete, err
	})
	return snap, err
}

// walk follows a NextToken listing: fetch reads the page of a token and
// returns it with the next token, each handles it, until the next token is
// empty. An error of fetch (the API's) is reported with its page; an error
// of each (the caller's) is returned as it is. A listing that would never
// end — a NextToken followed before, or more pages than the API can hold —
// fails with [ErrMalformed].
func walk[P any](ctx context.Context, o Options, action string, fetch func(token string) (page P, next, requestID string, err error), each func(P) error) error {
	limit := o.maxPages()
	followed := map[string]int{} // token → the page it fetched
	token := ""
	for page := 1; ; page++ {
		if page > limit {
			o.aborted(AbortPageLimit)
			return fmt.Errorf("%s: %w: listing exceeded %d pages", action, ErrMalformed, limit)
		}
		followed[token] = page
		items, next, requestID, err := fetch(token)
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			if requestID != "" {
				return fmt.Errorf("%s page %d (request %s): %w", action, page, requestID, err)
			}
			return fmt.Errorf("%s page %d: %w", action, page, err)
		}
		if err := each(items); err != nil {
			return err
		}
		if next == "" {
			return nil
		}
		if at, ok := followed[next]; ok {
			o.aborted(AbortTokenCycle)
			return fmt.Errorf("%s page %d (request %s): %w: NextToken %q seen before at page %d", action, page, requestID, ErrMalformed, clip(next), at)
		}
		token = next
	}
}

// describeInvocations lists invocations, calling each for every one.
func (a *ecsAPI) describeInvocations(ctx context.Context, filter func(*ecs.DescribeInvocationsRequest), each func(ecs.Invocation) error) error {
	return a.describeInvocationPages(ctx, filter, func(page []ecs.Invocation) error {
		for _, inv := range page {
			if err := each(inv); err != nil {
				return err
			}
		}
		return nil
	})
}

// describeInvocationPages lists invocations, calling each for every page.
func (a *ecsAPI) describeInvocationPages(ctx context.Context, filter func(*ecs.DescribeInvocationsRequest), each func([]ecs.Invocation) error) error {
	return walk(ctx, a.opts, "describe invocations", func(token string) ([]ecs.Invocation, string, string, error) {
		req := ecs.CreateDescribeInvocationsRequest() // fresh every call: SDK requests are sticky
		byNumber, number := pageRequest(ctx, token)
		if byNumber {
			req.PageNumber, req.PageSize = requests.NewInteger(number), requests.NewInteger(a.opts.PageSize)
		} else {
			req.MaxResults, req.NextToken = requests.NewInteger(a.opts.PageSize), token
		}
		if filter != nil {
			filter(req)
		}
		resp, err := invoke(ctx, a.opts, &a.calls, "DescribeInvocations", func() (*ecs.DescribeInvocationsResponse, error) {
			return a.client.DescribeInvocations(req)
		})
		if err != nil {
			return nil, "", "", err
		}
		if sink, ok := ctx.Value(rawBodyKey{}).(func([]byte) error); ok {
			if err := sink(resp.GetHttpContentBytes()); err != nil {
				return nil, "", "", err
			}
		}
		next := resp.NextToken
		if byNumber {
			next = nextPage(number, a.opts.PageSize, len(resp.Invocations.Invocation), resp.TotalCount)
		}
		return resp.Invocations.Invocation, next, resp.RequestId, nil
	}, each)
}

// resultRow is a row of DescribeInvocationResults, with the OSS fields
// the SDK's struct lacks.
type resultRow struct {
	ecs.InvocationResult
	OssOutputURI string
}

// wantsOutputOf reports whether a row of a page has a status whose
// output its event carries.
func (a *ecsAPI) wantsOutputOf(rows []ecs.InvocationResult) bool {
	for _, r := range rows {
		if a.opts.Output.Wants(resultStatus(r)) {
			return true
		}
	}
	return false
}

// resultStatus is a row's status, from its legacy field when the current
// one is absent.
func resultStatus(r ecs.InvocationResult) diff.Status {
	if st := diff.NormalizeStatus(r.InvocationStatus); st != "" {
		return st
	}
	return diff.NormalizeStatus(r.InvokeRecordStatus)
}

// ossFields reads what the SDK's response struct drops: each row's
// OssOutputUri, in the rows' order.
func ossFields(body []byte) []string {
	var resp struct {
		Invocation struct {
			InvocationResults struct {
				InvocationResult []struct {
					OssOutputUri string
				}
			}
		}
	}
	if json.Unmarshal(body, &resp) != nil {
		return nil // the SDK decoded it: only these fields are lost
	}
	out := make([]string, len(resp.Invocation.InvocationResults.InvocationResult))
	for i, r := range resp.Invocation.InvocationResults.InvocationResult {
		out[i] = r.OssOutputUri
	}
	return out
}

// describeResults lists invocation results, calling each for every row.
func (a *ecsAPI) describeResults(ctx context.Context, filter func(*ecs.DescribeInvocationResultsRequest), each func(resultRow) error) error {
	return walk(ctx, a.opts, "describe invocation results", func(token string) ([]resultRow, string, string, error) {
		req := ecs.CreateDescribeInvocationResultsRequest()
		byNumber, number := pageRequest(ctx, token)
		if byNumber {
			req.PageNumber, req.PageSize = requests.NewInteger(number), requests.NewInteger(a.opts.PageSize)
		} else {
			req.MaxResults, req.NextToken = requests.NewInteger(a.opts.PageSize), token
		}
		if filter != nil {
			filter(req)
		}
		resp, err := invoke(ctx, a.opts, &a.calls, "DescribeInvocationResults", func() (*ecs.DescribeInvocationResultsResponse, error) {
			return a.client.DescribeInvocationResults(req)
		})
		if err != nil {
			return nil, "", "", err
		}
		next := resp.Invocation.NextToken
		results := resp.Invocation.InvocationResults.InvocationResult
		if byNumber {
			next = nextPage(number, a.opts.PageSize, len(results), resp.Invocation.TotalCount)
		}
		rows := make([]resultRow, len(results))
		var uris []string
		if body := resp.GetHttpContentBytes(); a.wantsOutputOf(results) && bytes.Contains(body, []byte(`"OssOutputUri"`)) {
			uris = ossFields(body) // a second decode, only for a page that has them
		}
		for i, r := range results {
			rows[i].InvocationResult = r
			if len(uris) == len(results) {
				rows[i].OssOutputURI = uris[i]
			}
		}
		return rows, next, resp.RequestId, nil
	}, func(rows []resultRow) error {
		for _, r := range rows {
			if err := each(r); err != nil {
				return err
			}
		}
		return nil
	})
}

// hasHistory reports whether a repeat mode runs more than once, so that
// runs can happen unseen between two polls.
func hasHistory(repeatMode string) bool {
	return strings.EqualFold(repeatMode, "Period") || strings.EqualFold(repeatMode, "EveryReboot")
}

// accumulator collects records, keeping the last reading of a record seen
// twice (it moved while we paged).
type accumulator struct {
	records []diff.Record
	index   map[diff.Key]int
}

func (a *accumulator) add(recs ...diff.Record) {
	if a.index == nil {
		a.index = map[diff.Key]int{}
	}
	for _, r := range recs {
		if i, dup := a.index[r.Key]; dup {
			a.records[i] = r
			continue
		}
		a.index[r.Key] = len(a.records)
		a.records = append(a.records, r)
	}
}

// normalizeECS turns one SDK invocation into records: the aggregate first,
// then one per instance. A record without an id or a status is skipped and
// counted in t: an invocation without InvokeId with its instances, one
// without a status for its aggregate only (its instances are kept, so the
// aggregate, if any, is the record without an InstanceID).
func normalizeECS(inv ecs.Invocation, t *tally) []diff.Record {
	id := inv.InvokeId // verbatim: an id is whatever the API sent
	if blank(id) {
		t.skip(SkipInvocationWithoutID, inv.CommandId)
		return nil
	}
	status := diff.NormalizeStatus(inv.InvocationStatus)
	if status == "" {
		status = diff.NormalizeStatus(inv.InvokeStatus) // legacy field, when the current one is absent
	}
	recs := make([]diff.Record, 0, 1+len(inv.InvokeInstances.InvokeInstance))
	if status == "" {
		t.skip(SkipInvocationWithoutStatus, id)
	} else {
		recs = append(recs, diff.Record{Key: diff.Key{InvokeID: id}, CommandID: inv.CommandId, CommandName: inv.CommandName, Status: status})
	}
	for _, ii := range inv.InvokeInstances.InvokeInstance {
		st := diff.NormalizeStatus(ii.InvocationStatus)
		if st == "" {
			st = diff.NormalizeStatus(ii.InstanceInvokeStatus)
		}
		rec, ok := instanceRecord(id, ii.InstanceId, st, runFields{
			repeats: ii.Repeats, exitCode: ii.ExitCode, errorCode: ii.ErrorCode, errorInfo: ii.ErrorInfo,
			start: ii.StartTime, finish: ii.FinishTime,
		}, t)
		if !ok {
			continue
		}
		rec.CommandID, rec.CommandName = inv.CommandId, inv.CommandName
		recs = append(recs, rec)
	}
	return recs
}

// maxRepeats is the highest run count of records, 0 for none.
func maxRepeats(recs []diff.Record) int {
	n := 0
	for _, r := range recs {
		n = max(n, r.Repeats)
	}
	return n
}

// blank reports whether an id is missing: empty or only white space. An
// id that is not blank is kept exactly as the API sent it, white space
// and all, so that events name the record the API knows.
func blank(id string) bool { return strings.TrimSpace(id) == "" }

// runFields are the per-run fields every API reports, under its own names.
type runFields struct {
	repeats       int
	exitCode      int64
	errorCode     string
	errorInfo     string
	start, finish string
}

// instanceRecord builds one instance-level record, or counts it in t as
// skipped when it has no InstanceId or no status.
func instanceRecord(invokeID, instanceID string, status diff.Status, f runFields, t *tally) (diff.Record, bool) {
	if blank(instanceID) {
		t.skip(SkipInstanceWithoutID, invokeID)
		return diff.Record{}, false
	}
	if status == "" {
		t.skip(SkipInstanceWithoutStatus, invokeID+"/"+instanceID)
		return diff.Record{}, false
	}
	start, ok1 := parseTime(f.start)
	finish, ok2 := parseTime(f.finish)
	for _, ok := range []bool{ok1, ok2} {
		if !ok && t != nil {
			t.badTimes++
		}
	}
	return diff.Record{
		Key:    diff.Key{InvokeID: invokeID, InstanceID: instanceID},
		Status: status, Repeats: f.repeats, ExitCode: f.exitCode, ErrorCode: f.errorCode, ErrorInfo: f.errorInfo,
		StartTime: start, FinishTime: finish,
	}, true
}

// parseTime reads the API's timestamps leniently: ECS sends
// 2006-01-02T15:04:05Z, SWAS sometimes omits the Z (UTC is assumed). An
// empty value is a valid zero time; an unparseable one reports false, and
// so does one whose offset takes it, in UTC, out of the years 0 to 9999
// (0000-01-01T00:00:00+01:00): RFC 3339, and so JSON, cannot carry it.
func parseTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, true
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04Z", "2006-01-02 15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			if t = t.UTC(); t.Year() < 0 || t.Year() > 9999 {
				return time.Time{}, false
			}
			return t, true
		}
	}
	return time.Time{}, false
}
