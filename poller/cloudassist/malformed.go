package cloudassist

import (
	"maps"
	"slices"
	"strings"
	"sync"

	"go.uber.org/zap"
)

// The reasons a record is skipped, as [Options.OnSkipped] reports them.
// Only an empty id or status (after trimming spaces) makes a record
// malformed: any other text is a valid id, however odd.
const (
	// SkipInvocationWithoutID: an invocation (or a result row) without
	// InvokeId. It is skipped with its instances.
	SkipInvocationWithoutID = "invocation_without_id"
	// SkipInvocationWithoutStatus: an invocation without a status. Only its
	// aggregate record is skipped; its instances are kept.
	SkipInvocationWithoutStatus = "invocation_without_status"
	// SkipInstanceWithoutID: an instance (or a result row) without
	// InstanceId.
	SkipInstanceWithoutID = "instance_without_id"
	// SkipInstanceWithoutStatus: an instance (or a result row) without a
	// status.
	SkipInstanceWithoutStatus = "instance_without_status"
)

// tally is what one listing could not use: timestamps it left empty and
// records it skipped.
type tally struct {
	output   OutputOptions // which records keep the output read with them
	badTimes int
	skipped  map[string]skipCount
	onSkip   func(reason string)
}

type skipCount struct {
	n       int
	example string // an id that identifies one skipped record, or its neighbour
}

func newTally(o Options) *tally { return &tally{onSkip: o.OnSkipped, output: o.Output} }

// skip counts one skipped record.
func (t *tally) skip(reason, example string) {
	if t == nil {
		return
	}
	if t.skipped == nil {
		t.skipped = map[string]skipCount{}
	}
	c := t.skipped[reason]
	if c.n++; c.example == "" {
		c.example = clip(example)
	}
	t.skipped[reason] = c
	if t.onSkip != nil {
		t.onSkip(reason)
	}
}

// skipLog remembers, per reason, how many records the previous listing
// skipped, so that a listing logs its skipped records only when that count
// changed: a bad record the API keeps returning is logged once, not every
// cycle, and a new one is logged again.
type skipLog struct {
	mu   sync.Mutex
	last map[string]int
}

// report logs the listing's skipped records and unparseable timestamps.
func (l *skipLog) report(o Options, t *tally) {
	if t.badTimes > 0 {
		o.Logger.Warn("unparseable timestamps left empty", zap.String("region", o.Region), zap.Int("count", t.badTimes))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, reason := range slices.Sorted(maps.Keys(t.skipped)) {
		c := t.skipped[reason]
		if c.n == l.last[reason] {
			continue
		}
		o.Logger.Warn("malformed records skipped", zap.String("region", o.Region), zap.String("reason", reason),
			zap.Int("count", c.n), zap.String("example", c.example))
	}
	l.last = map[string]int{}
	for reason, c := range t.skipped {
		l.last[reason] = c.n
	}
}

// clip bounds a text quoted in a log line or an error.
func clip(s string) string {
	const maxLen = 200
	if len(s) <= maxLen {
		return s
	}
	return strings.ToValidUTF8(s[:maxLen], "") + "…"
}
