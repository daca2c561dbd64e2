package castest

import (
	"cmp"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// command is a saved Cloud Assistant command (CreateCommand, or RunCommand
// with KeepCommand=true), which InvokeCommand runs.
type command struct {
	Seq             uint64
	Account, Region string
	ID, Name, Type  string
	Content         string // decoded
	Description     string
	WorkingDir      string
	Launcher        string
	Timeout         int64
	EnableParameter bool
	Created         time.Time
	InvokeTimes     int
}

func cmdNotFound(id string) *apiError {
	return errorf(http.StatusNotFound, "InvalidCmdId.NotFound", "The specified command ID does not exist: %q.", id)
}

// lookupCommand finds a command of account in region. Callers hold s.mu.
func (s *Server) lookupCommand(account, region, id string) (*command, *apiError) {
	if id == "" {
		return nil, missing("CommandId")
	}
	c, ok := s.commands[id]
	if !ok || c.Account != account || c.Region != region {
		return nil, cmdNotFound(id)
	}
	return c, nil
}

// saveCommand stores a new command. Callers hold s.mu.
func (s *Server) saveCommand(c *command) {
	s.cmdSeq++
	c.Seq = s.cmdSeq
	s.commands[c.ID] = c
}

func (s *Server) ecsCreateCommand(account string, params url.Values, region, requestID string) (any, *apiError) {
	name := params.Get("Name")
	if name == "" {
		return nil, missing("Name")
	}
	typ := params.Get("Type")
	switch typ {
	case "":
		return nil, missing("Type")
	case "RunShellScript", "RunBatScript", "RunPowerShellScript":
	default:
		return nil, invalid("Type", typ)
	}
	content := params.Get("CommandContent")
	if content == "" {
		return nil, missing("CommandContent")
	}
	// Documented: the default is Base64, and an invalid value means Base64.
	if params.Get("ContentEncoding") != "PlainText" {
		raw, err := base64.StdEncoding.DecodeString(content)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "InvalidCommandContent.Malformed", "The CommandContent is not valid Base64.")
		}
		content = string(raw)
	}
	timeout, e := timeoutParam(params, 60)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := &command{
		Account: account, Region: region, ID: "c-" + regionCode(region) + randomHex(8), Name: name, Type: typ,
		Content: content, Description: params.Get("Description"), WorkingDir: params.Get("WorkingDir"),
		Launcher: params.Get("Launcher"), Timeout: timeout, EnableParameter: strings.EqualFold(params.Get("EnableParameter"), "true"),
		Created: s.opts.Now(),
	}
	s.saveCommand(c)
	return struct {
		RequestId string `json:"RequestId"`
		CommandId string `json:"CommandId"`
	}{requestID, c.ID}, nil
}

