package castest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Options configures a [Server]. Zero values get the documented defaults.
type Options struct {
	// AccessKeyID and AccessKeySecret are the key pair of the default
	// account (DefaultAccount). Both are required.
	AccessKeyID     string
	AccessKeySecret string
	// SecurityToken, if set, is the STS token every request of the
	// default account must carry (signed as SecurityToken): a request
	// without it gets InvalidSecurityToken.Malformed, one with another
	// token InvalidSecurityToken.MismatchWithAccessKey.
	SecurityToken string
	// UID is the default account's Alibaba Cloud account id (16 digits),
	// which its EventBridge events carry; "" derives a stable one.
	UID string
	// Accounts are served besides the default one, each with its own key
	// pair, fleet (Instances per product and region, with ids of its own),
	// invocations and quota windows. A request is served for the account
	// its AccessKeyId belongs to; an unknown one is refused with
	// InvalidAccessKeyId.NotFound.
	Accounts []Account
	// Regions served; default cn-hangzhou.
	Regions []string
	// Instances per product and region; default 3.
	Instances int
	// DispatchDelay is how long a run stays Pending; default 50ms.
	DispatchDelay time.Duration
	// StopDelay is how long a stopped run stays Stopping; default 100ms.
	StopDelay time.Duration
	// DeliveryTimeout is how long a run waits for an unresponsive agent
	// before it is Aborted; default 2s (Alibaba's is one minute).
	DeliveryTimeout time.Duration
	// OssDeliveryDelay is how long the OSS delivery of a run's output
	// (RunCommand's OssOutputDelivery) stays InProgress after the run
	// ended; default 100ms.
	OssDeliveryDelay time.Duration
	// RetentionAge and RetentionCount bound how long, and how many
	// execution records (one per instance and run), each product and region
	// keeps; older invocations vanish from the API, as Alibaba's do (see
	// Server.expire). Zero takes the Retention policy's limits.
	RetentionAge   time.Duration
	RetentionCount int
	// Retention is the documented policy the limits default to:
	// RetentionCurrent (30 days, 10,000 records; the default) or
	// RetentionLegacy (four weeks, 100,000 records).
	Retention RetentionPolicy
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Behaviour is the initial behaviour where the documents are silent
	// (see SetBehaviour); the zero value is the ideal API.
	Behaviour Behaviour
	// EventBridge, with a URL, pushes an ecs:CloudAssistant:TaskCompleted
	// event there each time an ECS run ends on an instance in a documented
	// status (see EventBridge and SetEventBridge); the zero value pushes
	// nothing.
	EventBridge EventBridge
}

// Server is the emulator. It is safe for concurrent use.
type Server struct {
	opts     Options
	accounts []Account // the default one first; fixed after New
	bhv      *behaviourState
	push     *pusher // sends EventBridge events on its own goroutine, so that no holder of s.mu waits on the network

	mu             sync.Mutex
	instances      map[string]*Instance
	fleet          []*Instance              // in creation order
	lists          map[string][]*invocation // per product and region, oldest first
	byID           map[string]*invocation
	commands       map[string]*command // saved commands (CreateCommand), by id
	cmdSeq         uint64
	seq            uint64
	queue          runQueue
	truth          []TruthEntry
	calls          map[callKey]int
	retentionAge   time.Duration
	retentionCount int
	expired        int

	nonceMu sync.Mutex
	nonces  map[string]time.Time

	faultMu sync.Mutex
	faults  []*Fault

	quotaMu     sync.Mutex
	quota       int
	quotaWindow time.Duration
	windows     map[quotaKey]*quotaWindow
	throttled   map[callKey]int
	callLog     map[callKey][]loggedCall

	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	httpMu   sync.Mutex
	httpSrv  *http.Server
	listener net.Listener
}

