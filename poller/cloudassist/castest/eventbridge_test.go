package castest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// received is one POST the receiver got.
type received struct {
	ev          TaskCompleted
	raw         map[string]any
	auth        string
	contentType string
	at          time.Time
}

// receiver is an EventBridge target: it records every POST and answers
// with status (204 unless told otherwise).
type receiver struct {
	URL    string
	events chan received
	status atomic.Int32
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	rc := &receiver{events: make(chan received, 1000)}
	rc.status.Store(http.StatusNoContent)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		got := received{auth: r.Header.Get("Authorization"), contentType: r.Header.Get("Content-Type"), at: time.Now()}
		if err == nil {
			err = json.Unmarshal(body, &got.ev)
		}
		if err == nil {
			err = json.Unmarshal(body, &got.raw)
		}
		if err != nil || r.Method != http.MethodPost {
			t.Errorf("receiver: %s %q: %v", r.Method, body, err)
		}
		// The answer is chosen before the test can see the POST, so that
		// a test that changes it changes the next POST's.
		status := int(rc.status.Load())
		rc.events <- got
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	rc.URL = srv.URL + "/v1/hints/cloudassist"
	return rc
}

// take waits for n POSTs, failing the test at the deadline.
func (rc *receiver) take(t *testing.T, n int) []received {
	t.Helper()
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	var out []received
	for len(out) < n {
		select {
		case got := <-rc.events:
			out = append(out, got)
		case <-deadline.C:
			t.Fatalf("received %d POSTs, want %d", len(out), n)
		}
	}
	return out
}

// none fails if a POST arrived that take did not consume.
func (rc *receiver) none(t *testing.T) {
	t.Helper()
	select {
	case got := <-rc.events:
		t.Errorf("unexpected POST: %+v", got.ev)
	default:
	}
}