// timeoutParam reads Timeout in seconds: documented 10..86400, accepted
// from 1 so that tests can time out quickly.
func timeoutParam(params url.Values, def int64) (int64, *apiError) {
	t := params.Get("Timeout")
	if t == "" {
		return def, nil
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 1 || v > 86400 {
		return 0, invalid("Timeout", t)
	}
	return v, nil
}

// withParameters fills a command's {{name}} placeholders from InvokeCommand's
// Parameters, a JSON object; spaces inside the braces are ignored, as
// documented.
func withParameters(content, raw string) (string, *apiError) {
	if raw == "" {
		return content, nil
	}
	var values map[string]any
	if err := json.Unmarshal([]byte(raw), &values); err != nil {
		return "", errorf(http.StatusBadRequest, "InvalidParameter.Parameters", "Parameters is not a JSON object: %v.", err)
	}
	for k, v := range values {
		text := fmt.Sprint(v)
		for _, ph := range []string{"{{" + k + "}}", "{{ " + k + " }}"} {
			content = strings.ReplaceAll(content, ph, text)
		}
	}
	return content, nil
}

func (s *Server) ecsInvokeCommand(account string, params url.Values, region, requestID string) (any, *apiError) {
	ids := indexed(params, "InstanceId")
	s.mu.Lock()
	c, e := s.lookupCommand(account, region, params.Get("CommandId"))
	var spec invocationSpec
	if e == nil {
		spec = invocationSpec{Account: account, CommandID: c.ID, Name: c.Name, Type: c.Type, Content: c.Content,
			Description: c.Description, WorkingDir: c.WorkingDir, Timeout: c.Timeout}
	}
	s.mu.Unlock()
	if e != nil {
		return nil, e
	}
	if len(ids) == 0 {
		return nil, missing("InstanceId")
	}
	if len(ids) > 100 {
		return nil, errorf(http.StatusBadRequest, "InvalidParameter.InstanceIds", "At most 100 instances per invocation.")
	}
	if c.EnableParameter {
		if spec.Content, e = withParameters(spec.Content, params.Get("Parameters")); e != nil {
			return nil, e
		}
	}
	if spec.Timeout, e = timeoutParam(params, spec.Timeout); e != nil {
		return nil, e
	}
	if wd := params.Get("WorkingDir"); wd != "" {
		spec.WorkingDir = wd
	}
	spec.Username, spec.OssOutputDelivery = params.Get("Username"), params.Get("OssOutputDelivery")
	spec.RepeatMode, spec.Frequency = params.Get("RepeatMode"), params.Get("Frequency")
	if spec.RepeatMode == "" && strings.EqualFold(params.Get("Timed"), "true") {
		spec.RepeatMode = repeatPeriod // the legacy Timed=true with a Frequency
	}
	inv, e := s.createInvocation(ProductECS, region, ids, spec)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	c.InvokeTimes++
	s.mu.Unlock()
	return struct {
		RequestId string `json:"RequestId"`
		InvokeId  string `json:"InvokeId"`
	}{requestID, inv.InvokeID}, nil
}

func (s *Server) ecsModifyCommand(account string, params url.Values, region, requestID string) (any, *apiError) {
	timeout, e := timeoutParam(params, 0)
	if e != nil {
		return nil, e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, e := s.lookupCommand(account, region, params.Get("CommandId"))
	if e != nil {
		return nil, e
	}
	// CommandContent is documented as no longer used: it changes nothing.
	for p, field := range map[string]*string{"Name": &c.Name, "Description": &c.Description, "WorkingDir": &c.WorkingDir, "Launcher": &c.Launcher} {
		if v := params.Get(p); v != "" {
			*field = v
		}
	}
	if timeout > 0 {
		c.Timeout = timeout
	}
	return struct {
		RequestId string `json:"RequestId"`
	}{requestID}, nil
}

func (s *Server) ecsDeleteCommand(account string, params url.Values, region, requestID string) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, e := s.lookupCommand(account, region, params.Get("CommandId"))
	if e != nil {
		return nil, e
	}
	delete(s.commands, c.ID)
	return struct {
		RequestId string `json:"RequestId"`
	}{requestID}, nil
}

type ecsCommand struct {
	CommandId       string `json:"CommandId"`
	Name            string `json:"Name"`
	Type            string `json:"Type"`
	Description     string `json:"Description"`
	CommandContent  string `json:"CommandContent"`
	WorkingDir      string `json:"WorkingDir"`
	Timeout         int64  `json:"Timeout"`
	CreationTime    string `json:"CreationTime"`
	InvokeTimes     int    `json:"InvokeTimes"`
	EnableParameter bool   `json:"EnableParameter"`
	Provider        string `json:"Provider"`
	Category        string `json:"Category"`
	Version         int    `json:"Version"`
	Latest          bool   `json:"Latest"`
	Launcher        string `json:"Launcher"`
	ResourceGroupId string `json:"ResourceGroupId"`
	ParameterNames  struct {
		ParameterName []string `json:"ParameterName"`
	} `json:"ParameterNames"`
	ParameterDefinitions struct {
		ParameterDefinition []struct{} `json:"ParameterDefinition"`
	} `json:"ParameterDefinitions"`
	Tags struct {
		Tag []ecsTag `json:"Tag"`
	} `json:"Tags"`
}

// parameterNames lists a command's {{name}} placeholders, in order of
// first appearance.
func parameterNames(content string) []string {
	names := []string{}
	for rest := content; ; {
		i := strings.Index(rest, "{{")
		if i < 0 {
			return names
		}
		j := strings.Index(rest[i:], "}}")
		if j < 0 {
			return names
		}
		if n := strings.TrimSpace(rest[i+2 : i+j]); n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
		rest = rest[i+j+2:]
	}
}

// simplePage pages a listing that is not an invocation listing: by
// MaxResults and NextToken (an offset, tagged with the listing's kind so
// that another listing's token is refused) or by PageNumber and PageSize.
func simplePage(p pageRequest, kind byte, n int) (start, end int, next string, e *apiError) {
	if !p.byToken {
		start = n // a page beyond the last (and a number whose offset would overflow) is empty
		if p.number-1 < (n+p.size-1)/p.size {
			start = (p.number - 1) * p.size
		}
		return start, min(start+p.size, n), "", nil
	}
	if p.tokenSet {
		if len(p.token) != 9 || p.token[0] != kind {
			return 0, 0, "", badToken()
		}
		off := binary.BigEndian.Uint64(p.token[1:])
		if off > uint64(n) {
			return 0, 0, "", badToken() // no token of ours points beyond the listing
		}
		start = int(off)
	}
	end = min(start+p.size, n)
	if end < n {
		next = base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64([]byte{kind}, uint64(end)))
	}
	return start, end, next, nil
}

