package castest

import (
	"fmt"
	"time"
)

// RetentionPolicy names one of the retention limits Alibaba has documented
// for Cloud Assistant execution records.
type RetentionPolicy string

// The documented policies.
const (
	// RetentionCurrent: the last 30 days, at most 10,000 records (the
	// current DescribeInvocations and DescribeInvocationResults documents).
	RetentionCurrent RetentionPolicy = "current"
	// RetentionLegacy: the last four weeks, at most 100,000 records (the
	// older documents; seed 002 still says so).
	RetentionLegacy RetentionPolicy = "legacy"
)

// limits returns the policy's age and record count.
func (p RetentionPolicy) limits() (ageDays, records int, err error) {
	switch p {
	case "", RetentionCurrent:
		return 30, 10_000, nil
	case RetentionLegacy:
		return 28, 100_000, nil
	}
	return 0, 0, fmt.Errorf("castest: unknown retention policy %q (want %q or %q)", p, RetentionCurrent, RetentionLegacy)
}

// records counts an invocation's execution records: one per instance and
// run, as DescribeInvocationResults lists them with IncludeHistory — every
// finished run of a periodic task, plus the one under way or waiting.
func (inv *invocation) records() int {
	n := 0
	for _, r := range inv.Runs {
		n += len(r.History)
		if len(r.History) == 0 || r.History[len(r.History)-1].Repeats < r.Repeats {
			n++
		}
	}
	return n
}

// SetRetentionPolicy applies a documented policy's age and record count.
func (s *Server) SetRetentionPolicy(p RetentionPolicy) error {
	days, records, err := p.limits()
	if err != nil {
		return err
	}
	return s.SetRetention(time.Duration(days)*24*time.Hour, records)
}
