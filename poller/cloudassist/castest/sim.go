package castest

import (
	"container/heap"
	"slices"
	"strings"
	"time"
)

// Product names, as the control plane and the truth log spell them.
const (
	ProductECS  = "ecs"
	ProductSWAS = "swas"
)

// Instance lifecycle and agent states accepted by the control plane.
const (
	InstanceRunning  = "Running"
	InstanceStopped  = "Stopped"
	InstanceReleased = "Released"

	AgentRunning       = "Running"
	AgentNotRunning    = "NotRunning"
	AgentNotResponding = "NotResponding"
	AgentUpgrading     = "Upgrading"
	AgentOutdated      = "Outdated"
)

// Per-instance and aggregate statuses the emulator produces.
const (
	stPending       = "Pending"
	stScheduled     = "Scheduled"
	stRunning       = "Running"
	stStopping      = "Stopping"
	stStopped       = "Stopped"
	stSuccess       = "Success"
	stFailed        = "Failed"
	stPartialFailed = "PartialFailed"
	stInvalid       = "Invalid"
	stAborted       = "Aborted"
	stError         = "Error"
	stTimeout       = "Timeout"
	stCancelled     = "Cancelled"
	stTerminated    = "Terminated"
)

// Repeat modes.
const (
	repeatOnce           = "Once"
	repeatPeriod         = "Period"
	repeatNextRebootOnly = "NextRebootOnly"
	repeatEveryReboot    = "EveryReboot"
)

// errorInfo is the documented ErrorInfo text of an ErrorCode.
func errorInfo(code string) string {
	switch code {
	case "InstanceNotExists":
		return "the specified instance does not exists"
	case "InstanceReleased":
		return "the instance has released when create task"
	case "InstanceNotRunning":
		return "the instance is not running when create task"
	case "ClientNotRunning":
		return "the aliyun service is not running on the instance"
	case "ClientNotResponse":
		return "the aliyun service in the instance does not response"
	case "DeliveryTimeout":
		return "the command delivery has been timeout"
	case "ExecutionTimeout":
		return "the command execution has been timeout"
	case "ExitCodeNonzero":
		return "the command execution exit code is not zero"
	case "CommandNotApplicable":
		return "the command is not applicable"
	case "AccountNotExists":
		return "the specified account does not exists"
	case "DirectoryNotExists":
		return "the specified directory does not exists"
	case "ClientIsUpgrading":
		return "the aliyun service in the instance is upgrading now"
	case "ClientNeedUpgrade":
		return "the aliyun service in the instance need upgrade"
	case "ExecutionException":
		return "the command execution got an exception"
	}
	return ""
}

// Instance is one simulated server of one account.
type Instance struct {
	ID      string `json:"instanceId"`
	Account string `json:"account"`
	Region  string `json:"regionId"`
	Product string `json:"product"`
	Status  string `json:"status"`
	Agent   string `json:"agent"`
}

func (i *Instance) healthy() bool {
	return i.Status == InstanceRunning && i.Agent == AgentRunning
}

// invocation is one RunCommand: its command and its runs, one per instance.
type invocation struct {
	Seq          uint64    `json:"seq"`
	Account      string    `json:"account"`
	Product      string    `json:"product"`
	Region       string    `json:"regionId"`
	InvokeID     string    `json:"invokeId"`
	CommandID    string    `json:"commandId"`
	Name         string    `json:"name"`
	Type         string    `json:"type"`
	Content      string    `json:"content"`
	Timeout      int64     `json:"timeout"`
	Username     string    `json:"username"`
	WorkingDir   string    `json:"workingDir"`
	Description  string    `json:"description"`
	RepeatMode   string    `json:"repeatMode"`
	Frequency    string    `json:"frequency"`
	CreationTime time.Time `json:"creationTime"`
	Status       string    `json:"status"`
	Runs         []*run    `json:"runs"`

	// OssOutputDelivery is RunCommand's oss://BUCKET[/PREFIX], or "" when
	// the output is not delivered to OSS.
	OssOutputDelivery string `json:"ossOutputDelivery,omitempty"`

	sched schedule
}

func (inv *invocation) periodic() bool { return inv.RepeatMode != repeatOnce }

// runResult is one finished run of a periodic task, as history keeps it.
type runResult struct {
	Repeats   int       `json:"repeats"`
	Status    string    `json:"status"`
	ExitCode  int64     `json:"exitCode"`
	ErrorCode string    `json:"errorCode"`
	Output    string    `json:"output"`
	Start     time.Time `json:"start"`
	Finish    time.Time `json:"finish"`
	Stop      time.Time `json:"stop"`
}

