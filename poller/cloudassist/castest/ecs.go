package castest

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	maxPageSize = 50
	maxOutput   = 24 * 1024 // Output is truncated beyond 24 KB; Dropped counts the rest
	apiTime     = "2006-01-02T15:04:05Z"
)

type runCommandResponse struct {
	RequestId string `json:"RequestId"`
	CommandId string `json:"CommandId"`
	InvokeId  string `json:"InvokeId"`
}

// indexed reads a repeated parameter: Name.1, Name.2, …
func indexed(params url.Values, name string) []string {
	var out []string
	for i := 1; ; i++ {
		v := params.Get(name + "." + strconv.Itoa(i))
		if v == "" {
			return out
		}
		out = append(out, v)
	}
}

// commandParams reads what every RunCommand takes: Type, CommandContent
// (with ContentEncoding) and Timeout.
func commandParams(params url.Values) (typ, content string, timeout int64, e *apiError) {
	typ = params.Get("Type")
	switch typ {
	case "":
		return "", "", 0, missing("Type")
	case "RunShellScript", "RunBatScript", "RunPowerShellScript":
	default:
		return "", "", 0, invalid("Type", typ)
	}
	content = params.Get("CommandContent")
	if content == "" {
		return "", "", 0, missing("CommandContent")
	}
	switch enc := params.Get("ContentEncoding"); enc {
	case "", "PlainText":
	case "Base64":
		raw, err := base64.StdEncoding.DecodeString(content)
		if err != nil {
			return "", "", 0, errorf(http.StatusBadRequest, "InvalidCommandContent.Malformed", "The CommandContent is not valid Base64.")
		}
		content = string(raw)
	default:
		return "", "", 0, invalid("ContentEncoding", enc)
	}
	timeout = 60
	if t := params.Get("Timeout"); t != "" {
		// Alibaba documents 10..86400 s; casim accepts from 1 s so that tests
		// can time out quickly.
		v, err := strconv.ParseInt(t, 10, 64)
		if err != nil || v < 1 || v > 86400 {
			return "", "", 0, invalid("Timeout", t)
		}
		timeout = v
	}
	return typ, content, timeout, nil
}

func (s *Server) ecsRunCommand(account string, params url.Values, region, requestID string) (any, *apiError) {
	typ, content, timeout, e := commandParams(params)
	if e != nil {
		return nil, e
	}
	repeat, frequency := params.Get("RepeatMode"), params.Get("Frequency")
	ids := indexed(params, "InstanceId")
	if len(ids) == 0 {
		return nil, missing("InstanceId")
	}
	if len(ids) > 100 {
		return nil, errorf(http.StatusBadRequest, "InvalidParameter.InstanceIds", "At most 100 instances per invocation.")
	}
	inv, e := s.createInvocation(ProductECS, region, ids, invocationSpec{
		Account: account, Name: params.Get("Name"), Type: typ, Content: content, Timeout: timeout,
		Username: params.Get("Username"), WorkingDir: params.Get("WorkingDir"), Description: params.Get("Description"),
		RepeatMode: repeat, Frequency: frequency, OssOutputDelivery: params.Get("OssOutputDelivery"),
	})
	if e != nil {
		return nil, e
	}
	if strings.EqualFold(params.Get("KeepCommand"), "true") {
		// Documented: the command is kept, to be run again by InvokeCommand.
		s.mu.Lock()
		s.saveCommand(&command{Account: inv.Account, Region: region, ID: inv.CommandID, Name: inv.Name, Type: typ, Content: content,
			Description: inv.Description, WorkingDir: inv.WorkingDir, Timeout: timeout, InvokeTimes: 1, Created: inv.CreationTime,
			EnableParameter: strings.EqualFold(params.Get("EnableParameter"), "true")})
		s.mu.Unlock()
	}
	return runCommandResponse{RequestId: requestID, CommandId: inv.CommandID, InvokeId: inv.InvokeID}, nil
}