// New builds an emulator with its fleet and starts its clock. Call Close to
// release it.
func New(opts Options) (*Server, error) {
	if opts.AccessKeyID == "" || opts.AccessKeySecret == "" {
		return nil, errors.New("castest: an access key id and secret are required")
	}
	if len(opts.Regions) == 0 {
		opts.Regions = []string{"cn-hangzhou"}
	}
	if opts.Instances == 0 {
		opts.Instances = 3
	}
	if opts.Instances < 0 {
		return nil, fmt.Errorf("castest: instances must be positive, got %d", opts.Instances)
	}
	if opts.DispatchDelay == 0 {
		opts.DispatchDelay = 50 * time.Millisecond
	}
	if opts.StopDelay == 0 {
		opts.StopDelay = 100 * time.Millisecond
	}
	if opts.DeliveryTimeout == 0 {
		opts.DeliveryTimeout = 2 * time.Second
	}
	if opts.OssDeliveryDelay == 0 {
		opts.OssDeliveryDelay = 100 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	days, records, err := opts.Retention.limits()
	if err != nil {
		return nil, err
	}
	if opts.RetentionAge == 0 {
		opts.RetentionAge = time.Duration(days) * 24 * time.Hour
	}
	if opts.RetentionCount == 0 {
		opts.RetentionCount = records
	}
	if opts.RetentionAge < 0 || opts.RetentionCount < 0 {
		return nil, errors.New("castest: retention must be positive")
	}
	if err := opts.Behaviour.Validate(); err != nil {
		return nil, err
	}
	accounts, err := opts.accounts()
	if err != nil {
		return nil, err
	}
	push, err := newPusher(opts.EventBridge, opts.Now)
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts:           opts,
		accounts:       accounts,
		bhv:            newBehaviourState(opts.Behaviour),
		push:           push,
		instances:      map[string]*Instance{},
		lists:          map[string][]*invocation{},
		retentionAge:   opts.RetentionAge,
		retentionCount: opts.RetentionCount,
		byID:           map[string]*invocation{},
		commands:       map[string]*command{},
		calls:          map[callKey]int{},
		nonces:         map[string]time.Time{},
		windows:        map[quotaKey]*quotaWindow{},
		throttled:      map[callKey]int{},
		callLog:        map[callKey][]loggedCall{},
		quotaWindow:    time.Minute,
		wake:           make(chan struct{}, 1),
		stop:           make(chan struct{}),
		done:           make(chan struct{}),
	}
	for _, region := range opts.Regions {
		if region == "" || strings.ContainsAny(region, " ./") {
			return nil, fmt.Errorf("castest: invalid region %q", region)
		}
	}
	for _, account := range accounts {
		for _, region := range opts.Regions {
			for _, product := range []string{ProductECS, ProductSWAS} {
				for i := range opts.Instances {
					inst := &Instance{ID: instanceID(account.Name, product, region, i), Account: account.Name, Region: region,
						Product: product, Status: InstanceRunning, Agent: AgentRunning}
					s.instances[inst.ID] = inst
					s.fleet = append(s.fleet, inst)
				}
			}
		}
	}
	go s.clock()
	go push.run()
	return s, nil
}

// instanceID derives a stable, realistic-looking id, so a restarted casim
// serves the same fleet. The default account's ids are those of the
// emulator before accounts; another account's are its own.
func instanceID(account, product, region string, n int) string {
	seed := fmt.Appendf(nil, "%s/%s/%d", product, region, n)
	if account != DefaultAccount {
		seed = fmt.Appendf(nil, "%s/%s/%s/%d", account, product, region, n)
	}
	sum := sha256.Sum256(seed)
	if product == ProductSWAS {
		return hex.EncodeToString(sum[:16])
	}
	return "i-" + hex.EncodeToString(sum[:10])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newRequestID() string {
	h := strings.ToUpper(randomHex(16))
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// clock carries out scheduled steps as their time comes, so the truth log
// is complete even when nobody polls.
func (s *Server) clock() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		s.advance(s.opts.Now())
		wait := time.Hour
		if len(s.queue) > 0 {
			wait = max(time.Until(s.queue[0].Due), time.Millisecond)
		}
		s.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-s.stop:
			return
		case <-s.wake:
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
		}
	}
}

// Start serves the emulator on addr ("127.0.0.1:0" picks a free port) and
// returns its base URL once it accepts connections.
func (s *Server) Start(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("castest: listen: %w", err)
	}
	s.httpMu.Lock()
	s.listener = ln
	s.httpSrv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	srv := s.httpSrv
	s.httpMu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), nil
}

// Close stops the HTTP listener, if any, the clock and the EventBridge
// pusher, aborting a POST under way: events still waiting are never sent.
func (s *Server) Close() error {
	s.httpMu.Lock()
	srv := s.httpSrv
	s.httpMu.Unlock()
	var err error
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = srv.Shutdown(ctx)
	}
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.push.close()
	return err
}