// result is the run's current outcome, as history keeps it.
func (r *run) result() runResult {
	return runResult{Repeats: r.Repeats, Status: r.Status, ExitCode: r.ExitCode, ErrorCode: r.ErrorCode,
		Output: r.Output, Start: r.Start, Finish: r.Finish, Stop: r.Stop}
}

// run is an invocation on one instance: its current run, and for periodic
// tasks the finished runs before it.
type run struct {
	inv        *invocation
	plan       plan
	heapIndex  int
	InstanceID string      `json:"instanceId"`
	Status     string      `json:"status"`
	Repeats    int         `json:"repeats"`
	ExitCode   int64       `json:"exitCode"`
	ErrorCode  string      `json:"errorCode"`
	Output     string      `json:"output"`
	Created    time.Time   `json:"created"`
	Updated    time.Time   `json:"updated"`
	Start      time.Time   `json:"start"`
	Finish     time.Time   `json:"finish"`
	Stop       time.Time   `json:"stop"`
	History    []runResult `json:"history"`
	// Due is when the run's next scheduled step happens; zero when none is.
	Due time.Time `json:"due"`
}

func terminal(status string) bool {
	switch status {
	case stPending, stRunning, stStopping, stScheduled:
		return false
	}
	return true
}

// TruthEntry is one status change the emulator made: the ground truth a
// checker compares capoller's events with.
type TruthEntry struct {
	Time       time.Time `json:"time"`
	Account    string    `json:"account"`
	Product    string    `json:"product"`
	Region     string    `json:"regionId"`
	Level      string    `json:"level"`
	InvokeID   string    `json:"invokeId"`
	InstanceID string    `json:"instanceId"`
	Repeats    int       `json:"repeats"`
	From       string    `json:"from"`
	To         string    `json:"to"`
}

// setRun moves a run to a new status at instant at, records the truth and
// recomputes the invocation's aggregate. Callers hold s.mu.
func (s *Server) setRun(r *run, status string, at time.Time) {
	if r.Status == status {
		return
	}
	from := r.Status
	r.Status, r.Updated = status, at
	if terminal(status) {
		// Only startRun sets Start: a run that never started (Cancelled,
		// Invalid, Aborted, or a schedule stopped before its first run)
		// has no StartTime, as the documents define those statuses.
		r.Finish = at
	}
	if r.ErrorCode == "" && status == stFailed && r.ExitCode != 0 {
		r.ErrorCode = "ExitCodeNonzero"
	}
	s.truth = append(s.truth, TruthEntry{Time: at, Account: r.inv.Account, Product: r.inv.Product, Region: r.inv.Region, Level: "instance",
		InvokeID: r.inv.InvokeID, InstanceID: r.InstanceID, Repeats: r.Repeats, From: from, To: status})
	if r.inv.Product == ProductECS && terminal(status) {
		// Built only if it is to be pushed: most emulators push nothing.
		s.push.offer(status, func() TaskCompleted { return s.taskCompleted(r, at) })
	}
	if agg := aggregate(r.inv.Runs); agg != r.inv.Status {
		s.truth = append(s.truth, TruthEntry{Time: at, Account: r.inv.Account, Product: r.inv.Product, Region: r.inv.Region, Level: "invocation",
			InvokeID: r.inv.InvokeID, From: r.inv.Status, To: agg})
		r.inv.Status = agg
	}
}

