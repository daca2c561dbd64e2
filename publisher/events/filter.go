package events

import (
	"slices"
	"strings"
	"time"

	"github.com/capoller/capoller/diff"
)

// Filter selects events. Each list allows any of its values, an empty list
// allows everything, and an event must pass every list: Filter{Sources:
// {"ecs"}, Statuses: {Failed, Timeout}} is a failed or timed-out ECS
// event. Statuses compare without regard to case and spelling ("failed",
// "Failed"). Commands match a command's id or its name.
type Filter struct {
	Accounts    []string
	Sources     []string
	Regions     []string
	Levels      []Level
	Statuses    []Status
	Invocations []string
	Instances   []string
	Commands    []string
	// From and Until bound when capoller observed the status: From ≤
	// observed < Until; a zero bound is open.
	From, Until time.Time
}

// Match reports whether e passes the filter.
func (f Filter) Match(e Event) bool {
	d := e.Data
	anyOf := func(allowed []string, v string) bool { return len(allowed) == 0 || slices.Contains(allowed, v) }
	if !anyOf(f.Accounts, d.Account) || !anyOf(f.Sources, d.Source) || !anyOf(f.Regions, d.RegionID) ||
		!anyOf(f.Invocations, d.InvokeID) || !anyOf(f.Instances, d.InstanceID) {
		return false
	}
	if len(f.Levels) > 0 && !slices.Contains(f.Levels, d.Level) {
		return false
	}
	if len(f.Statuses) > 0 && !slices.ContainsFunc(f.Statuses, func(s Status) bool { return sameStatus(s, d.Status) }) {
		return false
	}
	if len(f.Commands) > 0 && !slices.Contains(f.Commands, d.CommandID) && !slices.Contains(f.Commands, d.CommandName) {
		return false
	}
	at := d.Observed()
	return (f.From.IsZero() || !at.Before(f.From)) && (f.Until.IsZero() || at.Before(f.Until))
}

// Subject is the narrowest NATS subject filter under prefix that lets
// every matching event through, built with the publisher's own escaping:
//
//	<prefix>.<source>.<region>.<level>.<status>.<invokeId>[.<instanceId>]
//
// A token with exactly one allowed value is that value; any other is a
// wildcard. Accounts, commands and time are not in subjects: subscribe
// with Subject, then keep what [Filter.Match] accepts.
func (f Filter) Subject(prefix string) string {
	one := func(values []string) string {
		if len(values) == 1 {
			return Token(values[0])
		}
		return ""
	}
	var level, status string
	if len(f.Levels) == 1 {
		level = string(f.Levels[0])
	}
	if len(f.Instances) > 0 {
		level = string(LevelInstance) // only instance events have an instance
	}
	if len(f.Statuses) == 1 { // as the publisher writes it
		status = Token(strings.ToLower(string(diff.NormalizeStatus(string(f.Statuses[0])))))
	}
	tokens := []string{one(f.Sources), one(f.Regions), level, status, one(f.Invocations), one(f.Instances)}
	switch level {
	case string(LevelInvocation):
		tokens = tokens[:5] // an invocation's subject ends with its id
	case string(LevelInstance):
	default:
		// The level is open: an invocation's subject is one token shorter
		// than an instance's, so one subject covers both only with ">"
		// from the invocation id on (which Match then checks).
		last := -1
		for i, t := range tokens[:4] {
			if t != "" {
				last = i
			}
		}
		tokens = append(tokens[:last+1], ">")
	}
	for i, t := range tokens {
		if t == "" {
			tokens[i] = "*"
		}
	}
	return prefix + "." + strings.Join(tokens, ".")
}

// sameStatus compares statuses as subjects do: in their documented
// spelling, and an unknown one without regard to case.
func sameStatus(a, b Status) bool {
	return strings.EqualFold(string(diff.NormalizeStatus(string(a))), string(diff.NormalizeStatus(string(b))))
}
