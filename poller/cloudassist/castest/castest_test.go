package castest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

const (
	keyID  = "LTAIcastest"
	secret = "castest-secret"
)

func newServer(t *testing.T) (*Server, string) {
	t.Helper()
	return startServer(t, Options{AccessKeyID: keyID, AccessKeySecret: secret, Instances: 2, Regions: []string{"cn-hangzhou", "cn-beijing"}})
}

// startServer starts an emulator of opts on a free port, closed when the
// test ends, and returns it and its base URL.
func startServer(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, base
}

// call signs params the way the SDK does and POSTs them.
func call(t *testing.T, base string, params url.Values, key string, ts time.Time) (int, map[string]any) {
	t.Helper()
	for k, v := range map[string]string{
		"Format": "JSON", "Version": "2014-05-26", "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
		"SignatureType": "", "AccessKeyId": keyID, "RegionId": "cn-hangzhou",
		"Timestamp": ts.UTC().Format("2006-01-02T15:04:05Z"),
	} {
		if _, set := params[k]; !set {
			params.Set(k, v)
		}
	}
	if params.Get("SignatureNonce") == "" {
		params.Set("SignatureNonce", randomHex(16))
	}
	params.Del("Signature")
	params.Set("Signature", signRPC(http.MethodPost, params, key))
	req, err := http.NewRequest(http.MethodPost, base+"/?"+params.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return answer(t, req)
}

// answer sends req and returns its status and its JSON body.
func answer(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return resp.StatusCode, body
}

func TestSignatureChecks(t *testing.T) {
	_, base := newServer(t)
	list := func() url.Values { return url.Values{"Action": {"DescribeInvocations"}} }
	now := time.Now()

	if status, body := call(t, base, list(), secret, now); status != 200 || body["RequestId"] == "" {
		t.Fatalf("a good request failed: %d %v", status, body)
	}
	status, body := call(t, base, list(), "not-the-secret", now)
	if status != 400 || body["Code"] != "SignatureDoesNotMatch" || body["RequestId"] == "" || body["HostId"] == "" {
		t.Errorf("wrong secret: %d %v", status, body)
	}
	replayed := list()
	replayed.Set("SignatureNonce", "fixed-nonce")
	if status, _ := call(t, base, replayed, secret, now); status != 200 {
		t.Fatalf("first use of a nonce failed: %d", status)
	}
	replayed = list()
	replayed.Set("SignatureNonce", "fixed-nonce")
	if status, body := call(t, base, replayed, secret, now); status != 400 || body["Code"] != "SignatureNonceUsed" {
		t.Errorf("replayed nonce: %d %v", status, body)
	}
	if status, body := call(t, base, list(), secret, now.Add(-time.Hour)); status != 400 || body["Code"] != "InvalidTimeStamp.Expired" {
		t.Errorf("old timestamp: %d %v", status, body)
	}
	unknown := url.Values{"Action": {"DescribeNothing"}}
	if status, body := call(t, base, unknown, secret, now); status != 404 || body["Code"] != "InvalidAction.NotFound" {
		t.Errorf("unknown action: %d %v", status, body)
	}
}

func TestTamperedQueryIsRejected(t *testing.T) {
	_, base := newServer(t)
	params := url.Values{"Action": {"DescribeInvocations"}, "Format": {"JSON"}, "Version": {"2014-05-26"},
		"SignatureMethod": {"HMAC-SHA1"}, "SignatureVersion": {"1.0"}, "SignatureType": {""}, "AccessKeyId": {keyID},
		"RegionId": {"cn-hangzhou"}, "SignatureNonce": {randomHex(8)}, "Timestamp": {time.Now().UTC().Format("2006-01-02T15:04:05Z")}}
	params.Set("Signature", signRPC(http.MethodPost, params, secret))
	params.Set("RegionId", "cn-beijing") // changed after signing
	resp, err := http.Post(base+"/?"+params.Encode(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("tampered request: HTTP %d, want 400", resp.StatusCode)
	}
}

func TestAggregateRules(t *testing.T) {
	for _, tc := range []struct {
		runs []string
		want string
	}{
		{[]string{stPending, stRunning}, stRunning},
		{[]string{stPending, stSuccess}, stPending},
		{[]string{stStopping, stRunning}, stStopping},
		{[]string{stSuccess, stSuccess}, stSuccess},
		{[]string{stSuccess, stStopped}, stSuccess},
		{[]string{stSuccess, stCancelled}, stSuccess},
		{[]string{stSuccess, stFailed}, stPartialFailed},
		{[]string{stSuccess, stTimeout, stStopped}, stPartialFailed},
		{[]string{stFailed, stStopped}, stFailed},
		{[]string{stInvalid, stAborted, stError}, stFailed},
		{[]string{stStopped, stTerminated, stCancelled}, stStopped},
	} {
		var runs []*run
		for _, s := range tc.runs {
			runs = append(runs, &run{Status: s})
		}
		if got := aggregate(runs); got != tc.want {
			t.Errorf("aggregate(%v) = %s, want %s", tc.runs, got, tc.want)
		}
	}
}

func TestParseScript(t *testing.T) {
	for _, tc := range []struct {
		src    string
		want   plan
		output string
	}{
		{"echo hi; sleep 2; exit 3", plan{duration: 2 * time.Second, exitCode: 3}, "hi"},
		{"echo a\necho b", plan{}, "a\nb"},
		{"sleep 0.5; hang; echo never", plan{duration: 500 * time.Millisecond, hang: true}, ""},
		{"uptime", plan{exitCode: 127}, "sh: uptime: command not found"},
		{"nosuch; echo ok", plan{}, "sh: nosuch: command not found\nok"},
		{"sleep x", plan{exitCode: 1}, "sleep: invalid time interval 'x'"},
		{"exit", plan{}, ""},
		{`printf 'a\tb\n'; echo c`, plan{}, "a\tb\nc"},
		{`echo a; printf "b"`, plan{}, "a\nb"},
		{`printf '\0\x00\101\0101\xff\xfe\e[31mred\e[0m%%d%s\\'`, plan{}, "\x00\x00AA\xff\xfe\x1b[31mred\x1b[0m%d%s\\"},
		{`printf`, plan{exitCode: 2}, "printf: usage: printf format [arguments]"},
		{"head -c 3 /dev/zero", plan{}, "\x00\x00\x00"},
		{"head -c 5", plan{}, ""},
		{"head -c x /dev/zero", plan{exitCode: 1}, "head: invalid number of bytes: 'x'"},
		{"head -c 2 /etc/passwd", plan{exitCode: 1}, "head: cannot open '/etc/passwd' for reading: No such file or directory"},
		{"yes ab | head -c 7", plan{}, "ab\nab\na"},
		{"yes | head -c 4; exit 3", plan{exitCode: 3}, "y\ny\n"},
		{"yes", plan{exitCode: 2}, "sh: yes: casim runs yes only as: yes [TEXT] | head -c N"},
	} {
		got := parseScript(tc.src)
		if got.duration != tc.want.duration || got.exitCode != tc.want.exitCode || got.hang != tc.want.hang || got.output != tc.output {
			t.Errorf("parseScript(%q) = %+v, want %+v output %q", tc.src, got, tc.want, tc.output)
		}
	}
}

func TestControlPlaneAndTruth(t *testing.T) {
	s, base := newServer(t)
	resp, err := http.Get(base + "/_casim/instances")
	if err != nil {
		t.Fatal(err)
	}
	var fleet []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&fleet); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(fleet) != 8 { // 2 per product and region
		t.Fatalf("fleet has %d instances, want 8", len(fleet))
	}
	var ecsID string
	for _, inst := range fleet {
		if inst["instanceId"] == "" || inst["regionId"] == "" || (inst["product"] != "ecs" && inst["product"] != "swas") {
			t.Errorf("bad instance %v", inst)
		}
		if inst["product"] == "ecs" && inst["regionId"] == "cn-hangzhou" && ecsID == "" {
			ecsID = inst["instanceId"].(string)
		}
	}

	// A run on an instance whose agent is down is aborted.
	post := func(path, body string) int {
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("/_casim/instances/"+ecsID, `{"agent":"NotRunning"}`); code != http.StatusNoContent {
		t.Fatalf("control POST: %d", code)
	}
	if code := post("/_casim/instances/"+ecsID, `{"status":"Exploded"}`); code != http.StatusBadRequest {
		t.Errorf("bad status accepted: %d", code)
	}
	params := url.Values{"Action": {"RunCommand"}, "Type": {"RunShellScript"}, "CommandContent": {"echo hi"}, "InstanceId.1": {ecsID}}
	status, body := call(t, base, params, secret, time.Now())
	if status != 200 {
		t.Fatalf("RunCommand: %d %v", status, body)
	}
	invokeID := body["InvokeId"].(string)
	deadline := time.Now().Add(5 * time.Second)
	var lines []TruthEntry
	for {
		resp, err := http.Get(base + "/_casim/truth")
		if err != nil {
			t.Fatal(err)
		}
		lines = lines[:0]
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var e TruthEntry
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("truth line %q: %v", sc.Text(), err)
			}
			if !bytes.Contains(sc.Bytes(), []byte(`"time":"`)) || !bytes.Contains(sc.Bytes(), []byte(`"instanceId":`)) {
				t.Fatalf("truth line lacks a field: %s", sc.Text())
			}
			lines = append(lines, e)
		}
		resp.Body.Close()
		if len(lines) == 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := []TruthEntry{
		{Level: "instance", InstanceID: ecsID, From: "", To: stPending},
		{Level: "invocation", From: "", To: stPending},
		{Level: "instance", InstanceID: ecsID, From: stPending, To: stAborted},
		{Level: "invocation", From: stPending, To: stFailed},
	}
	if len(lines) != len(want) {
		t.Fatalf("truth = %+v", lines)
	}
	for i, w := range want {
		got := lines[i]
		if got.Level != w.Level || got.InstanceID != w.InstanceID || got.From != w.From || got.To != w.To ||
			got.InvokeID != invokeID || got.Product != "ecs" || got.Region != "cn-hangzhou" || got.Time.IsZero() {
			t.Errorf("truth[%d] = %+v, want %+v", i, got, w)
		}
	}
	if lines[2].Time.Sub(lines[0].Time) != s.opts.DispatchDelay {
		t.Errorf("the abort happened %v after creation, want exactly the dispatch delay", lines[2].Time.Sub(lines[0].Time))
	}
}

func TestSaveAndLoadState(t *testing.T) {
	s, _ := newServer(t)
	ids := []string{}
	for _, inst := range s.Instances() {
		if inst.Product == ProductECS && inst.Region == "cn-hangzhou" {
			ids = append(ids, inst.ID)
		}
	}
	done, e := s.createInvocation(ProductECS, "cn-hangzhou", ids, invocationSpec{Type: "RunShellScript", Content: "exit 0", Timeout: 60})
	if e != nil {
		t.Fatal(e)
	}
	pending, e := s.createInvocation(ProductECS, "cn-hangzhou", ids[:1], invocationSpec{Type: "RunShellScript", Content: "sleep 0.3", Timeout: 60})
	if e != nil {
		t.Fatal(e)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.status(done.InvokeID) != stSuccess && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var buf bytes.Buffer
	if err := s.SaveState(&buf); err != nil {
		t.Fatal(err)
	}
	restored, err := New(Options{AccessKeyID: keyID, AccessKeySecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	if err := restored.LoadState(&buf); err != nil {
		t.Fatal(err)
	}
	if got := restored.status(done.InvokeID); got != stSuccess {
		t.Errorf("restored finished invocation is %q", got)
	}
	for restored.status(pending.InvokeID) != stSuccess && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := restored.status(pending.InvokeID); got != stSuccess {
		t.Errorf("restored running invocation did not finish: %q", got)
	}
	if err := restored.LoadState(strings.NewReader("{not json")); err == nil {
		t.Error("LoadState accepted garbage")
	}
}

func (s *Server) status(invokeID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance(s.opts.Now())
	if inv, ok := s.byID[invokeID]; ok {
		return inv.Status
	}
	return ""
}

func TestScriptsPrintLargeAndBinaryOutput(t *testing.T) {
	if got := parseScript("yes 0123456789abcde | head -c 36864").output; len(got) != 36864 || got[:32] != "0123456789abcde\n0123456789abcde\n" {
		t.Errorf("yes | head -c 36864: %d bytes, starting %q", len(got), got[:min(32, len(got))])
	}
	a, b := parseScript("head -c 4096 /dev/urandom").output, parseScript("head -c 4096 /dev/urandom").output
	if len(a) != 4096 || a != b {
		t.Errorf("/dev/urandom: %d bytes; the same twice: %v", len(a), a == b)
	}
	if utf8.ValidString(a) {
		t.Error("4 KiB of /dev/urandom is valid UTF-8")
	}
	if got := parseScript(fmt.Sprintf("head -c %d /dev/zero", maxPrinted+1)); got.exitCode != 1 || got.output == "" {
		t.Errorf("head beyond the limit: %+v", got)
	}
}