// aggregate is the documented overall status of an invocation. A Period
// or EveryReboot task follows recurringAggregate; any other:
//   - any instance Stopping: Stopping; else any Running: Running; else any
//     Pending: Pending; else any Scheduled (a NextRebootOnly task waiting
//     for its reboot): Scheduled;
//   - once every instance is final: Success when some succeeded and the rest
//     were stopped; PartialFailed when some succeeded and some failed;
//     Failed when none succeeded and some failed (Invalid, Aborted, Failed,
//     Timeout and Error count as failed); Stopped when every instance was
//     stopped (Stopped, Cancelled and Terminated count as stopped).
func aggregate(runs []*run) string {
	if len(runs) > 0 && runs[0].inv.recurring() {
		return recurringAggregate(runs)
	}
	var stopping, running, pending, scheduled, ok, failed bool
	for _, r := range runs {
		switch r.Status {
		case stStopping:
			stopping = true
		case stRunning:
			running = true
		case stScheduled:
			scheduled = true
		case stPending:
			pending = true
		case stSuccess:
			ok = true
		case stFailed, stInvalid, stAborted, stTimeout, stError:
			failed = true
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
	case ok && failed:
		return stPartialFailed
	case ok:
		return stSuccess
	case failed:
		return stFailed
	}
	return stStopped
}

// schedule (re)arms a run's next step. Callers hold s.mu.
func (s *Server) schedule(r *run, due time.Time) {
	r.Due = due
	if r.heapIndex >= 0 {
		heap.Fix(&s.queue, r.heapIndex)
	} else {
		heap.Push(&s.queue, r)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Server) unschedule(r *run) {
	if r.heapIndex >= 0 {
		heap.Remove(&s.queue, r.heapIndex)
	}
	r.Due = time.Time{}
}

// advance carries out every step due at or before now, each at its own
// instant, so the truth log has the exact times, then applies retention.
// Callers hold s.mu.
func (s *Server) advance(now time.Time) {
	for len(s.queue) > 0 && !s.queue[0].Due.After(now) {
		r := heap.Pop(&s.queue).(*run)
		at := r.Due
		r.Due = time.Time{}
		s.step(r, at)
	}
	s.expire(now)
}

// step moves a run forward at instant at.
func (s *Server) step(r *run, at time.Time) {
	inst := s.instances[r.InstanceID]
	switch r.Status {
	case stPending:
		switch {
		case inst.Status == InstanceReleased:
			s.fail(r, stInvalid, "InstanceNotExists", at)
		case inst.Status == InstanceStopped:
			s.fail(r, stAborted, "InstanceNotRunning", at)
		case inst.Agent == AgentNotRunning:
			s.fail(r, stAborted, "ClientNotRunning", at)
		case inst.Agent == AgentUpgrading:
			s.fail(r, stAborted, "ClientIsUpgrading", at)
		case inst.Agent == AgentOutdated:
			s.fail(r, stAborted, "ClientNeedUpgrade", at)
		case r.inv.Product == ProductECS && r.inv.Type != "RunShellScript":
			s.fail(r, stInvalid, "CommandNotApplicable", at) // the fleet runs Linux
		case strings.HasPrefix(r.inv.Username, "nouser"):
			s.fail(r, stInvalid, "AccountNotExists", at)
		case strings.HasPrefix(r.inv.WorkingDir, "/nonexistent"):
			s.fail(r, stInvalid, "DirectoryNotExists", at)
		case inst.Agent == AgentNotResponding:
			if deadline := r.Created.Add(s.opts.DeliveryTimeout); at.Before(deadline) {
				s.schedule(r, deadline)
			} else {
				s.fail(r, stAborted, "DeliveryTimeout", at)
			}
		case r.inv.periodic():
			s.setRun(r, stScheduled, at)
			s.scheduleTick(r, at)
		default:
			s.startRun(r, at)
		}
	case stScheduled: // a periodic tick or a reboot
		if inst.healthy() {
			s.startRun(r, at)
		} else {
			s.scheduleTick(r, at) // this run cannot be delivered; wait for the next
		}
	case stRunning:
		s.finishRun(r, at)
	case stStopping:
		r.Stop = at
		s.setRun(r, stStopped, at)
		s.endRun(r, at)
	}
}

// scheduleTick arms the next run of a Period task; reboot tasks wait for a
// reboot instead.
func (s *Server) scheduleTick(r *run, at time.Time) {
	if r.inv.RepeatMode != repeatPeriod {
		return
	}
	if next := r.inv.sched.next(at); !next.IsZero() {
		s.schedule(r, next)
	}
}

func (s *Server) startRun(r *run, at time.Time) {
	r.Repeats++
	r.Start, r.Finish, r.Stop, r.ExitCode, r.ErrorCode, r.Output = at, time.Time{}, time.Time{}, 0, "", ""
	s.setRun(r, stRunning, at)
	timeout := time.Duration(r.inv.Timeout) * time.Second
	if r.plan.hang || r.plan.duration >= timeout {
		s.schedule(r, at.Add(timeout))
	} else {
		s.schedule(r, at.Add(r.plan.duration))
	}
}

func (s *Server) finishRun(r *run, at time.Time) {
	r.Output = r.plan.output
	timeout := time.Duration(r.inv.Timeout) * time.Second
	switch {
	case r.plan.hang || r.plan.duration >= timeout:
		r.ErrorCode = "ExecutionTimeout"
		s.setRun(r, stTimeout, at)
	case r.plan.crash:
		r.ErrorCode = "ExecutionException"
		s.setRun(r, stError, at)
	case r.plan.exitCode == 0:
		s.setRun(r, stSuccess, at)
	default:
		r.ExitCode = r.plan.exitCode
		s.setRun(r, stFailed, at)
	}
	s.endRun(r, at)
}

// endRun records a periodic task's finished run in its history and, unless
// the task is over, waits for the next run.
func (s *Server) endRun(r *run, at time.Time) {
	if !r.inv.periodic() || r.Repeats == 0 {
		return
	}
	r.History = append(r.History, r.result())
	if r.inv.RepeatMode == repeatNextRebootOnly || r.Status == stStopped || r.Status == stTerminated {
		return
	}
	s.setRun(r, stScheduled, at)
	s.scheduleTick(r, at)
}

func (s *Server) fail(r *run, status, code string, at time.Time) {
	r.ErrorCode = code
	s.setRun(r, status, at)
}

// stopRun handles StopInvocation for one run. Callers hold s.mu.
func (s *Server) stopRun(r *run, at time.Time) {
	switch r.Status {
	case stPending:
		r.Stop = at
		s.unschedule(r)
		s.setRun(r, stCancelled, at)
	case stScheduled:
		r.Stop = at
		s.unschedule(r)
		s.setRun(r, stStopped, at)
	case stRunning:
		s.setRun(r, stStopping, at)
		s.schedule(r, at.Add(s.opts.StopDelay))
	}
}

// instanceChanged applies an instance's new state to the work on it; a
// reboot starts the runs of reboot tasks. Callers hold s.mu.
func (s *Server) instanceChanged(inst *Instance, rebooted bool, at time.Time) {
	s.eachRun(func(r *run) {
		if r.InstanceID != inst.ID {
			return
		}
		switch r.Status {
		case stRunning:
			if status, code := interruption(inst); status != "" {
				s.unschedule(r)
				s.fail(r, status, code, at)
				s.endRun(r, at)
			}
		case stPending:
			s.schedule(r, at) // re-examine delivery now
		case stScheduled:
			if rebooted && inst.healthy() && (r.inv.RepeatMode == repeatEveryReboot || r.inv.RepeatMode == repeatNextRebootOnly) {
				s.schedule(r, at.Add(s.opts.DispatchDelay))
			}
		}
	})
}

// interruption is what becomes of a run under way on an instance in this
// state: nothing ("") while it is healthy.
func interruption(inst *Instance) (status, code string) {
	switch {
	case inst.Status == InstanceReleased:
		return stTerminated, "InstanceReleased"
	case inst.Status == InstanceStopped:
		return stTerminated, "InstanceNotRunning"
	case inst.Agent == AgentNotRunning:
		return stError, "ClientNotRunning"
	case inst.Agent == AgentNotResponding:
		return stError, "ClientNotResponse"
	}
	return "", ""
}

// eachRun visits every run of every invocation. Callers hold s.mu.
func (s *Server) eachRun(fn func(*run)) {
	for _, list := range s.lists {
		for _, inv := range list {
			for _, r := range inv.Runs {
				fn(r)
			}
		}
	}
}

// listKey names the invocation list of an account's product in a region.
func listKey(account, product, region string) string { return account + "/" + product + "/" + region }

// expire applies retention, per account, product and region: an invocation created
// more than the retention age ago is dropped, and so are the oldest
// invocations while the region holds more execution records (one per
// instance and run; see invocation.records) than the retention count.
// Whole invocations go, oldest first, so a listing never shows part of one.
//
// An expired invocation is gone from every listing, and its work ends with
// it: its pending steps are dropped, so a periodic task on schedule runs no
// more, and a run under way never finishes. Nothing is written to the truth
// log — expiry is not a status change, and nobody could observe what an
// unlisted task would do — so the truth of an expired record ends at the
// last status the API could have shown. Expired counts them. Callers hold
// s.mu.
func (s *Server) expire(now time.Time) {
	for key, list := range s.lists {
		records := 0
		for _, inv := range list {
			records += inv.records()
		}
		drop := 0
		for drop < len(list) && (records > s.retentionCount || now.Sub(list[drop].CreationTime) > s.retentionAge) {
			inv := list[drop]
			for _, r := range inv.Runs {
				s.unschedule(r)
			}
			records -= inv.records()
			delete(s.byID, inv.InvokeID)
			s.expired++
			drop++
		}
		if drop > 0 {
			s.lists[key] = slices.Delete(list, 0, drop)
		}
	}
}

// runQueue is a min-heap of runs by due time.
type runQueue []*run

func (q runQueue) Len() int           { return len(q) }
func (q runQueue) Less(i, j int) bool { return q[i].Due.Before(q[j].Due) }
func (q runQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].heapIndex, q[j].heapIndex = i, j
}
func (q *runQueue) Push(x any) {
	r := x.(*run)
	r.heapIndex = len(*q)
	*q = append(*q, r)
}
func (q *runQueue) Pop() any {
	old := *q
	r := old[len(old)-1]
	old[len(old)-1] = nil
	r.heapIndex = -1
	*q = old[:len(old)-1]
	return r
}

// Truth returns every status change made so far in every account, in
// order (see AccountHandle.Truth for one).
func (s *Server) Truth() []TruthEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.opts.Now())
	return slices.Clone(s.truth)
}
