package diff

import (
	"strings"
	"unicode"
)

// Status is a Cloud Assistant status in canonical form: the documented
// PascalCase spelling for every value capoller knows, and the API's own text
// (whitespace trimmed) for anything newer.
type Status string

// The documented statuses. Aggregate InvocationStatus uses Pending, Scheduled,
// Running, Success, Failed, PartialFailed, Stopping and Stopped; the legacy
// InvokeStatus adds Finished; per-instance InvocationStatus adds Invalid,
// Aborted, Error, Timeout, Cancelled and Terminated.
const (
	StatusPending       Status = "Pending"
	StatusScheduled     Status = "Scheduled"
	StatusRunning       Status = "Running"
	StatusStopping      Status = "Stopping"
	StatusSuccess       Status = "Success"
	StatusFailed        Status = "Failed"
	StatusPartialFailed Status = "PartialFailed"
	StatusStopped       Status = "Stopped"
	StatusFinished      Status = "Finished"
	StatusInvalid       Status = "Invalid"
	StatusAborted       Status = "Aborted"
	StatusError         Status = "Error"
	StatusTimeout       Status = "Timeout"
	StatusCancelled     Status = "Cancelled"
	StatusTerminated    Status = "Terminated"
)

// NormalizeStatus folds case and whitespace and maps the result onto the
// documented vocabulary: "finished", " running " and "Partial Failed" become
// Finished, Running and PartialFailed. A value capoller does not know is kept
// as the API sent it, trimmed, so that a future status is reported rather
// than dropped. An empty or all-blank input gives "".
func NormalizeStatus(s string) Status {
	if known, ok := canonical(s); ok { // fast path: already canonical, no allocation
		return known
	}
	folded := strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return unicode.ToLower(r)
	}, s)
	if known, ok := canonical(folded); ok {
		return known
	}
	return Status(strings.TrimSpace(s))
}

// canonical recognises the exact canonical spelling or its folded,
// lower-case form.
func canonical(s string) (Status, bool) {
	switch s {
	case "Pending", "pending":
		return StatusPending, true
	case "Scheduled", "scheduled":
		return StatusScheduled, true
	case "Running", "running":
		return StatusRunning, true
	case "Stopping", "stopping":
		return StatusStopping, true
	case "Success", "success":
		return StatusSuccess, true
	case "Failed", "failed":
		return StatusFailed, true
	case "PartialFailed", "partialfailed":
		return StatusPartialFailed, true
	case "Stopped", "stopped":
		return StatusStopped, true
	case "Finished", "finished":
		return StatusFinished, true
	case "Invalid", "invalid":
		return StatusInvalid, true
	case "Aborted", "aborted":
		return StatusAborted, true
	case "Error", "error":
		return StatusError, true
	case "Timeout", "timeout":
		return StatusTimeout, true
	case "Cancelled", "cancelled", "canceled":
		return StatusCancelled, true
	case "Terminated", "terminated":
		return StatusTerminated, true
	}
	return "", false
}

// Known reports whether s is part of the documented vocabulary.
func (s Status) Known() bool {
	_, ok := canonical(string(s))
	return ok
}

// Terminal reports whether s is final for one run: nothing but a new run (a
// higher repeat count) follows it. Pending, Scheduled, Running, Stopping and
// every unknown status are not terminal.
func (s Status) Terminal() bool {
	switch s {
	case StatusSuccess, StatusFailed, StatusPartialFailed, StatusStopped, StatusFinished,
		StatusInvalid, StatusAborted, StatusError, StatusTimeout, StatusCancelled, StatusTerminated:
		return true
	}
	return false
}

// Rank orders the statuses of one run by progress: waiting (Pending,
// Scheduled) 0, Running and unknown statuses 1, Stopping 2, an outcome
// (Success, Failed, Timeout, Error, Invalid, Aborted, PartialFailed,
// Finished) 3, stopped (Stopped, Cancelled, Terminated) 4. Within one run a
// status of lower rank than one already seen is a stale read; a periodic
// task stopped after its last run goes from an outcome to Stopped.
func (s Status) Rank() int {
	switch s {
	case StatusPending, StatusScheduled:
		return 0
	case StatusStopping:
		return 2
	case StatusStopped, StatusCancelled, StatusTerminated:
		return 4
	}
	if s.Terminal() {
		return 3
	}
	return 1
}