func newPushServer(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.AccessKeyID, opts.AccessKeySecret = keyID, secret
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// settled waits until every event of the runs that ended so far is pushed
// or given up, and at least events were offered.
func settled(t *testing.T, s *Server, events int) PushStats {
	t.Helper()
	var st PushStats
	waitFor(t, fmt.Sprintf("%d events pushed", events), func() bool {
		st = s.PushStats()
		return st.Events >= events && st.Pending == 0
	})
	return st
}

// pushedTruth is the truth's runs that end in a documented pushed status.
func pushedTruth(s *Server) map[string]TruthEntry {
	out := map[string]TruthEntry{}
	for _, e := range s.Truth() {
		if e.Level == "instance" && e.Product == ProductECS && slices.Contains(documentedPushStatuses(), e.To) {
			out[fmt.Sprintf("%s/%s/%d", e.InvokeID, e.InstanceID, e.Repeats)] = e
		}
	}
	return out
}

// TestPushEveryEndedRunOnce: with perfect delivery, every ECS run that ends
// in a documented status is pushed exactly once, with the truth's values,
// the token and the documented envelope; Error and Stopped runs, and SWAS
// runs, push nothing.
func TestPushEveryEndedRunOnce(t *testing.T) {
	rc := newReceiver(t)
	s := newPushServer(t, Options{Instances: 6, DispatchDelay: 200 * time.Millisecond,
		EventBridge: EventBridge{URL: rc.URL, Token: "tok"}})
	region := "cn-hangzhou"
	ids := ecsIDs(s, region)
	invoke := func(script string, timeout int64, on ...string) string {
		t.Helper()
		id, err := s.Invoke(region, on, script, timeout)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	invoke("echo hi", 60, ids[0], ids[1])      // Success ×2
	invoke("exit 3", 60, ids[2])               // Failed
	invoke("crash", 60, ids[3])                // Error: not documented, not pushed
	invoke("hang", 1, ids[4])                  // Timeout
	cancelled := invoke("echo no", 60, ids[1]) // Cancelled before dispatch
	if err := s.Account(DefaultAccount).Stop(ProductECS, region, cancelled); err != nil {
		t.Fatal(err)
	}
	stopped := invoke("sleep 30", 60, ids[0])
	terminated := invoke("sleep 30", 60, ids[5])
	waitFor(t, "the sleeps to run", func() bool { return s.status(stopped) == stRunning && s.status(terminated) == stRunning })
	if err := s.Account(DefaultAccount).Stop(ProductECS, region, stopped); err != nil { // Stopped: not pushed
		t.Fatal(err)
	}
	if err := s.SetInstance(ids[5], InstanceStopped, ""); err != nil { // Terminated
		t.Fatal(err)
	}
	late := invoke("echo late", 60, ids[5]) // Aborted: the instance is stopped
	waitFor(t, "the run on a stopped instance to abort", func() bool { return terminal(s.status(late)) })
	if err := s.SetInstance(ids[5], InstanceReleased, ""); err != nil {
		t.Fatal(err)
	}
	invoke("echo gone", 60, ids[5]) // Invalid: the instance is released
	if _, err := s.Account(DefaultAccount).InvokeSWAS(region, s.Account(DefaultAccount).Fleet()[region][ProductSWAS][:1], "echo swas", 60); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every run to end", func() bool {
		ended := 0
		for _, e := range s.Truth() {
			if e.Level == "instance" && terminal(e.To) {
				ended++
			}
		}
		return ended == 11
	})

	want := pushedTruth(s)
	if len(want) != 8 {
		t.Fatalf("truth has %d runs in pushed statuses, want 8: %v", len(want), want)
	}
	got := rc.take(t, len(want))
	st := settled(t, s, len(want))
	rc.none(t)
	if st != (PushStats{Events: 8, Sent: 8}) {
		t.Errorf("stats %+v, want 8 events, 8 sent", st)
	}
	uid := s.Account(DefaultAccount).UID()
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seenIDs := map[string]bool{}
	statuses := map[string]int{}
	for _, g := range got {
		ev, d := g.ev, g.ev.Data
		key := fmt.Sprintf("%s/%s/%d", d.InvokeID, d.InstanceID, d.Repeats)
		truth, ok := want[key]
		if !ok {
			t.Errorf("pushed %s (%s), which the truth does not end in a pushed status", key, d.InvocationStatus)
			continue
		}
		delete(want, key)
		statuses[d.InvocationStatus]++
		if d.InvocationStatus != truth.To || d.FinishTime != fmtTime(truth.Time) || ev.Time != eventTime(truth.Time) {
			t.Errorf("%s: status %s at %s (%s), truth %s at %s", key, d.InvocationStatus, d.FinishTime, ev.Time, truth.To, truth.Time)
		}
		wantExit, wantCode := "0", map[string]string{stSuccess: "", stFailed: "ExitCodeNonzero", stTimeout: "ExecutionTimeout",
			stCancelled: "", stTerminated: "InstanceNotRunning", stAborted: "InstanceNotRunning", stInvalid: "InstanceNotExists"}[d.InvocationStatus]
		if d.InvocationStatus == stFailed {
			wantExit = "3"
		}
		if d.ExitCode != wantExit || d.ErrorCode != wantCode || d.ErrorInfo != errorInfo(wantCode) {
			t.Errorf("%s %s: exitCode %q errorCode %q errorInfo %q, want %q %q", key, d.InvocationStatus, d.ExitCode, d.ErrorCode, d.ErrorInfo, wantExit, wantCode)
		}
		if _, isString := g.raw["data"].(map[string]any)["exitCode"].(string); !isString {
			t.Errorf("%s: exitCode %v is not a JSON string", key, g.raw["data"].(map[string]any)["exitCode"])
		}
		if !strings.HasPrefix(d.CommandID, "c-") || !strings.HasPrefix(d.CommandName, "casim-") {
			t.Errorf("%s: command %q %q", key, d.CommandID, d.CommandName)
		}
		if g.auth != "Bearer tok" || g.contentType != "application/cloudevents+json" {
			t.Errorf("%s: Authorization %q, Content-Type %q", key, g.auth, g.contentType)
		}
		if ev.SpecVersion != "1.0" || ev.Source != "acs.ecs" || ev.Type != TaskCompletedType || ev.DataContentType != "application/json" ||
			ev.Subject != "acs:ecs:"+region+":"+uid+":instance/"+d.InstanceID || ev.AliyunAccountID != uid || ev.AliyunOriginalAccountID != uid ||
			ev.AliyunRegionID != region || ev.AliyunEventBusName != "default" || ev.AliyunPublishAddr == "" {
			t.Errorf("%s: envelope %+v", key, ev)
		}
		if _, err := time.Parse(time.RFC3339, ev.AliyunPublishTime); err != nil {
			t.Errorf("%s: aliyunpublishtime: %v", key, err)
		}
		if !uuid.MatchString(ev.ID) || seenIDs[ev.ID] {
			t.Errorf("%s: id %q is not a fresh UUID", key, ev.ID)
		}
		seenIDs[ev.ID] = true
	}
	if len(want) > 0 {
		t.Errorf("never pushed: %v", want)
	}
	if want := map[string]int{stSuccess: 2, stFailed: 1, stTimeout: 1, stCancelled: 1, stTerminated: 1, stAborted: 1, stInvalid: 1}; fmt.Sprint(statuses) != fmt.Sprint(want) {
		t.Errorf("pushed statuses %v, want %v", statuses, want)
	}
}