// ServeHTTP serves the RPC API on "/" and the control plane on "/_casim/".
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_casim/") {
		s.control(w, r)
		return
	}
	s.rpc(w, r)
}

func (s *Server) rpc(w http.ResponseWriter, r *http.Request) {
	requestID := newRequestID()
	host := r.Host
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		writeError(w, host, requestID, errorf(http.StatusMethodNotAllowed, "UnsupportedHTTPMethod", "HTTP method %s is not supported.", r.Method))
		return
	}
	params, account, e := s.authenticate(r)
	if e != nil {
		writeError(w, host, requestID, e)
		return
	}
	action := params.Get("Action")
	now := s.opts.Now()
	if e := s.admit(account, action, params.Get("RegionId"), now); e != nil {
		writeError(w, host, requestID, e)
		return
	}
	s.mu.Lock()
	s.calls[callKey{account, action}]++
	s.mu.Unlock()
	s.logCall(account, action, params.Get("RegionId"), now)
	if f := s.takeFault(account, action); f != nil {
		if done := s.applyFault(w, host, requestID, f); done {
			return
		}
	}
	resp, e := s.dispatch(account, params, requestID)
	if e != nil {
		writeError(w, host, requestID, e)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// maxBody bounds a request's body: a form of parameters, never large.
const maxBody = 4 << 20

// authenticate reads a request's parameters (query and form body) and
// verifies its signature: ACS3-HMAC-SHA256 when an Authorization header
// says ACS3-, RPC signature v1 otherwise. A V3 request names its action
// and version in the x-acs-action and x-acs-version headers; they are
// returned as the parameters Action and Version.
func (s *Server) authenticate(r *http.Request) (url.Values, string, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBody))
	if err != nil {
		return nil, "", errorf(http.StatusBadRequest, "InvalidParameter", "The request body could not be read: %v.", err)
	}
	query := r.URL.Query()
	params := url.Values{}
	for k, v := range query {
		params[k] = v
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-www-form-urlencoded" && len(body) > 0 {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, "", errorf(http.StatusBadRequest, "InvalidParameter", "The form body is malformed: %v.", err)
		}
		for k, v := range form {
			params[k] = v
		}
	}
	now := s.opts.Now()
	if !signedV3(r.Header) {
		account, e := s.verify(r.Method, params, now)
		return params, account, e
	}
	account, e := s.verifyV3(v3Request{method: r.Method, path: r.URL.EscapedPath(), query: query, header: r.Header, host: r.Host, body: body}, now)
	if e != nil {
		return nil, "", e
	}
	if a := r.Header.Get("x-acs-action"); a != "" {
		params.Set("Action", a)
	}
	if v := r.Header.Get("x-acs-version"); v != "" {
		params.Set("Version", v)
	}
	return params, account, nil
}

// dispatch serves a verified request for account.
func (s *Server) dispatch(account string, params url.Values, requestID string) (any, *apiError) {
	region := params.Get("RegionId")
	if region == "" {
		return nil, missing("RegionId")
	}
	known := false
	for _, r := range s.opts.Regions {
		known = known || r == region
	}
	if !known {
		return nil, errorf(http.StatusNotFound, "InvalidRegionId.NotFound", "The RegionId provided does not exist in our records.")
	}
	if f := params.Get("Format"); f != "" && !strings.EqualFold(f, "JSON") {
		return nil, errorf(http.StatusBadRequest, "InvalidParameter.Format", "casim only speaks JSON, not %q.", f)
	}
	action, version := params.Get("Action"), params.Get("Version")
	if action == "" {
		return nil, missing("Action")
	}
	switch version {
	case "2014-05-26":
		switch action {
		case "RunCommand":
			return s.ecsRunCommand(account, params, region, requestID)
		case "StopInvocation":
			return s.ecsStopInvocation(account, params, region, requestID)
		case "DescribeInvocations":
			return s.ecsDescribeInvocations(account, params, region, requestID)
		case "DescribeInvocationResults":
			return s.ecsDescribeInvocationResults(account, params, region, requestID)
		case "CreateCommand":
			return s.ecsCreateCommand(account, params, region, requestID)
		case "InvokeCommand":
			return s.ecsInvokeCommand(account, params, region, requestID)
		case "DescribeCommands":
			return s.ecsDescribeCommands(account, params, region, requestID)
		case "ModifyCommand":
			return s.ecsModifyCommand(account, params, region, requestID)
		case "DeleteCommand":
			return s.ecsDeleteCommand(account, params, region, requestID)
		case "DescribeCloudAssistantStatus":
			return s.ecsDescribeCloudAssistantStatus(account, params, region, requestID)
		}
	case "2020-06-01":
		switch action {
		case "RunCommand":
			return s.swasRunCommand(account, params, region, requestID)
		case "DescribeCommandInvocations":
			return s.swasDescribeCommandInvocations(account, params, region, requestID)
		}
	case "":
		return nil, missing("Version")
	default:
		return nil, errorf(http.StatusBadRequest, "InvalidVersion", "Specified parameter Version is not valid: %q.", version)
	}
	return nil, errorf(http.StatusNotFound, "InvalidAction.NotFound", "Specified api %q is not found, please check your url and method.", action)
}

