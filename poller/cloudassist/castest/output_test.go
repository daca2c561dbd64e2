package castest

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	swas "github.com/aliyun/alibaba-cloud-sdk-go/services/swas-open"
)

// Scripts whose output the tests check, and what they print.
const (
	largeScript  = "yes 0123456789abcde | head -c 36864" // 36 KB: 24 KB shown, 12 KB dropped
	binaryScript = `printf 'ok\0\xff\xfe\e[31mred\e[0m\n'`
	binaryOutput = "ok\x00\xff\xfe\x1b[31mred\x1b[0m\n"
)

// largeOutput is what largeScript prints.
func largeOutput() string { return strings.Repeat("0123456789abcde\n", 36864/16) }

// resultsOf lists the results of one invocation through the SDK, in
// encoding ("" for the default).
func (c sdkClients) resultsOf(t *testing.T, invokeID, encoding string) []ecs.InvocationResult {
	t.Helper()
	req := ecs.CreateDescribeInvocationResultsRequest()
	req.InvokeId, req.ContentEncoding, req.MaxResults = invokeID, encoding, requests.NewInteger(50)
	resp, err := c.ecs.DescribeInvocationResults(req)
	if err != nil {
		t.Fatalf("DescribeInvocationResults %s: %v", invokeID, err)
	}
	return resp.Invocation.InvocationResults.InvocationResult
}

// finished waits until the invocations are over.
func finished(t *testing.T, s *Server, invokeIDs ...string) {
	t.Helper()
	waitFor(t, "the invocations to finish", func() bool {
		for _, id := range invokeIDs {
			if !terminal(s.status(id)) {
				return false
			}
		}
		return true
	})
}

// DescribeInvocationResults sends each run's output Base64 unless asked
// for PlainText, cut at 24 KB with the rest counted in Dropped (seed 002),
// and refuses an encoding it does not know.
func TestResultsOutputIsEncodedAndCut(t *testing.T) {
	s, base := newServer(t)
	c := newSDK(t, base, "cn-hangzhou", nil)
	ids := ecsIDs(s, "cn-hangzhou")
	large, binary, short := c.runECS(t, largeScript, "", "", ids[0]), c.runECS(t, binaryScript, "", "", ids[0]), c.runECS(t, `printf '15:30:01\n'`, "", "", ids[1])
	finished(t, s, large, binary, short)

	full := largeOutput()
	for _, encoding := range []string{"", "Base64"} {
		r := c.resultsOf(t, large, encoding)[0]
		raw, err := base64.StdEncoding.DecodeString(r.Output)
		if err != nil || string(raw) != full[:maxOutput] || r.Dropped != len(full)-maxOutput {
			t.Errorf("%q: large output: %d bytes (%v), Dropped %d; want the first %d bytes, Dropped %d",
				encoding, len(raw), err, r.Dropped, maxOutput, len(full)-maxOutput)
		}
		r = c.resultsOf(t, binary, encoding)[0]
		if raw, err := base64.StdEncoding.DecodeString(r.Output); err != nil || string(raw) != binaryOutput || r.Dropped != 0 {
			t.Errorf("%q: binary output %q (%v), Dropped %d; want %q", encoding, raw, err, r.Dropped, binaryOutput)
		}
		if r := c.resultsOf(t, short, encoding)[0]; r.Output != "MTU6MzA6MDEK" || r.Dropped != 0 { // seed 002's sample
			t.Errorf("%q: short output %q, Dropped %d", encoding, r.Output, r.Dropped)
		}
	}
	if r := c.resultsOf(t, large, "PlainText")[0]; r.Output != full[:maxOutput] || r.Dropped != len(full)-maxOutput {
		t.Errorf("PlainText large output: %d bytes, Dropped %d", len(r.Output), r.Dropped)
	}
	// JSON text cannot carry invalid UTF-8: those bytes arrive as U+FFFD,
	// the rest (NUL, ANSI escapes) as they are.
	if r := c.resultsOf(t, binary, "PlainText")[0]; r.Output != "ok\x00\ufffd\ufffd\x1b[31mred\x1b[0m\n" || !utf8.ValidString(r.Output) {
		t.Errorf("PlainText binary output %q", r.Output)
	}

	req := ecs.CreateDescribeInvocationResultsRequest()
	req.InvokeId, req.ContentEncoding = large, "Hex"
	_, err := c.ecs.DescribeInvocationResults(req)
	if se := serverError(t, err); se.HttpStatus() != http.StatusBadRequest || se.ErrorCode() != "InvalidParameter.ContentEncoding" {
		t.Errorf("ContentEncoding=Hex: %d %s", se.HttpStatus(), se.ErrorCode())
	}
}

