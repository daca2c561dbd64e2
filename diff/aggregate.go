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

// AggregateRecurring derives the overall status of a periodic task (a
// Period or EveryReboot invocation that will run again). The documents say
// such a task "can never be" Finished, Failed or PartialFailed: the
// outcome of one run never shows in the aggregate. So, by the instances:
//
//   - Stopping when any is Stopping;
//   - Running when any is Running (or in a status capoller does not
//     know);
//   - Pending when any is Pending;
//   - Scheduled when any waits for its next run: Scheduled, or just past
//     a run (Success, Failed, Timeout, Error, Finished);
//   - Stopped otherwise: none will run it again (Stopped, Cancelled,
//     Terminated, Invalid, Aborted).
//
// It returns "" for an invocation without instances.
func AggregateRecurring(instances []Status) Status {
	var stopping, running, pending, waiting bool
	for _, s := range instances {
		switch s {
		case StatusStopping:
			stopping = true
		case StatusPending:
			pending = true
		case StatusScheduled, StatusSuccess, StatusFailed, StatusTimeout, StatusError, StatusFinished:
			waiting = true
		case StatusStopped, StatusCancelled, StatusTerminated, StatusInvalid, StatusAborted:
		default:
			running = true // Running, or a status not known yet: not final
		}
	}
	switch {
	case len(instances) == 0:
		return ""
	case stopping:
		return StatusStopping
	case running:
		return StatusRunning
	case pending:
		return StatusPending
	case waiting:
		return StatusScheduled
	}
	return StatusStopped
}

// AggregateRun numbers the stages of a recurring task's aggregate, which
// has no run counter of its own: the run in progress (runs, the highest
// of its instances' Repeats) while it is Running, the next one otherwise —
// waiting for it (Scheduled, Pending) or stopping before it. Its swings
// between Running and Scheduled at each run are then transitions like any
// other, where the rank of one run's statuses (see [Status.Rank]) would
// take Scheduled after Running for a stale read.
func AggregateRun(status Status, runs int) int {
	if status == StatusRunning {
		return runs
	}
	return runs + 1
}
