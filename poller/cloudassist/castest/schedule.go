package castest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// schedule is when a periodic task (RepeatMode=Period) runs: a rate
// expression, "rate(30s)", "rate(5m)", "rate(1h)", "rate(1d)", or a cron
// expression of six fields (second minute hour day-of-month month
// day-of-week) with an optional time zone, "0 */20 * * * * Asia/Shanghai".
// Fields take *, ?, N, A-B, A,B and */N or A-B/N. casim allows rates below
// Alibaba's one-minute floor, so tests can be quick.
type schedule struct {
	every time.Duration
	cron  *cronSpec
}

type cronSpec struct {
	sec, min, hour, dom, month, dow []bool
	domAny, dowAny                  bool
	loc                             *time.Location
}

func parseFrequency(f string) (schedule, error) {
	f = strings.TrimSpace(f)
	if inner, ok := strings.CutPrefix(f, "rate("); ok && strings.HasSuffix(inner, ")") {
		inner = strings.TrimSuffix(inner, ")")
		if len(inner) < 2 {
			return schedule{}, fmt.Errorf("bad rate expression %q", f)
		}
		n, err := strconv.Atoi(inner[:len(inner)-1])
		unit := map[byte]time.Duration{'s': time.Second, 'm': time.Minute, 'h': time.Hour, 'd': 24 * time.Hour}[inner[len(inner)-1]]
		if err != nil || n <= 0 || unit == 0 {
			return schedule{}, fmt.Errorf("bad rate expression %q", f)
		}
		return schedule{every: time.Duration(n) * unit}, nil
	}
	fields := strings.Fields(f)
	if len(fields) != 6 && len(fields) != 7 {
		return schedule{}, fmt.Errorf("cron expression %q: want 6 fields and an optional time zone", f)
	}
	spec := &cronSpec{loc: time.UTC}
	if len(fields) == 7 {
		loc, err := time.LoadLocation(fields[6])
		if err != nil {
			return schedule{}, fmt.Errorf("cron expression %q: time zone: %w", f, err)
		}
		spec.loc = loc
	}
	var err error
	for i, p := range []struct {
		dst      *[]bool
		min, max int
	}{{&spec.sec, 0, 59}, {&spec.min, 0, 59}, {&spec.hour, 0, 23}, {&spec.dom, 1, 31}, {&spec.month, 1, 12}, {&spec.dow, 0, 6}} {
		if *p.dst, err = parseCronField(fields[i], p.min, p.max); err != nil {
			return schedule{}, fmt.Errorf("cron expression %q field %d: %w", f, i+1, err)
		}
	}
	spec.domAny = fields[3] == "*" || fields[3] == "?"
	spec.dowAny = fields[5] == "*" || fields[5] == "?"
	return schedule{cron: spec}, nil
}

func parseCronField(field string, lo, hi int) ([]bool, error) {
	set := make([]bool, hi+1)
	for _, part := range strings.Split(field, ",") {
		rng, stepText, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("bad step %q", part)
			}
			step = n
		}
		from, to := lo, hi
		switch {
		case rng == "*" || rng == "?":
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			x, err1 := strconv.Atoi(a)
			y, err2 := strconv.Atoi(b)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("bad range %q", part)
			}
			from, to = x, y
		default:
			n, err := strconv.Atoi(rng)
			if err != nil {
				return nil, fmt.Errorf("bad value %q", part)
			}
			from, to = n, n
			if hasStep {
				to = hi
			}
		}
		if from < lo || to > hi || from > to {
			return nil, fmt.Errorf("%q is outside %d-%d", part, lo, hi)
		}
		for v := from; v <= to; v += step {
			set[v] = true
		}
	}
	return set, nil
}

// next returns the first run time strictly after t.
func (s schedule) next(t time.Time) time.Time {
	if s.every > 0 {
		return t.Add(s.every)
	}
	c := s.cron
	t = t.In(c.loc).Truncate(time.Second).Add(time.Second)
	limit := t.AddDate(5, 0, 0)
	for t.Before(limit) {
		switch {
		case !c.month[t.Month()]:
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, c.loc)
		case !c.dayMatches(t):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, c.loc)
		case !c.hour[t.Hour()]:
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, c.loc)
		case !c.min[t.Minute()]:
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute()+1, 0, 0, c.loc)
		case !c.sec[t.Second()]:
			t = t.Add(time.Second)
		default:
			return t.UTC()
		}
	}
	return time.Time{} // never: the expression matches no date
}

func (c *cronSpec) dayMatches(t time.Time) bool {
	dom, dow := c.dom[t.Day()], c.dow[int(t.Weekday())]
	switch {
	case c.domAny && c.dowAny:
		return true
	case c.domAny:
		return dow
	case c.dowAny:
		return dom
	}
	return dom || dow
}