func (s *Server) ecsDescribeCommands(account string, params url.Values, region, requestID string) (any, *apiError) {
	p, e := parsePaging(params)
	if e != nil {
		return nil, e
	}
	encoding := "Base64" // documented default
	if params.Get("ContentEncoding") == "PlainText" {
		encoding = "PlainText"
	}
	id, name, typ, desc := params.Get("CommandId"), params.Get("Name"), params.Get("Type"), params.Get("Description")
	provider := params.Get("Provider")
	s.mu.Lock()
	defer s.mu.Unlock()
	var matches []*command
	for _, c := range s.commands {
		if c.Account != account || c.Region != region || provider != "" || // casim has no public commands
			id != "" && c.ID != id || name != "" && c.Name != name || typ != "" && c.Type != typ || desc != "" && c.Description != desc {
			continue
		}
		matches = append(matches, c)
	}
	slices.SortFunc(matches, func(a, b *command) int { return cmp.Compare(b.Seq, a.Seq) }) // newest first
	start, end, next, e := simplePage(p, 'c', len(matches))
	if e != nil {
		return nil, e
	}
	resp := struct {
		RequestId  string `json:"RequestId"`
		PageSize   int64  `json:"PageSize"`
		PageNumber int64  `json:"PageNumber"`
		TotalCount int64  `json:"TotalCount"`
		NextToken  string `json:"NextToken"`
		Commands   struct {
			Command []ecsCommand `json:"Command"`
		} `json:"Commands"`
	}{RequestId: requestID, PageSize: int64(p.size), PageNumber: int64(p.number), TotalCount: int64(len(matches)), NextToken: next}
	resp.Commands.Command = []ecsCommand{}
	for _, c := range matches[start:end] {
		out := ecsCommand{
			CommandId: c.ID, Name: c.Name, Type: c.Type, Description: c.Description, CommandContent: encodeText(c.Content, encoding),
			WorkingDir: c.WorkingDir, Timeout: c.Timeout, CreationTime: fmtTime(c.Created), InvokeTimes: c.InvokeTimes,
			EnableParameter: c.EnableParameter, Version: 1, Latest: true, Launcher: c.Launcher,
		}
		out.ParameterNames.ParameterName = []string{}
		if c.EnableParameter {
			out.ParameterNames.ParameterName = parameterNames(c.Content)
		}
		out.ParameterDefinitions.ParameterDefinition = []struct{}{}
		out.Tags.Tag = []ecsTag{}
		resp.Commands.Command = append(resp.Commands.Command, out)
	}
	return resp, nil
}

