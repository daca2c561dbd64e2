package castest

import (
	"net/http"
	"net/url"
	"strings"
)

// The DescribeInvocationResults response: paging fields live inside
// "Invocation", results under InvocationResults.InvocationResult.
type ecsResultsResponse struct {
	RequestId  string `json:"RequestId"`
	Invocation struct {
		PageSize          int64  `json:"PageSize"`
		PageNumber        int64  `json:"PageNumber"`
		TotalCount        int64  `json:"TotalCount"`
		NextToken         string `json:"NextToken"`
		InvocationResults struct {
			InvocationResult []ecsResult `json:"InvocationResult"`
		} `json:"InvocationResults"`
	} `json:"Invocation"`
}

type ecsResult struct {
	InvokeId           string `json:"InvokeId"`
	CommandId          string `json:"CommandId"`
	InstanceId         string `json:"InstanceId"`
	InvocationStatus   string `json:"InvocationStatus"`
	InvokeRecordStatus string `json:"InvokeRecordStatus"`
	Repeats            int    `json:"Repeats"`
	ExitCode           int64  `json:"ExitCode"`
	ErrorCode          string `json:"ErrorCode"`
	ErrorInfo          string `json:"ErrorInfo"`
	Output             string `json:"Output"`
	Dropped            int    `json:"Dropped"`
	StartTime          string `json:"StartTime"`
	FinishedTime       string `json:"FinishedTime"`
	StopTime           string `json:"StopTime"`
	Username           string `json:"Username"`
	ContainerId        string `json:"ContainerId"`
	ContainerName      string `json:"ContainerName"`
	TerminationMode    string `json:"TerminationMode"`
	Launcher           string `json:"Launcher"`
	// OssOutputDelivery and ossOutput's fields are sent only for an
	// invocation that delivers its output to OSS (the V1 SDK decodes none
	// of them).
	OssOutputDelivery string `json:"OssOutputDelivery,omitempty"`
	ossOutput
	Tags struct {
		Tag []ecsTag `json:"Tag"`
	} `json:"Tags"`
}

// resultItem is one row of a results listing: a run, current or past.
type resultItem struct {
	inv *invocation
	idx int // position within the invocation's rows
	row ecsResult
}

// rows lists an invocation's results: the current state of each instance,
// or with history every finished run plus the one under way, ordered by
// run then instance, so that rows of new runs are appended.
// Callers hold s.mu.
func (s *Server) rows(inv *invocation, history bool, encoding string) []ecsResult {
	now := s.opts.Now()
	render := func(r *run, res runResult) ecsResult {
		output, dropped := renderOutput(res.Output, encoding)
		return ecsResult{
			InvokeId: inv.InvokeID, CommandId: inv.CommandID, InstanceId: r.InstanceID,
			InvocationStatus: res.Status, InvokeRecordStatus: recordStatus(res.Status), Repeats: res.Repeats,
			ExitCode: res.ExitCode, ErrorCode: res.ErrorCode, ErrorInfo: errorInfo(res.ErrorCode),
			Output: output, Dropped: dropped, StartTime: fmtTime(res.Start),
			FinishedTime: fmtTime(res.Finish), StopTime: fmtTime(res.Stop), Username: inv.Username,
			TerminationMode: "Process", OssOutputDelivery: inv.OssOutputDelivery,
			ossOutput: delivery(inv, r.InstanceID, res, now, s.opts.OssDeliveryDelay),
		}
	}
	var out []ecsResult
	if !history {
		for _, r := range inv.Runs {
			out = append(out, render(r, r.result()))
		}
		return out
	}
	maxRepeats := 0
	for _, r := range inv.Runs {
		maxRepeats = max(maxRepeats, r.Repeats)
	}
	for rep := 0; rep <= maxRepeats; rep++ {
		for _, r := range inv.Runs {
			done := false
			for _, h := range r.History {
				if h.Repeats == rep {
					out = append(out, render(r, h))
					done = true
				}
			}
			// The run under way (or, before the first run, the waiting
			// state) is not in the history yet.
			if !done && r.Repeats == rep && (len(r.History) == 0 || r.History[len(r.History)-1].Repeats < rep) {
				out = append(out, render(r, r.result()))
			}
		}
	}
	for i := range out {
		out[i].Tags.Tag = []ecsTag{}
	}
	return out
}

// recordStatus is the InvokeRecordStatus of a run's status.
func recordStatus(status string) string {
	switch status {
	case stPending, stRunning, stScheduled:
		return stRunning
	}
	return legacyInstanceStatus(status)
}

func (s *Server) ecsDescribeInvocationResults(account string, params url.Values, region, requestID string) (any, *apiError) {
	p, e := parsePaging(params)
	if e != nil {
		return nil, e
	}
	encoding, e := outputEncoding(params)
	if e != nil {
		return nil, e
	}
	invokeID, instanceID, commandID := params.Get("InvokeId"), params.Get("InstanceId"), params.Get("CommandId")
	status := params.Get("InvokeRecordStatus")
	history := strings.EqualFold(params.Get("IncludeHistory"), "true")
	a := s.arrangement(invokeID != "")
	if e := a.checkFilter("InvokeRecordStatus", status); e != nil {
		return nil, e
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.opts.Now())
	if history {
		if invokeID == "" {
			return nil, missing("InvokeId")
		}
		if inv, ok := s.byID[invokeID]; ok && inv.Account == account && inv.RepeatMode != repeatPeriod && inv.RepeatMode != repeatEveryReboot {
			return nil, errorf(http.StatusBadRequest, "InvalidParameter.IncludeHistory",
				"IncludeHistory needs the InvokeId of a Period or EveryReboot task; %s is %s.", invokeID, inv.RepeatMode)
		}
	}
	var invs []*invocation
	list := s.lists[listKey(account, ProductECS, region)]
	for i := len(list) - 1; i >= 0; i-- {
		inv := list[i]
		if invokeID != "" && inv.InvokeID != invokeID || commandID != "" && inv.CommandID != commandID {
			continue
		}
		invs = append(invs, inv)
	}
	a.sort(invs)
	var items []resultItem
	for _, inv := range invs {
		for idx, row := range s.rows(inv, history, encoding) {
			if instanceID != "" && row.InstanceId != instanceID ||
				status != "" && !strings.EqualFold(status, row.InvocationStatus) && !strings.EqualFold(status, row.InvokeRecordStatus) {
				continue
			}
			items = append(items, resultItem{inv: inv, idx: idx, row: row})
		}
	}
	start, end, next, e := a.page('r', len(items), func(i int) orderKey { return a.key(items[i].inv, items[i].idx) }, func() uint64 {
		var d digest
		for _, it := range items {
			d.add(newRecordHash().str(it.row.InvokeId).str(it.row.InstanceId).num(it.row.Repeats).str(it.row.InvocationStatus))
		}
		return uint64(d)
	}, p)
	if e != nil {
		return nil, e
	}
	var resp ecsResultsResponse
	resp.RequestId = requestID
	resp.Invocation.PageSize, resp.Invocation.PageNumber, resp.Invocation.TotalCount = int64(p.size), int64(p.number), int64(len(items))
	resp.Invocation.InvocationResults.InvocationResult = []ecsResult{}
	for _, it := range items[start:end] {
		resp.Invocation.InvocationResults.InvocationResult = append(resp.Invocation.InvocationResults.InvocationResult, it.row)
	}
	resp.Invocation.NextToken = next
	return resp, nil
}
