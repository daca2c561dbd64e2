package diff

// Aggregate derives an invocation's overall status from the statuses of its
// instances, as the API documents it (Simple Application Server's
// DescribeCommandInvocations spells the rules out; ECS follows them):
//
//   - Stopping when any instance is Stopping;
//   - Running when any instance is Running — and, for a periodic task,
//     while any instance is Scheduled for a next run;
//   - Pending when any instance is Pending;
//   - once every instance is final: Success when at least one succeeded and
//     the others were stopped; PartialFailed when some succeeded and some
//     failed; Failed when none succeeded and some failed (Failed, Invalid,
//     Aborted, Timeout and Error count as failed); Stopped when every
//     instance was stopped (Stopped, Cancelled and Terminated).
//
// Legacy or unknown instance statuses: Finished counts as Success; an
// unknown non-terminal status keeps the invocation Running. It returns ""
// for an invocation without instances.
func Aggregate(instances []Status) Status {
	var stopping, running, pending, ok, failed, stopped bool
	for _, s := range instances {
		switch s {
		case StatusStopping:
			stopping = true
		case StatusRunning, StatusScheduled:
			running = true
		case StatusPending:
			pending = true
		case StatusSuccess, StatusFinished:
			ok = true
		case StatusFailed, StatusInvalid, StatusAborted, StatusTimeout, StatusError:
			failed = true
		case StatusStopped, StatusCancelled, StatusTerminated:
			stopped = true
		default:
			running = true // an unknown status: not final, as far as we know
		}
	}
	switch {
	case stopping:
		return StatusStopping
	case running:
		return StatusRunning
	case pending:
		return StatusPending
	case ok && failed:
		return StatusPartialFailed
	case ok:
		return StatusSuccess
	case failed:
		return StatusFailed
	case stopped:
		return StatusStopped
	}
	return ""
}
