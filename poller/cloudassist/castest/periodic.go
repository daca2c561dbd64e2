package castest

// recurring reports a task that runs again and again: RepeatMode Period or
// EveryReboot, the documents' "periodical invocation" or "scheduled task".
// NextRebootOnly runs once, at the next reboot, and then follows the
// one-time rules.
func (inv *invocation) recurring() bool {
	return inv != nil && (inv.RepeatMode == repeatPeriod || inv.RepeatMode == repeatEveryReboot)
}

// recurringAggregate is the overall status of a Period or EveryReboot task.
// The seeds say such a task "can never be in the Finished / Failed /
// PartialFailed status" (DescribeInvocations InvokeStatus, and
// DescribeInvocationResults InvocationStatus: "Scheduled task: The
// execution state can never be Failed"), and that "before you stop the
// scheduled execution of the command, the execution state is always
// Running" — which the legacy InvokeStatus says (see legacyInvokeStatus)
// while InvocationStatus tells waiting from running, with the Scheduled
// value the API documents for the overall status:
//
//   - Stopping when any instance is Stopping;
//   - Running while any instance runs the command;
//   - Pending while any instance is still being dispatched;
//   - Scheduled while any instance waits for its next run. A run that just
//     ended (Success, Failed, Timeout, Error) counts as waiting: the
//     schedule goes on, and the instance is Scheduled again at once (see
//     endRun), so the outcome of one run never shows in the aggregate;
//   - Stopped once no instance will run it again: every instance was
//     stopped (Stopped, Cancelled), terminated with its instance, or never
//     received the task (Invalid, Aborted). The seeds rule out Finished,
//     Failed and PartialFailed and name no other final status for this;
//     Success ("the specified period ends") needs a schedule with an end,
//     which casim's schedules never have.
func recurringAggregate(runs []*run) string {
	var stopping, running, pending, scheduled bool
	for _, r := range runs {
		switch r.Status {
		case stStopping:
			stopping = true
		case stRunning:
			running = true
		case stPending:
			pending = true
		case stScheduled, stSuccess, stFailed, stTimeout, stError:
			scheduled = true
		}
	}
	switch {
	case stopping:
		return stStopping
	case running:
		return stRunning
	case pending:
		return stPending
	case scheduled:
		return stScheduled
	}
	return stStopped
}
