package castest

import (
	"container/heap"
	"slices"
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
)

// Per-instance and aggregate statuses the emulator produces.
const (
	stPending       = "Pending"
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
	}
	return ""
}

// Instance is one simulated server.
type Instance struct {
	ID      string `json:"instanceId"`
	Region  string `json:"regionId"`
	Product string `json:"product"`
	Status  string `json:"status"`
	Agent   string `json:"agent"`
}

// invocation is one RunCommand: its command and its runs, one per instance.
type invocation struct {
	Seq          uint64    `json:"seq"`
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
	CreationTime time.Time `json:"creationTime"`
	Status       string    `json:"status"`
	Runs         []*run    `json:"runs"`
}

// run is an invocation on one instance.
type run struct {
	inv        *invocation
	plan       plan
	heapIndex  int
	InstanceID string    `json:"instanceId"`
	Status     string    `json:"status"`
	Repeats    int       `json:"repeats"`
	ExitCode   int64     `json:"exitCode"`
	ErrorCode  string    `json:"errorCode"`
	Output     string    `json:"output"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
	Start      time.Time `json:"start"`
	Finish     time.Time `json:"finish"`
	Stop       time.Time `json:"stop"`
	// Due is when the run's next scheduled step happens; zero when none is.
	Due time.Time `json:"due"`
}

func terminal(status string) bool {
	switch status {
	case stPending, stRunning, stStopping, "Scheduled":
		return false
	}
	return true
}

// TruthEntry is one status change the emulator made: the ground truth a
// checker compares capoller's events with.
type TruthEntry struct {
	Time       time.Time `json:"time"`
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
		r.Finish = at
		if r.Start.IsZero() {
			r.Start = at
		}
		r.Due = time.Time{}
	}
	if r.ErrorCode == "" && status == stFailed && r.ExitCode != 0 {
		r.ErrorCode = "ExitCodeNonzero"
	}
	s.truth = append(s.truth, TruthEntry{Time: at, Product: r.inv.Product, Region: r.inv.Region, Level: "instance",
		InvokeID: r.inv.InvokeID, InstanceID: r.InstanceID, Repeats: r.Repeats, From: from, To: status})
	if agg := aggregate(r.inv.Runs); agg != r.inv.Status {
		s.truth = append(s.truth, TruthEntry{Time: at, Product: r.inv.Product, Region: r.inv.Region, Level: "invocation",
			InvokeID: r.inv.InvokeID, From: r.inv.Status, To: agg})
		r.inv.Status = agg
	}
}

// aggregate is the documented overall status of an invocation:
//   - any instance Stopping: Stopping; else any Running: Running; else any
//     Pending: Pending;
//   - once every instance is final: Success when some succeeded and the rest
//     were stopped; PartialFailed when some succeeded and some failed;
//     Failed when none succeeded and some failed (Invalid, Aborted, Failed,
//     Timeout and Error count as failed); Stopped when every instance was
//     stopped (Stopped, Cancelled and Terminated count as stopped).
func aggregate(runs []*run) string {
	var stopping, running, pending, ok, failed bool
	for _, r := range runs {
		switch r.Status {
		case stStopping:
			stopping = true
		case stRunning:
			running = true
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

// advance carries out every step due at or before now, each at its own
// instant, so the truth log has the exact times. Callers hold s.mu.
func (s *Server) advance(now time.Time) {
	for len(s.queue) > 0 && !s.queue[0].Due.After(now) {
		r := heap.Pop(&s.queue).(*run)
		at := r.Due
		r.Due = time.Time{}
		s.step(r, at)
	}
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
		case inst.Agent == AgentNotResponding:
			if deadline := r.Created.Add(s.opts.DeliveryTimeout); at.Before(deadline) {
				s.schedule(r, deadline)
			} else {
				s.fail(r, stAborted, "DeliveryTimeout", at)
			}
		default:
			r.Start, r.Repeats = at, r.Repeats+1
			s.setRun(r, stRunning, at)
			timeout := time.Duration(r.inv.Timeout) * time.Second
			if r.plan.hang || r.plan.duration >= timeout {
				s.schedule(r, at.Add(timeout))
			} else {
				s.schedule(r, at.Add(r.plan.duration))
			}
		}
	case stRunning:
		r.Output = r.plan.output
		timeout := time.Duration(r.inv.Timeout) * time.Second
		if r.plan.hang || r.plan.duration >= timeout {
			s.fail(r, stTimeout, "ExecutionTimeout", at)
			return
		}
		r.ExitCode = r.plan.exitCode
		if r.ExitCode == 0 {
			s.setRun(r, stSuccess, at)
		} else {
			s.setRun(r, stFailed, at)
		}
	case stStopping:
		r.Stop = at
		s.setRun(r, stStopped, at)
	}
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
	case stRunning:
		s.setRun(r, stStopping, at)
		s.schedule(r, at.Add(s.opts.StopDelay))
	}
}

func (s *Server) unschedule(r *run) {
	if r.heapIndex >= 0 {
		heap.Remove(&s.queue, r.heapIndex)
	}
	r.Due = time.Time{}
}

// instanceChanged applies an instance's new state to its running work.
// Callers hold s.mu.
func (s *Server) instanceChanged(inst *Instance, at time.Time) {
	for _, inv := range s.invocations {
		for _, r := range inv.Runs {
			if r.InstanceID != inst.ID || r.Status != stRunning {
				continue
			}
			switch {
			case inst.Status == InstanceReleased:
				s.unschedule(r)
				s.fail(r, stTerminated, "InstanceReleased", at)
			case inst.Status == InstanceStopped:
				s.unschedule(r)
				s.fail(r, stTerminated, "InstanceNotRunning", at)
			case inst.Agent == AgentNotRunning:
				s.unschedule(r)
				s.fail(r, stError, "ClientNotRunning", at)
			}
		}
	}
	// Pending work waiting for an unresponsive agent is re-examined now.
	for _, inv := range s.invocations {
		for _, r := range inv.Runs {
			if r.InstanceID == inst.ID && r.Status == stPending {
				s.schedule(r, at)
			}
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

// Truth returns every status change made so far, in order.
func (s *Server) Truth() []TruthEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.opts.Now())
	return slices.Clone(s.truth)
}
