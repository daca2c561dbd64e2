package cloudassist

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/capoller/capoller/diff"
)

// periodicTask is what a listing knows of a Period or EveryReboot task.
type periodicTask struct {
	commandID, commandName string
	active                 bool // will run again
}

// withHistory replaces the instance records of periodic tasks with every
// run their history holds, so that runs which started and finished between
// two polls are seen. History is read for tasks that are active, and once
// more for those that were active at the previous listing (their last runs
// may have finished since). Records of one instance come out in strictly
// increasing (run, rank) order, as the diff requires.
func (a *ecsAPI) withHistory(ctx context.Context, records []diff.Record, periodic map[string]periodicTask, t *tally) ([]diff.Record, error) {
	a.mu.Lock()
	wanted := map[string]bool{}
	for id, task := range periodic {
		if task.active || a.active[id] {
			wanted[id] = true
		}
	}
	a.mu.Unlock()
	if len(wanted) == 0 {
		a.remember(periodic)
		return records, nil
	}
	runs := map[diff.Key][]diff.Record{}
	for _, id := range slices.Sorted(maps.Keys(wanted)) {
		task := periodic[id]
		err := a.describeResults(ctx, func(req *ecs.DescribeInvocationResultsRequest) {
			req.InvokeId, req.IncludeHistory = id, requests.NewBoolean(true)
		}, func(r resultRow) error {
			rec, ok := resultRecord(r, t)
			if !ok {
				return nil
			}
			if rec.InvokeID != id {
				return fmt.Errorf("%w: history of %s returned a row of %s", ErrMalformed, id, rec.InvokeID)
			}
			rec.CommandID, rec.CommandName = cmp.Or(rec.CommandID, task.commandID), task.commandName
			runs[rec.Key] = append(runs[rec.Key], rec)
			return nil
		})
		if err != nil {
			return nil, wrapAPI(err, "history of %s", id)
		}
	}
	out := make([]diff.Record, 0, len(records))
	for _, r := range records {
		hist, ok := runs[r.Key]
		// An instance waiting for its next run (Scheduled, Repeats n) has
		// ended run n: a history without it is behind the listing. Taken
		// as it is, the wait would be announced, and run n's outcome after
		// it once the history has it: out of order. Fail the listing
		// instead; the next cycle reads the history whole.
		if r.InstanceID != "" && wanted[r.InvokeID] && r.Status == diff.StatusScheduled && r.Repeats > 0 &&
			!slices.ContainsFunc(hist, func(h diff.Record) bool { return h.Repeats >= r.Repeats }) {
			return nil, fmt.Errorf("%w: the history of %s holds no run %d of instance %s, which the listing shows ended",
				ErrMalformed, r.InvokeID, r.Repeats, r.InstanceID)
		}
		if r.InstanceID == "" || !wanted[r.InvokeID] || !ok {
			out = append(out, r)
			continue
		}
		// The current record counts if it is a run the history does not
		// hold yet, or the stop of the schedule after the last run.
		last := slices.MaxFunc(hist, func(x, y diff.Record) int { return cmp.Compare(x.Repeats, y.Repeats) })
		if r.Repeats > last.Repeats || r.Repeats == last.Repeats && r.Status.Rank() > last.Status.Rank() {
			runs[r.Key] = append(hist, r)
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(runs), func(x, y diff.Key) int {
		return cmp.Or(cmp.Compare(x.InvokeID, y.InvokeID), cmp.Compare(x.InstanceID, y.InstanceID))
	}) {
		hist := runs[k]
		slices.SortStableFunc(hist, func(x, y diff.Record) int {
			return cmp.Or(cmp.Compare(x.Repeats, y.Repeats), cmp.Compare(x.Status.Rank(), y.Status.Rank()))
		})
		// Strictly increasing (run, rank): of two rows alike, the later wins.
		for i, r := range hist {
			if i+1 < len(hist) && hist[i+1].Repeats == r.Repeats && hist[i+1].Status.Rank() == r.Status.Rank() {
				continue
			}
			out = append(out, r)
		}
	}
	a.remember(periodic)
	return out, nil
}

func (a *ecsAPI) remember(periodic map[string]periodicTask) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.active = map[string]bool{}
	for id, task := range periodic {
		if task.active {
			a.active[id] = true
		}
	}
}

// resultRecord normalizes one DescribeInvocationResults row, or counts it
// in t as skipped when it has no InvokeId, InstanceId or status. Its end
// time is FinishedTime (InvokeInstance says FinishTime).
func resultRecord(r resultRow, t *tally) (diff.Record, bool) {
	id := r.InvokeId
	if blank(id) {
		t.skip(SkipInvocationWithoutID, r.InstanceId)
		return diff.Record{}, false
	}
	rec, ok := instanceRecord(id, r.InstanceId, resultStatus(r.InvocationResult), runFields{
		repeats: r.Repeats, exitCode: r.ExitCode, errorCode: r.ErrorCode, errorInfo: r.ErrorInfo,
		start: r.StartTime, finish: r.FinishedTime,
	}, t)
	if !ok {
		return diff.Record{}, false
	}
	rec.CommandID = r.CommandId
	if t != nil { // the rows' Output is Base64: no ContentEncoding is asked for
		t.output.keepOutput(&rec, r.Output, true, int64(r.Dropped), r.OssOutputURI)
	}
	return rec, true
}