// TestPushCarriesTheAccountsUID: each account's events carry its UID, the
// configured one or one derived from its name.
func TestPushCarriesTheAccountsUID(t *testing.T) {
	rc := newReceiver(t)
	s := newPushServer(t, Options{Instances: 1, UID: "1111222233334444", EventBridge: EventBridge{URL: rc.URL},
		Accounts: []Account{{Name: "prod", AccessKeyID: "LTAIprod", AccessKeySecret: "s1", UID: "5555666677778888"}, {Name: "dev", AccessKeyID: "LTAIdev", AccessKeySecret: "s2"}}})
	for _, name := range s.Accounts() {
		a := s.Account(name)
		if _, err := a.Invoke("cn-hangzhou", a.Fleet()["cn-hangzhou"][ProductECS], "echo "+name, 60); err != nil {
			t.Fatal(err)
		}
	}
	byInstance := map[string]string{}
	for _, g := range rc.take(t, 3) {
		byInstance[g.ev.Data.InstanceID] = g.ev.AliyunAccountID
	}
	dev := s.Account("dev").UID()
	if !validUID(dev) || dev != accountUID("dev") || dev == accountUID(DefaultAccount) {
		t.Errorf("derived uid of dev: %q", dev)
	}
	for name, uid := range map[string]string{DefaultAccount: "1111222233334444", "prod": "5555666677778888", "dev": dev} {
		if id := s.Account(name).Fleet()["cn-hangzhou"][ProductECS][0]; byInstance[id] != uid || s.Account(name).UID() != uid {
			t.Errorf("%s: event's aliyunaccountid %q, UID() %q, want %q", name, byInstance[id], s.Account(name).UID(), uid)
		}
	}
	if s.Account("nosuch").UID() != "" {
		t.Error("an account not served has a UID")
	}
	for _, bad := range []Options{{UID: "123"}, {UID: "12345678901234567"}, {UID: "12345678901234x6"},
		{Accounts: []Account{{Name: "prod", AccessKeyID: "a", AccessKeySecret: "sekrit", UID: "42"}}}} {
		bad.AccessKeyID, bad.AccessKeySecret = keyID, secret
		if s, err := New(bad); err == nil {
			_ = s.Close()
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestPushDropRateOneSendsNothing: every event dropped is counted, none
// sent.
func TestPushDropRateOneSendsNothing(t *testing.T) {
	rc := newReceiver(t)
	s := newPushServer(t, Options{Instances: 3, EventBridge: EventBridge{URL: rc.URL, Delivery: PushDelivery{Drop: 1}}})
	if _, err := s.Invoke("cn-hangzhou", ecsIDs(s, "cn-hangzhou"), "echo hi", 60); err != nil {
		t.Fatal(err)
	}
	st := settled(t, s, 3)
	if st != (PushStats{Events: 3, Dropped: 3}) {
		t.Errorf("stats %+v, want 3 events, 3 dropped", st)
	}
	rc.none(t)
}

// TestPushDuplicatesShareTheirID: a duplicated event is POSTed twice with
// the same id.
func TestPushDuplicatesShareTheirID(t *testing.T) {
	rc := newReceiver(t)
	s := newPushServer(t, Options{Instances: 2, EventBridge: EventBridge{URL: rc.URL, Delivery: PushDelivery{Duplicate: 1}}})
	if _, err := s.Invoke("cn-hangzhou", ecsIDs(s, "cn-hangzhou"), "echo hi", 60); err != nil {
		t.Fatal(err)
	}
	byID := map[string][]TaskCompletedData{}
	for _, g := range rc.take(t, 4) {
		byID[g.ev.ID] = append(byID[g.ev.ID], g.ev.Data)
	}
	if len(byID) != 2 {
		t.Errorf("%d distinct ids in 4 POSTs, want 2: %v", len(byID), byID)
	}
	for id, copies := range byID {
		if len(copies) != 2 || copies[0] != copies[1] {
			t.Errorf("id %s: %v, want the same data twice", id, copies)
		}
	}
	if st := settled(t, s, 2); st != (PushStats{Events: 2, Duplicated: 2, Sent: 4}) {
		t.Errorf("stats %+v, want 2 events, 2 duplicated, 4 sent", st)
	}
	rc.none(t)
}

// TestPushRetriesThenGivesUp: a failed POST is retried with backoff, and
// given up and counted after its retries.
func TestPushRetriesThenGivesUp(t *testing.T) {
	rc := newReceiver(t)
	rc.status.Store(http.StatusServiceUnavailable)
	s := newPushServer(t, Options{Instances: 1,
		EventBridge: EventBridge{URL: rc.URL, Delivery: PushDelivery{Retries: 2, Backoff: Duration(20 * time.Millisecond)}}})
	ids := ecsIDs(s, "cn-hangzhou")
	if _, err := s.Invoke("cn-hangzhou", ids, "echo one", 60); err != nil {
		t.Fatal(err)
	}
	tries := rc.take(t, 3)
	if tries[0].ev.ID != tries[2].ev.ID || tries[2].at.Sub(tries[0].at) < 60*time.Millisecond {
		t.Errorf("retries: ids %s, %s; %v apart, want the same id after 20ms + 40ms of backoff", tries[0].ev.ID, tries[2].ev.ID, tries[2].at.Sub(tries[0].at))
	}
	st := settled(t, s, 1)
	if st.Failed != 1 || st.Retried != 2 || st.Sent != 0 || !strings.Contains(st.LastError, "503") {
		t.Errorf("stats %+v, want 1 failed after 2 retries, the 503 named", st)
	}
	rc.none(t)

	// A receiver that recovers gets the event on a retry.
	rc.status.Store(http.StatusInternalServerError)
	if _, err := s.Invoke("cn-hangzhou", ids, "echo two", 60); err != nil {
		t.Fatal(err)
	}
	rc.take(t, 1)
	rc.status.Store(http.StatusOK)
	rc.take(t, 1)
	if st := settled(t, s, 2); st.Sent != 1 || st.Failed != 1 || st.Retried != 3 {
		t.Errorf("stats %+v, want 1 sent on its retry", st)
	}
}

// TestPushDelayAndReorderHoldEvents: events wait their delay and the
// reorder window before they are sent, and every one arrives.
func TestPushDelayAndReorderHoldEvents(t *testing.T) {
	rc := newReceiver(t)
	s := newPushServer(t, Options{Instances: 4, EventBridge: EventBridge{URL: rc.URL,
		Delivery: PushDelivery{Delay: Duration(100 * time.Millisecond), DelayMax: Duration(150 * time.Millisecond), Reorder: Duration(300 * time.Millisecond)}}})
	start := time.Now()
	if _, err := s.Invoke("cn-hangzhou", ecsIDs(s, "cn-hangzhou"), "echo hi", 60); err != nil {
		t.Fatal(err)
	}
	// Dispatch (50ms), the window (300ms) and the delay (100ms at least).
	for _, g := range rc.take(t, 4) {
		if waited := g.at.Sub(start); waited < 450*time.Millisecond {
			t.Errorf("%s arrived %v after the invocation, before its window and delay", g.ev.Data.InstanceID, waited)
		}
	}
	if st := settled(t, s, 4); st != (PushStats{Events: 4, Sent: 4}) {
		t.Errorf("stats %+v", st)
	}
}

// TestPushReorderShufflesAWindow: the events of one window are sent in a
// random order (the chance that twenty come in order is 1 in 20!).
func TestPushReorderShufflesAWindow(t *testing.T) {
	rc := newReceiver(t)
	p, err := newPusher(EventBridge{URL: rc.URL, Delivery: PushDelivery{Reorder: Duration(200 * time.Millisecond)}}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	go p.run()
	defer p.close()
	for i := range 20 {
		p.offer(stSuccess, func() TaskCompleted { return TaskCompleted{ID: fmt.Sprint(i)} })
	}
	var order []string
	for _, g := range rc.take(t, 20) {
		order = append(order, g.ev.ID)
	}
	var offered []string
	for i := range 20 {
		offered = append(offered, fmt.Sprint(i))
	}
	if slices.Equal(order, offered) {
		t.Errorf("sent in the order offered: %v", order)
	}
	if slices.Sort(order); !slices.Equal(order, slices.Sorted(slices.Values(offered))) {
		t.Errorf("sent %v, want each of the twenty once", order)
	}
}

// TestPushControlPlane: GET /_casim/eventbridge shows the target and the
// counts, POST changes the delivery at run time, and bad values are
// refused.
func TestPushControlPlane(t *testing.T) {
	rc := newReceiver(t)
	s := newPushServer(t, Options{Instances: 1})
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	control := func(method, body string) (int, eventBridgeState) {
		t.Helper()
		req, err := http.NewRequest(method, base+"/_casim/eventbridge", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st eventBridgeState
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, st
	}
	ids := ecsIDs(s, "cn-hangzhou")
	run := func(script string) {
		t.Helper()
		id, err := s.Invoke("cn-hangzhou", ids, script, 60)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, script+" to end", func() bool { return terminal(s.status(id)) })
	}

	code, st := control(http.MethodGet, "")
	if code != 200 || st.URL != "" || st.TokenSet || st.Retries != 3 || st.Backoff != Duration(200*time.Millisecond) ||
		!slices.Equal(st.Statuses, documentedPushStatuses()) {
		t.Errorf("GET without a target: %d %+v", code, st)
	}
	run("echo unheard")
	if st := s.PushStats(); st != (PushStats{}) {
		t.Errorf("pushed without a URL: %+v", st)
	}

	code, st = control(http.MethodPost, `{"url": "`+rc.URL+`", "token": "t2", "drop": 1}`)
	if code != 200 || st.URL != rc.URL || !st.TokenSet || st.Drop != 1 {
		t.Errorf("POST url, token, drop: %d %+v", code, st)
	}
	run("echo dropped")
	if st := settled(t, s, 1); st.Dropped != 1 || st.Sent != 0 {
		t.Errorf("after drop 1: %+v", st)
	}

	// The delivery is replaced whole; url and token stay.
	code, st = control(http.MethodPost, `{"duplicate": 1, "statuses": ["Error"]}`)
	if code != 200 || st.Drop != 0 || st.Duplicate != 1 || st.URL != rc.URL || !st.TokenSet || !slices.Equal(st.Statuses, []string{stError}) {
		t.Errorf("POST duplicate: %d %+v", code, st)
	}
	run("echo not an error")
	run("crash")
	got := rc.take(t, 2)
	settled(t, s, 2)
	if got[0].ev.ID != got[1].ev.ID || got[0].ev.Data.InvocationStatus != stError || got[0].auth != "Bearer t2" {
		t.Errorf("after duplicate 1 and statuses [Error]: %+v / %+v (%s)", got[0].ev, got[1].ev, got[0].auth)
	}
	if _, st := control(http.MethodGet, ""); st.Stats.Events != 2 || st.Stats.Sent != 2 || st.Stats.Duplicated != 1 || st.Stats.Dropped != 1 {
		t.Errorf("GET stats: %+v", st.Stats)
	}

	code, st = control(http.MethodPost, `{"url": ""}`)
	if code != 200 || st.URL != "" {
		t.Errorf("POST url \"\": %d %+v", code, st)
	}
	run("crash")
	rc.none(t)

	for _, bad := range []string{`{"drop": 2}`, `{"duplicate": -1}`, `{"delay": "2s", "delayMax": "1s"}`, `{"reorder": "-1s"}`,
		`{"statuses": ["Running"]}`, `{"url": "ftp://x"}`, `{"bogus": 1}`, `not json`} {
		if code, _ := control(http.MethodPost, bad); code != http.StatusBadRequest {
			t.Errorf("POST %s: %d, want 400", bad, code)
		}
	}
	if code, _ := control(http.MethodDelete, ""); code != http.StatusMethodNotAllowed {
		t.Errorf("DELETE: %d, want 405", code)
	}
	rc.none(t)
}

// TestPushStopsOnClose: Close returns at once with events waiting and a
// POST under way, and leaves no goroutine behind.
func TestPushStopsOnClose(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 10)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
	}))
	defer hang.Close()
	before := runtime.NumGoroutine()

	s, err := New(Options{AccessKeyID: keyID, AccessKeySecret: secret, Instances: 2,
		EventBridge: EventBridge{URL: hang.URL}})
	if err != nil {
		t.Fatal(err)
	}
	ids := ecsIDs(s, "cn-hangzhou")
	if _, err := s.Invoke("cn-hangzhou", ids[:1], "echo hangs", 60); err != nil {
		t.Fatal(err)
	}
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("no POST arrived")
	}
	if err := s.SetEventBridge(EventBridge{URL: hang.URL, Delivery: PushDelivery{Delay: Duration(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Invoke("cn-hangzhou", ids[1:], "echo waits", 60); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an event held and one under way", func() bool { return s.PushStats().Pending == 2 })
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited on the pusher")
	}
	close(release)
	waitFor(t, "the pusher's goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}