type assistantStatus struct {
	InstanceId            string `json:"InstanceId"`
	CloudAssistantStatus  string `json:"CloudAssistantStatus"`
	CloudAssistantVersion string `json:"CloudAssistantVersion"`
	OSType                string `json:"OSType"`
	InvocationCount       int64  `json:"InvocationCount"`
	ActiveTaskCount       int64  `json:"ActiveTaskCount"`
	LastInvokedTime       string `json:"LastInvokedTime"`
	LastHeartbeatTime     string `json:"LastHeartbeatTime"`
	SupportSessionManager bool   `json:"SupportSessionManager"`
}

// assistantStatusOf is an ECS instance's Cloud Assistant status: running
// ("true") while the instance runs and its agent is installed and alive.
// Callers hold s.mu.
func (s *Server) assistantStatusOf(inst *Instance, now time.Time) assistantStatus {
	st := assistantStatus{InstanceId: inst.ID, CloudAssistantStatus: "false", CloudAssistantVersion: "2.2.3.857",
		OSType: "Linux", SupportSessionManager: true}
	if inst.Agent == AgentOutdated {
		st.CloudAssistantVersion = "1.0.0.149"
	}
	if inst.Status == InstanceRunning && (inst.Agent == AgentRunning || inst.Agent == AgentOutdated || inst.Agent == AgentUpgrading) {
		st.CloudAssistantStatus, st.LastHeartbeatTime = "true", fmtTime(now)
	}
	var last time.Time
	for _, inv := range s.lists[listKey(inst.Account, ProductECS, inst.Region)] {
		for _, r := range inv.Runs {
			if r.InstanceID != inst.ID {
				continue
			}
			st.InvocationCount += int64(max(r.Repeats, 1))
			if !terminal(r.Status) {
				st.ActiveTaskCount++
			}
			for _, t := range []time.Time{r.Created, r.Start} {
				if t.After(last) {
					last = t
				}
			}
		}
	}
	st.LastInvokedTime = fmtTime(last)
	return st
}

func (s *Server) ecsDescribeCloudAssistantStatus(account string, params url.Values, region, requestID string) (any, *apiError) {
	p, e := parsePaging(params)
	if e != nil {
		return nil, e
	}
	ids := indexed(params, "InstanceId")
	if len(ids) > 0 && !p.byToken {
		p.size, p.number = max(len(ids), 1), 1 // documented: PageSize does not apply with InstanceId
	}
	os := params.Get("OSType")
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	s.advance(now)
	var matches []assistantStatus
	for _, inst := range s.fleet {
		if inst.Account != account || inst.Region != region || inst.Product != ProductECS || inst.Status == InstanceReleased ||
			len(ids) > 0 && !slices.Contains(ids, inst.ID) || os != "" && !strings.EqualFold(os, "Linux") {
			continue
		}
		matches = append(matches, s.assistantStatusOf(inst, now))
	}
	start, end, next, e := simplePage(p, 'a', len(matches))
	if e != nil {
		return nil, e
	}
	resp := struct {
		RequestId                       string `json:"RequestId"`
		TotalCount                      int64  `json:"TotalCount"`
		PageNumber                      int64  `json:"PageNumber"`
		PageSize                        int64  `json:"PageSize"`
		NextToken                       string `json:"NextToken"`
		InstanceCloudAssistantStatusSet struct {
			InstanceCloudAssistantStatus []assistantStatus `json:"InstanceCloudAssistantStatus"`
		} `json:"InstanceCloudAssistantStatusSet"`
	}{RequestId: requestID, TotalCount: int64(len(matches)), PageNumber: int64(p.number), PageSize: int64(p.size), NextToken: next}
	resp.InstanceCloudAssistantStatusSet.InstanceCloudAssistantStatus = append([]assistantStatus{}, matches[start:end]...)
	return resp, nil
}