// callKey counts calls per account and action.
type callKey struct{ account, action string }

// Calls reports how many signed API calls each action received, in every
// account (see AccountHandle.Calls for one).
func (s *Server) Calls() map[string]int { return s.callsOf("") }

// callsOf counts the calls of one account, or of all when account is "".
func (s *Server) callsOf(account string) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sumCalls(s.calls, account)
}

// sumCalls adds up counts per action, of one account or of all ("").
func sumCalls(counts map[callKey]int, account string) map[string]int {
	out := map[string]int{}
	for k, n := range counts {
		if account == "" || k.account == account {
			out[k.action] += n
		}
	}
	return out
}

// Instances returns the fleet of every account, the default account's
// first (see AccountHandle.Instances for one).
func (s *Server) Instances() []Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Instance, 0, len(s.fleet))
	for _, inst := range s.fleet {
		out = append(out, *inst)
	}
	return out
}

// SetInstance changes an instance's lifecycle status and/or agent state
// (an empty value leaves it as it is) and applies the consequences to the
// work on it: a run on a stopped or released instance is Terminated, one
// whose agent stops is an Error, new work is Aborted or Invalid. Starting
// a stopped instance is a reboot.
func (s *Server) SetInstance(id, status, agent string) error {
	return s.changeInstance(id, status, agent, false)
}

// Reboot restarts an instance: reboot tasks (EveryReboot, NextRebootOnly)
// run on it.
func (s *Server) Reboot(id string) error { return s.changeInstance(id, "", "", true) }

// SetRetention changes the retention limits, count in execution records;
// zero leaves a limit as it is.
func (s *Server) SetRetention(age time.Duration, count int) error {
	if age < 0 || count < 0 {
		return errors.New("castest: retention must be positive")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if age > 0 {
		s.retentionAge = age
	}
	if count > 0 {
		s.retentionCount = count
	}
	s.advance(s.opts.Now())
	return nil
}

// Expired counts the invocations retention has removed.
func (s *Server) Expired() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.opts.Now())
	return s.expired
}

func (s *Server) changeInstance(id, status, agent string, reboot bool) error {
	switch status {
	case "", InstanceRunning, InstanceStopped, InstanceReleased:
	default:
		return fmt.Errorf("castest: unknown instance status %q (want Running, Stopped or Released)", status)
	}
	switch agent {
	case "", AgentRunning, AgentNotRunning, AgentNotResponding, AgentUpgrading, AgentOutdated:
	default:
		return fmt.Errorf("castest: unknown agent state %q (want Running, NotRunning, NotResponding, Upgrading or Outdated)", agent)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, ok := s.instances[id]
	if !ok {
		return fmt.Errorf("castest: no instance %q", id)
	}
	now := s.opts.Now()
	s.advance(now)
	if inst.Status == InstanceReleased && status != "" && status != InstanceReleased {
		return fmt.Errorf("castest: instance %q is released", id)
	}
	if inst.Status == InstanceStopped && status == InstanceRunning {
		reboot = true
	}
	if status != "" {
		inst.Status = status
	}
	if agent != "" {
		inst.Agent = agent
	}
	if reboot && inst.Status != InstanceRunning {
		return fmt.Errorf("castest: instance %q is %s and cannot reboot", id, inst.Status)
	}
	s.instanceChanged(inst, reboot, now)
	return nil
}
