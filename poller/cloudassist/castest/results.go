package castest

import (
	"encoding/base64"
	"encoding/binary"
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
	Tags               struct {
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
func (s *Server) rows(inv *invocation, history bool, encoding string) []ecsResult {
	render := func(r *run, res runResult) ecsResult {
		out := res.Output
		dropped := 0
		if len(out) > maxOutput {
			dropped, out = len(out)-maxOutput, out[:maxOutput]
		}
		return ecsResult{
			InvokeId: inv.InvokeID, CommandId: inv.CommandID, InstanceId: r.InstanceID,
			InvocationStatus: res.Status, InvokeRecordStatus: recordStatus(res.Status), Repeats: res.Repeats,
			ExitCode: res.ExitCode, ErrorCode: res.ErrorCode, ErrorInfo: errorInfo(res.ErrorCode),
			Output: encodeText(out, encoding), Dropped: dropped, StartTime: fmtTime(res.Start),
			FinishedTime: fmtTime(res.Finish), StopTime: fmtTime(res.Stop), Username: inv.Username,
			TerminationMode: "Process",
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

func (s *Server) ecsDescribeInvocationResults(params url.Values, region, requestID string) (any, *apiError) {
	p, e := parsePaging(params)
	if e != nil {
		return nil, e
	}
	var tokSeq uint64
	tokIdx := -1
	if p.tokenSet { // results tokens also carry the row within an invocation
		if len(p.token) != 13 || p.token[0] != 'r' {
			return nil, badToken()
		}
		tokSeq, tokIdx = p.after, int(binary.BigEndian.Uint32(p.token[9:]))
	}
	encoding := params.Get("ContentEncoding")
	switch encoding {
	case "", "Base64", "PlainText":
	default:
		return nil, invalid("ContentEncoding", encoding)
	}
	invokeID, instanceID, commandID := params.Get("InvokeId"), params.Get("InstanceId"), params.Get("CommandId")
	status := params.Get("InvokeRecordStatus")
	history := strings.EqualFold(params.Get("IncludeHistory"), "true")

	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.opts.Now())
	if history {
		if invokeID == "" {
			return nil, missing("InvokeId")
		}
		if inv, ok := s.byID[invokeID]; ok && inv.RepeatMode != repeatPeriod && inv.RepeatMode != repeatEveryReboot {
			return nil, errorf(http.StatusBadRequest, "InvalidParameter.IncludeHistory",
				"IncludeHistory needs the InvokeId of a Period or EveryReboot task; %s is %s.", invokeID, inv.RepeatMode)
		}
	}
	var items []resultItem
	list := s.lists[listKey(ProductECS, region)]
	for i := len(list) - 1; i >= 0; i-- {
		inv := list[i]
		if invokeID != "" && inv.InvokeID != invokeID || commandID != "" && inv.CommandID != commandID {
			continue
		}
		for idx, row := range s.rows(inv, history, encoding) {
			if instanceID != "" && row.InstanceId != instanceID ||
				status != "" && !strings.EqualFold(status, row.InvocationStatus) && !strings.EqualFold(status, row.InvokeRecordStatus) {
				continue
			}
			items = append(items, resultItem{inv: inv, idx: idx, row: row})
		}
	}
	start := 0
	switch {
	case p.tokenSet:
		for start < len(items) && (items[start].inv.Seq > tokSeq || items[start].inv.Seq == tokSeq && items[start].idx <= tokIdx) {
			start++
		}
	case !p.byToken:
		start = min((p.number-1)*p.size, len(items))
	}
	end := min(start+p.size, len(items))
	var resp ecsResultsResponse
	resp.RequestId = requestID
	resp.Invocation.PageSize, resp.Invocation.PageNumber, resp.Invocation.TotalCount = int64(p.size), int64(p.number), int64(len(items))
	resp.Invocation.InvocationResults.InvocationResult = []ecsResult{}
	for _, it := range items[start:end] {
		resp.Invocation.InvocationResults.InvocationResult = append(resp.Invocation.InvocationResults.InvocationResult, it.row)
	}
	if end < len(items) && end > start {
		last := items[end-1]
		raw := make([]byte, 13)
		raw[0] = 'r'
		binary.BigEndian.PutUint64(raw[1:9], last.inv.Seq)
		binary.BigEndian.PutUint32(raw[9:], uint32(last.idx))
		resp.Invocation.NextToken = base64.RawURLEncoding.EncodeToString(raw)
	}
	return resp, nil
}