// stopInvocation stops an invocation of account on the given instances,
// or on all of them when only is empty.
func (s *Server) stopInvocation(account, product, region, invokeID string, only []string) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	s.advance(now)
	inv, ok := s.byID[invokeID]
	if !ok || inv.Account != account || inv.Region != region || inv.Product != product {
		return errorf(http.StatusNotFound, "InvalidInvokeId.NotFound", "The specified invoke id %q does not exist.", invokeID)
	}
	for _, r := range inv.Runs {
		if len(only) == 0 || slices.Contains(only, r.InstanceID) {
			s.stopRun(r, now)
		}
	}
	return nil
}

type invocationSpec struct {
	// Account owns the invocation; empty means DefaultAccount.
	Account string
	// CommandID is the saved command InvokeCommand runs; empty makes one
	// up, as RunCommand does.
	CommandID                                              string
	Name, Type, Content, Username, WorkingDir, Description string
	RepeatMode, Frequency                                  string
	// OssOutputDelivery is oss://BUCKET[/PREFIX] to deliver each run's
	// output to OSS, or "" for none.
	OssOutputDelivery string
	Timeout           int64
}

// validRepeat checks a repeat mode and its frequency.
func validRepeat(spec *invocationSpec) (schedule, *apiError) {
	switch spec.RepeatMode {
	case "":
		spec.RepeatMode = repeatOnce
	case repeatOnce, repeatNextRebootOnly, repeatEveryReboot:
	case repeatPeriod:
		if spec.Frequency == "" {
			return schedule{}, missing("Frequency")
		}
		sched, err := parseFrequency(spec.Frequency)
		if err != nil {
			return schedule{}, errorf(http.StatusBadRequest, "InvalidParameter.Frequency", "%v", err)
		}
		return sched, nil
	default:
		return schedule{}, invalid("RepeatMode", spec.RepeatMode)
	}
	return schedule{}, nil
}