// DescribeInvocations sends each instance's Output and Dropped only with
// IncludeOutput=true, which needs InvokeId or InstanceId, in either
// encoding; CommandContent follows the same encoding.
func TestDescribeInvocationsIncludeOutput(t *testing.T) {
	s, base := newServer(t)
	c := newSDK(t, base, "cn-hangzhou", nil)
	ids := ecsIDs(s, "cn-hangzhou")
	large := c.runECS(t, largeScript, "", "", ids...)
	finished(t, s, large)
	full := largeOutput()

	describe := func(mutate func(*ecs.DescribeInvocationsRequest)) (*ecs.DescribeInvocationsResponse, error) {
		req := ecs.CreateDescribeInvocationsRequest()
		mutate(req)
		return c.ecs.DescribeInvocations(req)
	}
	for _, tc := range []struct {
		name, encoding string
		mutate         func(*ecs.DescribeInvocationsRequest)
	}{
		{"by invoke id, Base64 by default", "", func(r *ecs.DescribeInvocationsRequest) { r.InvokeId = large }},
		{"by invoke id, Base64", "Base64", func(r *ecs.DescribeInvocationsRequest) { r.InvokeId, r.ContentEncoding = large, "Base64" }},
		{"by instance, PlainText", "PlainText", func(r *ecs.DescribeInvocationsRequest) { r.InstanceId, r.ContentEncoding = ids[1], "PlainText" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := describe(func(r *ecs.DescribeInvocationsRequest) { tc.mutate(r); r.IncludeOutput = requests.NewBoolean(true) })
			if err != nil {
				t.Fatal(err)
			}
			if n := len(resp.Invocations.Invocation); n != 1 {
				t.Fatalf("%d invocations", n)
			}
			inv := resp.Invocations.Invocation[0]
			decode := func(s string) string {
				if tc.encoding == "PlainText" {
					return s
				}
				raw, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					t.Fatalf("not Base64: %q", s[:min(len(s), 40)])
				}
				return string(raw)
			}
			if got := decode(inv.CommandContent); got != largeScript {
				t.Errorf("CommandContent %q", got)
			}
			if n := len(inv.InvokeInstances.InvokeInstance); n != len(ids) {
				t.Fatalf("%d instances, want %d", n, len(ids))
			}
			for _, ii := range inv.InvokeInstances.InvokeInstance {
				if got := decode(ii.Output); got != full[:maxOutput] || ii.Dropped != len(full)-maxOutput {
					t.Errorf("%s: Output of %d bytes, Dropped %d", ii.InstanceId, len(got), ii.Dropped)
				}
			}
		})
	}

	resp, err := describe(func(r *ecs.DescribeInvocationsRequest) { r.InvokeId = large })
	if err != nil {
		t.Fatal(err)
	}
	for _, ii := range resp.Invocations.Invocation[0].InvokeInstances.InvokeInstance {
		if ii.Output != "" || ii.Dropped != 0 {
			t.Errorf("without IncludeOutput: Output of %d bytes, Dropped %d", len(ii.Output), ii.Dropped)
		}
	}
	_, err = describe(func(r *ecs.DescribeInvocationsRequest) { r.IncludeOutput = requests.NewBoolean(true) })
	if se := serverError(t, err); se.HttpStatus() != http.StatusBadRequest || se.ErrorCode() != "MissingParameter.InvokeIdOrInstanceId" {
		t.Errorf("IncludeOutput without InvokeId or InstanceId: %d %s", se.HttpStatus(), se.ErrorCode())
	}
	_, err = describe(func(r *ecs.DescribeInvocationsRequest) { r.InvokeId, r.ContentEncoding = large, "base64" })
	if se := serverError(t, err); se.HttpStatus() != http.StatusBadRequest || se.ErrorCode() != "InvalidParameter.ContentEncoding" {
		t.Errorf("ContentEncoding=base64: %d %s", se.HttpStatus(), se.ErrorCode())
	}
}

// SWAS sends Output as the command's plain text (seed 003: "The command
// output.", example "OutputMsg"), with no ContentEncoding to ask for and
// no Dropped, cut at the same 24 KB.
func TestSWASOutputIsPlainText(t *testing.T) {
	s, base := newServer(t)
	c := newSDK(t, base, "cn-hangzhou", nil)
	sids := swasIDs(s, "cn-hangzhou")
	invoke := func(script, instance string) string {
		req := swas.CreateRunCommandRequest()
		req.Type, req.CommandContent, req.InstanceId = "RunShellScript", script, instance
		resp, err := c.swas.RunCommand(req)
		if err != nil {
			t.Fatalf("RunCommand: %v", err)
		}
		return resp.InvokeId
	}
	type run struct{ script, output string }
	want := map[string]run{}
	for _, r := range []struct {
		run
		instance string
	}{
		{run{"echo OutputMsg", "OutputMsg"}, sids[0]},
		{run{`printf 'a\tb\n\e[1mbold\e[0m\0'`, "a\tb\n\x1b[1mbold\x1b[0m\x00"}, sids[0]},
		{run{largeScript, largeOutput()[:maxOutput]}, sids[1]},
	} {
		want[invoke(r.script, r.instance)] = r.run
	}
	for id := range want {
		finished(t, s, id)
	}
	req := swas.CreateDescribeCommandInvocationsRequest()
	req.PageSize = "50"
	resp, err := c.swas.DescribeCommandInvocations(req)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.CommandInvocations); n != len(want) {
		t.Fatalf("%d invocations, want %d", n, len(want))
	}
	for _, cmd := range resp.CommandInvocations {
		w := want[cmd.InvokeId]
		if out := cmd.InvokeInstances[0].Output; out != w.output {
			t.Errorf("%s: Output %q…, want %q…", cmd.InvokeId, out[:min(len(out), 40)], w.output[:min(len(w.output), 40)])
		}
		if cmd.CommandContent != w.script {
			t.Errorf("%s: CommandContent %q, want the plain script %q", cmd.InvokeId, cmd.CommandContent, w.script)
		}
	}
	var raw struct {
		CommandInvocations []struct {
			InvokeInstances []map[string]json.RawMessage
		}
	}
	if err := json.Unmarshal(resp.GetHttpContentBytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range raw.CommandInvocations {
		for _, ii := range cmd.InvokeInstances {
			for _, field := range []string{"Dropped", "ContentEncoding", "OssOutputDelivery", "OssOutputStatus", "OssOutputUri"} {
				if _, ok := ii[field]; ok {
					t.Errorf("SWAS InvokeInstance has %s, which seed 003 does not document", field)
				}
			}
		}
	}
}
