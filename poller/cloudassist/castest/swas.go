package castest

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// swasTime is how SWAS renders CreationTime: without a zone.
const swasTime = "2006-01-02T15:04:05"

func (s *Server) swasRunCommand(account string, params url.Values, region, requestID string) (any, *apiError) {
	typ, content, timeout, e := commandParams(params)
	if e != nil {
		return nil, e
	}
	instance := params.Get("InstanceId")
	if instance == "" {
		return nil, missing("InstanceId")
	}
	inv, e := s.createInvocation(ProductSWAS, region, []string{instance}, invocationSpec{
		Account: account, Name: params.Get("Name"), Type: typ, Content: content, Timeout: timeout,
		Username: params.Get("WorkingUser"), WorkingDir: params.Get("WorkingDir"),
	})
	if e != nil {
		return nil, e
	}
	return struct {
		RequestId string `json:"RequestId"`
		InvokeId  string `json:"InvokeId"`
	}{requestID, inv.InvokeID}, nil
}

// The SWAS DescribeCommandInvocations response: flat arrays, no wrappers.
type swasInvocationsResponse struct {
	RequestId          string        `json:"RequestId"`
	TotalCount         int           `json:"TotalCount"`
	PageNumber         int           `json:"PageNumber"`
	PageSize           int           `json:"PageSize"`
	CommandInvocations []swasCommand `json:"CommandInvocations"`
}

type swasCommand struct {
	InvokeId           string               `json:"InvokeId"`
	CreationTime       string               `json:"CreationTime"`
	CommandId          string               `json:"CommandId"`
	InvocationStatus   string               `json:"InvocationStatus"`
	CommandName        string               `json:"CommandName"`
	CommandType        string               `json:"CommandType"`
	CommandDescription string               `json:"CommandDescription"`
	Username           string               `json:"Username"`
	WorkingDir         string               `json:"WorkingDir"`
	Timeout            int64                `json:"Timeout"`
	CommandContent     string               `json:"CommandContent"`
	Parameters         string               `json:"Parameters"`
	InvokeInstances    []swasInvokeInstance `json:"InvokeInstances"`
}

type swasInvokeInstance struct {
	InstanceId       string `json:"InstanceId"`
	StartTime        string `json:"StartTime"`
	FinishTime       string `json:"FinishTime"`
	InvocationStatus string `json:"InvocationStatus"`
	Output           string `json:"Output"`
	ExitCode         int64  `json:"ExitCode"`
	ErrorInfo        string `json:"ErrorInfo"`
	ErrorCode        string `json:"ErrorCode"`
}

func (s *Server) swasDescribeCommandInvocations(account string, params url.Values, region, requestID string) (any, *apiError) {
	size, number := 10, 1
	if v := params.Get("PageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			return nil, errorf(http.StatusBadRequest, "InvalidParam.PageSize", "The specified parameter is invalid.")
		}
		size = n
	}
	if v := params.Get("PageNumber"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, errorf(http.StatusBadRequest, "InvalidParam.PageNumber", "The specified parameter is invalid.")
		}
		number = n
	}
	invokeID, instanceID, commandID := params.Get("InvokeId"), params.Get("InstanceId"), params.Get("CommandId")
	commandName, commandType, status := params.Get("CommandName"), params.Get("CommandType"), params.Get("InvocationStatus")
	if instanceID != "" {
		commandName = "" // documented: CommandName is ignored with InstanceId
	}
	a := s.arrangement(invokeID != "") // page numbers drift by nature: Order, Ties and Unstable apply
	if e := a.checkFilter("InvocationStatus", status); e != nil {
		return nil, e
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.opts.Now())
	var matches []*invocation
	list := s.lists[listKey(account, ProductSWAS, region)]
	for i := len(list) - 1; i >= 0; i-- {
		inv := list[i]
		if invokeID != "" && inv.InvokeID != invokeID || commandID != "" && inv.CommandID != commandID ||
			commandName != "" && inv.Name != commandName || commandType != "" && inv.Type != commandType ||
			status != "" && !strings.EqualFold(status, inv.Status) ||
			instanceID != "" && inv.Runs[0].InstanceID != instanceID {
			continue
		}
		matches = append(matches, inv)
	}
	a.sort(matches)
	resp := swasInvocationsResponse{RequestId: requestID, TotalCount: len(matches), PageNumber: number, PageSize: size,
		CommandInvocations: []swasCommand{}}
	start := min((number-1)*size, len(matches))
	for _, inv := range matches[start:min(start+size, len(matches))] {
		cmd := swasCommand{
			InvokeId: inv.InvokeID, CreationTime: inv.CreationTime.UTC().Format(swasTime), CommandId: inv.CommandID,
			InvocationStatus: inv.Status, CommandName: inv.Name, CommandType: inv.Type, CommandDescription: inv.Description,
			Username: inv.Username, WorkingDir: inv.WorkingDir, Timeout: inv.Timeout, CommandContent: inv.Content, Parameters: "{}",
		}
		for _, r := range inv.Runs {
			// SWAS documents Output as "the command output" (seed 003): plain
			// text, with no ContentEncoding and no Dropped. It is the same
			// Cloud Assistant agent's output, so casim cuts it at the same
			// 24 KB as ECS does.
			output, _ := cutOutput(r.Output)
			cmd.InvokeInstances = append(cmd.InvokeInstances, swasInvokeInstance{
				InstanceId: r.InstanceID, StartTime: fmtTime(r.Start), FinishTime: fmtTime(r.Finish), InvocationStatus: r.Status,
				Output: output, ExitCode: r.ExitCode, ErrorInfo: errorInfo(r.ErrorCode), ErrorCode: r.ErrorCode,
			})
		}
		resp.CommandInvocations = append(resp.CommandInvocations, cmd)
	}
	return resp, nil
}