// createInvocation validates the targets, which must be instances of the
// spec's account, and starts one run per instance.
func (s *Server) createInvocation(product, region string, ids []string, spec invocationSpec) (*invocation, *apiError) {
	sched, e := validRepeat(&spec)
	if e != nil {
		return nil, e
	}
	if spec.OssOutputDelivery != "" {
		if _, err := parseOssDelivery(spec.OssOutputDelivery); err != nil {
			return nil, errorf(http.StatusBadRequest, "InvalidParameter.OssOutputDelivery", "The specified parameter OssOutputDelivery is not valid: %v.", err)
		}
	}
	account := spec.Account
	if account == "" {
		account = DefaultAccount
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	s.advance(now)
	for _, id := range ids {
		inst, ok := s.instances[id]
		if !ok || inst.Account != account || inst.Region != region || inst.Product != product {
			return nil, errorf(http.StatusNotFound, "InvalidInstance.NotFound", "The specified instance %q does not exist.", id)
		}
	}
	if spec.Name == "" {
		spec.Name = "casim-" + randomHex(4)
	}
	s.seq++
	if spec.CommandID == "" {
		spec.CommandID = "c-" + regionCode(region) + randomHex(8)
	}
	inv := &invocation{
		Seq: s.seq, Account: account, Product: product, Region: region,
		InvokeID: "t-" + regionCode(region) + randomHex(8), CommandID: spec.CommandID,
		Name: spec.Name, Type: spec.Type, Content: spec.Content, Timeout: spec.Timeout,
		Username: spec.Username, WorkingDir: spec.WorkingDir, Description: spec.Description,
		RepeatMode: spec.RepeatMode, Frequency: spec.Frequency, OssOutputDelivery: spec.OssOutputDelivery, sched: sched,
		CreationTime: now, Status: stPending,
	}
	p := parseScript(spec.Content)
	for _, id := range slices.Compact(slices.Clone(ids)) {
		r := &run{inv: inv, plan: p, heapIndex: -1, InstanceID: id, Status: stPending, Created: now, Updated: now}
		inv.Runs = append(inv.Runs, r)
		s.truth = append(s.truth, TruthEntry{Time: now, Account: account, Product: product, Region: region, Level: "instance",
			InvokeID: inv.InvokeID, InstanceID: id, To: stPending})
		s.schedule(r, now.Add(s.opts.DispatchDelay))
	}
	s.truth = append(s.truth, TruthEntry{Time: now, Account: account, Product: product, Region: region, Level: "invocation",
		InvokeID: inv.InvokeID, To: stPending})
	key := listKey(account, product, region)
	s.lists[key] = append(s.lists[key], inv)
	s.byID[inv.InvokeID] = inv
	s.expire(now)
	return inv, nil
}

func regionCode(region string) string {
	parts := strings.Split(region, "-")
	code := ""
	for _, p := range parts[1:] {
		if p != "" {
			code += p[:1]
		}
	}
	return code
}

func (s *Server) ecsStopInvocation(account string, params url.Values, region, requestID string) (any, *apiError) {
	id := params.Get("InvokeId")
	if id == "" {
		return nil, missing("InvokeId")
	}
	if e := s.stopInvocation(account, ProductECS, region, id, indexed(params, "InstanceId")); e != nil {
		return nil, e
	}
	return struct {
		RequestId string `json:"RequestId"`
	}{requestID}, nil
}

// The DescribeInvocations response, with every field the SDK decodes.
type ecsInvocationsResponse struct {
	RequestId   string `json:"RequestId"`
	PageSize    int64  `json:"PageSize"`
	PageNumber  int64  `json:"PageNumber"`
	TotalCount  int64  `json:"TotalCount"`
	NextToken   string `json:"NextToken"`
	Invocations struct {
		Invocation []ecsInvocation `json:"Invocation"`
	} `json:"Invocations"`
}

type ecsTag struct {
	TagKey   string `json:"TagKey"`
	TagValue string `json:"TagValue"`
}

type ecsInvocation struct {
	InvokeId           string `json:"InvokeId"`
	CommandId          string `json:"CommandId"`
	CommandName        string `json:"CommandName"`
	CommandType        string `json:"CommandType"`
	CommandContent     string `json:"CommandContent"`
	CommandDescription string `json:"CommandDescription"`
	CreationTime       string `json:"CreationTime"`
	Frequency          string `json:"Frequency"`
	InvocationStatus   string `json:"InvocationStatus"`
	InvokeStatus       string `json:"InvokeStatus"`
	Parameters         string `json:"Parameters"`
	RepeatMode         string `json:"RepeatMode"`
	Timed              bool   `json:"Timed"`
	Timeout            int64  `json:"Timeout"`
	Username           string `json:"Username"`
	WorkingDir         string `json:"WorkingDir"`
	ContainerId        string `json:"ContainerId"`
	ContainerName      string `json:"ContainerName"`
	Launcher           string `json:"Launcher"`
	TerminationMode    string `json:"TerminationMode"`
	VmCount            int    `json:"VmCount"`
	// OssOutputDelivery is sent only for an invocation that has it (the V1
	// SDK does not decode it).
	OssOutputDelivery string `json:"OssOutputDelivery,omitempty"`
	Tags              struct {
		Tag []ecsTag `json:"Tag"`
	} `json:"Tags"`
	InvokeInstances struct {
		InvokeInstance []ecsInvokeInstance `json:"InvokeInstance"`
	} `json:"InvokeInstances"`
}

type ecsInvokeInstance struct {
	InstanceId           string `json:"InstanceId"`
	InvocationStatus     string `json:"InvocationStatus"`
	InstanceInvokeStatus string `json:"InstanceInvokeStatus"`
	Repeats              int    `json:"Repeats"`
	ExitCode             int64  `json:"ExitCode"`
	ErrorCode            string `json:"ErrorCode"`
	ErrorInfo            string `json:"ErrorInfo"`
	Output               string `json:"Output"`
	Dropped              int    `json:"Dropped"`
	Timed                bool   `json:"Timed"`
	CreationTime         string `json:"CreationTime"`
	UpdateTime           string `json:"UpdateTime"`
	StartTime            string `json:"StartTime"`
	FinishTime           string `json:"FinishTime"`
	StopTime             string `json:"StopTime"`
	ossOutput
}

// timed reports whether the task will run again: a periodic or reboot task
// that is not stopped or over.
func (inv *invocation) timed() bool {
	return inv.periodic() && !terminal(inv.Status)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(apiTime)
}

// legacyInvokeStatus maps an aggregate status onto the legacy InvokeStatus.
func legacyInvokeStatus(status string) string {
	switch status {
	case stPending, stRunning, "Scheduled":
		return stRunning
	case stSuccess:
		return "Finished"
	}
	return status
}

// legacyInstanceStatus maps a per-instance status onto the deprecated
// InstanceInvokeStatus (Running, Finished, Failed, Stopped, Stopping).
func legacyInstanceStatus(status string) string {
	switch status {
	case stPending, stRunning, "Scheduled":
		return stRunning
	case stSuccess, stFailed:
		return "Finished"
	case stInvalid, stAborted, stError, stTimeout:
		return stFailed
	case stStopped, stCancelled, stTerminated:
		return stStopped
	}
	return status
}

// pageRequest is how a listing asked to be paged: by token or by number.
type pageRequest struct {
	byToken  bool
	token    []byte // the decoded NextToken (see pageToken)
	size     int
	number   int
	tokenSet bool
}

func badToken() *apiError {
	return errorf(http.StatusBadRequest, "InvalidParameter.NextToken", "The specified parameter NextToken is not valid.")
}

func parsePaging(params url.Values) (pageRequest, *apiError) {
	p := pageRequest{size: 10, number: 1}
	if v := params.Get("MaxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			return p, errorf(http.StatusBadRequest, "InvalidParameter.MaxResults", "The specified parameter MaxResults is not valid.")
		}
		p.byToken, p.size = true, n
	}
	if tok := params.Get("NextToken"); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(raw) < 9 {
			return p, badToken()
		}
		p.byToken, p.tokenSet, p.token = true, true, raw
	}
	if p.byToken {
		return p, nil
	}
	if v := params.Get("PageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			return p, errorf(http.StatusBadRequest, "InvalidParam.PageSize", "The specified parameter is invalid.")
		}
		p.size = n
	}
	if v := params.Get("PageNumber"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return p, errorf(http.StatusBadRequest, "InvalidParam.PageNumber", "The specified parameter is invalid.")
		}
		p.number = n
	}
	return p, nil
}

func (s *Server) ecsDescribeInvocations(account string, params url.Values, region, requestID string) (any, *apiError) {
	p, e := parsePaging(params)
	if e != nil {
		return nil, e
	}
	encoding, e := outputEncoding(params)
	if e != nil {
		return nil, e
	}
	includeOutput := strings.EqualFold(params.Get("IncludeOutput"), "true")
	status := params.Get("InvokeStatus")
	invokeID, instanceID := params.Get("InvokeId"), params.Get("InstanceId")
	if includeOutput && invokeID == "" && instanceID == "" {
		// Documented: with IncludeOutput=true, InvokeId, InstanceId or both
		// must be given. The documents name no code for it; this is
		// Alibaba's usual shape for a missing parameter.
		return nil, errorf(http.StatusBadRequest, "MissingParameter.InvokeIdOrInstanceId",
			"The input parameter \"InvokeId\" or \"InstanceId\" is mandatory when IncludeOutput is true.")
	}
	commandID, commandName, commandType := params.Get("CommandId"), params.Get("CommandName"), params.Get("CommandType")
	a := s.arrangement(invokeID != "")
	if e := a.checkFilter("InvokeStatus", status); e != nil {
		return nil, e
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.opts.Now())
	timed, repeatMode := params.Get("Timed"), params.Get("RepeatMode")
	var matches []*invocation
	list := s.lists[listKey(account, ProductECS, region)]
	for i := len(list) - 1; i >= 0; i-- {
		inv := list[i]
		if invokeID != "" && inv.InvokeID != invokeID ||
			repeatMode != "" && inv.RepeatMode != repeatMode ||
			timed != "" && strings.EqualFold(timed, "true") != inv.timed() ||
			commandID != "" && inv.CommandID != commandID ||
			commandName != "" && inv.Name != commandName ||
			commandType != "" && inv.Type != commandType ||
			status != "" && !strings.EqualFold(status, inv.Status) && !strings.EqualFold(status, legacyInvokeStatus(inv.Status)) {
			continue
		}
		if instanceID != "" && !slices.ContainsFunc(inv.Runs, func(r *run) bool { return r.InstanceID == instanceID }) {
			continue
		}
		matches = append(matches, inv)
	}
	a.sort(matches)
	start, end, next, e := a.page('v', len(matches), func(i int) orderKey { return a.key(matches[i], 0) },
		func() uint64 { return invocationsDigest(matches) }, p)
	if e != nil {
		return nil, e
	}
	var items []ecsInvocation
	for _, inv := range matches[start:end] {
		items = append(items, s.renderECSInvocation(inv, encoding, includeOutput))
	}
	resp := ecsInvocationsResponse{RequestId: requestID, PageSize: int64(p.size), PageNumber: int64(p.number),
		TotalCount: int64(len(matches)), NextToken: next}
	resp.Invocations.Invocation = items
	if resp.Invocations.Invocation == nil {
		resp.Invocations.Invocation = []ecsInvocation{}
	}
	return resp, nil
}

func encodeText(text, encoding string) string {
	if encoding == "PlainText" {
		return text
	}
	return base64.StdEncoding.EncodeToString([]byte(text))
}

// outputEncoding reads a listing's ContentEncoding: "" (Base64, the
// default), Base64 or PlainText; any other value is refused.
func outputEncoding(params url.Values) (string, *apiError) {
	switch encoding := params.Get("ContentEncoding"); encoding {
	case "", "Base64", "PlainText":
		return encoding, nil
	default:
		return "", invalid("ContentEncoding", encoding)
	}
}

// cutOutput is what the API keeps of a run's output: its first 24 KB, and
// the number of bytes dropped beyond them.
func cutOutput(text string) (kept string, dropped int) {
	if len(text) > maxOutput {
		return text[:maxOutput], len(text) - maxOutput
	}
	return text, 0
}

// renderOutput is a run's Output and Dropped as ECS sends them: the first
// 24 KB, in the listing's encoding.
func renderOutput(text, encoding string) (string, int) {
	kept, dropped := cutOutput(text)
	return encodeText(kept, encoding), dropped
}

// renderECSInvocation is inv as DescribeInvocations sends it. Callers hold
// s.mu.
func (s *Server) renderECSInvocation(inv *invocation, encoding string, includeOutput bool) ecsInvocation {
	now := s.opts.Now()
	out := ecsInvocation{
		InvokeId: inv.InvokeID, CommandId: inv.CommandID, CommandName: inv.Name, CommandType: inv.Type,
		CommandContent: encodeText(inv.Content, encoding), CommandDescription: inv.Description,
		CreationTime: fmtTime(inv.CreationTime), InvocationStatus: inv.Status, InvokeStatus: legacyInvokeStatus(inv.Status),
		Parameters: "{}", RepeatMode: inv.RepeatMode, Frequency: inv.Frequency, Timed: inv.timed(),
		Timeout: inv.Timeout, Username: inv.Username, WorkingDir: inv.WorkingDir,
		TerminationMode: "Process", VmCount: len(inv.Runs), OssOutputDelivery: inv.OssOutputDelivery,
	}
	out.Tags.Tag = []ecsTag{}
	out.InvokeInstances.InvokeInstance = make([]ecsInvokeInstance, 0, len(inv.Runs))
	for _, r := range inv.Runs {
		ii := ecsInvokeInstance{
			InstanceId: r.InstanceID, InvocationStatus: r.Status, InstanceInvokeStatus: legacyInstanceStatus(r.Status),
			Repeats: r.Repeats, ExitCode: r.ExitCode, ErrorCode: r.ErrorCode, ErrorInfo: errorInfo(r.ErrorCode), Timed: inv.timed(),
			CreationTime: fmtTime(r.Created), UpdateTime: fmtTime(r.Updated), StartTime: fmtTime(r.Start),
			FinishTime: fmtTime(r.Finish), StopTime: fmtTime(r.Stop),
			ossOutput: delivery(inv, r.InstanceID, r.result(), now, s.opts.OssDeliveryDelay),
		}
		if includeOutput {
			ii.Output, ii.Dropped = renderOutput(r.Output, encoding)
		}
		out.InvokeInstances.InvokeInstance = append(out.InvokeInstances.InvokeInstance, ii)
	}
	return out
}
