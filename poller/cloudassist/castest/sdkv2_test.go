package castest

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	openapi "github.com/alibabacloud-go/darabonba-openapi/v2/client"
	openapiutil "github.com/alibabacloud-go/darabonba-openapi/v2/utils"
	ecs "github.com/alibabacloud-go/ecs-20140526/v7/client"
	"github.com/alibabacloud-go/tea/dara"
	"github.com/alibabacloud-go/tea/tea"
)

// The V2 SDKs (alibabacloud-go/*, @alicloud/* on npm) sign with
// ACS3-HMAC-SHA256 by default: these tests use the real Go one, with its
// defaults, against casim over HTTP.

const (
	stsKeyID  = "STS.castestv2"
	stsSecret = "sts-secret"
	stsToken  = "CAIScastest-token"
)

// newV2Server is an emulator with the default account and an STS one.
func newV2Server(t *testing.T) (*Server, string) {
	t.Helper()
	return startServer(t, Options{AccessKeyID: keyID, AccessKeySecret: secret, Instances: 2,
		Accounts: []Account{{Name: "sts", AccessKeyID: stsKeyID, AccessKeySecret: stsSecret, SecurityToken: stsToken}}})
}

// ecsIDs are the account's ECS instances in cn-hangzhou.
func (a AccountHandle) ecsIDs() []string {
	var ids []string
	for _, inst := range a.Instances() {
		if inst.Product == ProductECS && inst.Region == "cn-hangzhou" {
			ids = append(ids, inst.ID)
		}
	}
	return ids
}

// v2Config is the V2 SDK's configuration for casim: its defaults, but the
// endpoint and plain HTTP.
func v2Config(base, id, key, token string) *openapi.Config {
	cfg := &openapi.Config{AccessKeyId: dara.String(id), AccessKeySecret: dara.String(key),
		Endpoint: dara.String(strings.TrimPrefix(base, "http://")), Protocol: dara.String("HTTP"), RegionId: dara.String("cn-hangzhou")}
	if token != "" {
		cfg.SecurityToken = dara.String(token)
	}
	return cfg
}

func newV2ECS(t *testing.T, base, id, key, token string) *ecs.Client {
	t.Helper()
	c, err := ecs.NewClient(v2Config(base, id, key, token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// v2Code is the API error code of a V2 SDK error, or "" for another error.
func v2Code(err error) string {
	var old *tea.SDKError // what the product clients return
	if errors.As(err, &old) {
		return tea.StringValue(old.Code)
	}
	var coded interface{ GetCode() *string } // the generic client's errors
	if errors.As(err, &coded) {
		return dara.StringValue(coded.GetCode())
	}
	return ""
}

func wantV2Code(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := v2Code(err); got != code {
		t.Errorf("%s: want %s, got %v", what, code, err)
	}
}

// v2Output waits for invokeID to end and returns its instances' outputs,
// as DescribeInvocations shows them with IncludeOutput and PlainText.
func v2Output(t *testing.T, c *ecs.Client, invokeID string) (string, []*ecs.DescribeInvocationsResponseBodyInvocationsInvocationInvokeInstancesInvokeInstance) {
	t.Helper()
	var inv *ecs.DescribeInvocationsResponseBodyInvocationsInvocation
	waitFor(t, invokeID+" to end", func() bool {
		resp, err := c.DescribeInvocations(&ecs.DescribeInvocationsRequest{RegionId: dara.String("cn-hangzhou"),
			InvokeId: dara.String(invokeID), IncludeOutput: dara.Bool(true), ContentEncoding: dara.String("PlainText")})
		if err != nil {
			t.Fatalf("DescribeInvocations: %v", err)
		}
		if n := len(resp.Body.Invocations.Invocation); n != 1 {
			t.Fatalf("DescribeInvocations %s: %d invocations", invokeID, n)
		}
		inv = resp.Body.Invocations.Invocation[0]
		return terminal(dara.StringValue(inv.InvocationStatus))
	})
	return dara.StringValue(inv.InvocationStatus), inv.InvokeInstances.InvokeInstance
}

func TestV2SDKRunCommandOutputAndResults(t *testing.T) {
	s, base := newV2Server(t)
	c := newV2ECS(t, base, keyID, secret, "")
	ids := s.Account(DefaultAccount).ecsIDs()
	run, err := c.RunCommand(&ecs.RunCommandRequest{RegionId: dara.String("cn-hangzhou"), Type: dara.String("RunShellScript"),
		CommandContent: dara.String("echo hello v3"), ContentEncoding: dara.String("PlainText"), InstanceId: dara.StringSlice(ids),
		Timeout: dara.Int64(60)})
	if err != nil {
		t.Fatalf("RunCommand: %v", err)
	}
	invokeID := dara.StringValue(run.Body.InvokeId)
	status, instances := v2Output(t, c, invokeID)
	if status != stSuccess || len(instances) != len(ids) {
		t.Fatalf("invocation %s: %s on %d instances, want Success on %d", invokeID, status, len(instances), len(ids))
	}
	for _, ii := range instances {
		if got := dara.StringValue(ii.Output); got != "hello v3" {
			t.Errorf("%s output %q, want plain text %q", dara.StringValue(ii.InstanceId), got, "hello v3")
		}
	}
	res, err := c.DescribeInvocationResults(&ecs.DescribeInvocationResultsRequest{RegionId: dara.String("cn-hangzhou"),
		InvokeId: dara.String(invokeID), ContentEncoding: dara.String("PlainText")})
	if err != nil {
		t.Fatalf("DescribeInvocationResults: %v", err)
	}
	rows := res.Body.Invocation.InvocationResults.InvocationResult
	if len(rows) != len(ids) {
		t.Fatalf("DescribeInvocationResults: %d rows, want %d", len(rows), len(ids))
	}
	for _, r := range rows {
		if dara.StringValue(r.Output) != "hello v3" || dara.StringValue(r.InvocationStatus) != stSuccess {
			t.Errorf("result row %s: %s %q", dara.StringValue(r.InstanceId), dara.StringValue(r.InvocationStatus), dara.StringValue(r.Output))
		}
	}
}

func TestV2SDKPagingWithNextToken(t *testing.T) {
	s, base := newV2Server(t)
	c := newV2ECS(t, base, keyID, secret, "")
	ids := s.Account(DefaultAccount).ecsIDs()
	want := map[string]bool{}
	for range 5 {
		run, err := c.RunCommand(&ecs.RunCommandRequest{RegionId: dara.String("cn-hangzhou"), Type: dara.String("RunShellScript"),
			CommandContent: dara.String("echo paged"), ContentEncoding: dara.String("PlainText"), InstanceId: dara.StringSlice(ids[:1])})
		if err != nil {
			t.Fatalf("RunCommand: %v", err)
		}
		want[dara.StringValue(run.Body.InvokeId)] = true
	}
	seen := map[string]bool{}
	token, pages := "", 0
	for {
		req := &ecs.DescribeInvocationsRequest{RegionId: dara.String("cn-hangzhou"), MaxResults: dara.Int32(2)}
		if token != "" {
			req.NextToken = dara.String(token)
		}
		resp, err := c.DescribeInvocations(req)
		if err != nil {
			t.Fatalf("DescribeInvocations page %d: %v", pages+1, err)
		}
		pages++
		for _, inv := range resp.Body.Invocations.Invocation {
			seen[dara.StringValue(inv.InvokeId)] = true
		}
		if token = dara.StringValue(resp.Body.NextToken); token == "" || pages > 10 {
			break
		}
	}
	if pages != 3 || len(seen) != len(want) {
		t.Fatalf("paged %d times and saw %d invocations, want 3 pages and %d", pages, len(seen), len(want))
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("paging missed %s", id)
		}
	}
	// DescribeInvocationResults pages the same way, one row per instance run.
	first, err := c.DescribeInvocationResults(&ecs.DescribeInvocationResultsRequest{RegionId: dara.String("cn-hangzhou"), MaxResults: dara.Int32(4)})
	if err != nil {
		t.Fatalf("DescribeInvocationResults: %v", err)
	}
	next := dara.StringValue(first.Body.Invocation.NextToken)
	rest, err := c.DescribeInvocationResults(&ecs.DescribeInvocationResultsRequest{RegionId: dara.String("cn-hangzhou"), MaxResults: dara.Int32(4),
		NextToken: dara.String(next)})
	if err != nil {
		t.Fatalf("DescribeInvocationResults with NextToken: %v", err)
	}
	if n := len(first.Body.Invocation.InvocationResults.InvocationResult) + len(rest.Body.Invocation.InvocationResults.InvocationResult); next == "" || n != 5 {
		t.Errorf("results in two pages: %d rows (token %q), want 5", n, next)
	}
}

func TestV2SDKCommandLifecycle(t *testing.T) {
	s, base := newV2Server(t)
	c := newV2ECS(t, base, keyID, secret, "")
	region := dara.String("cn-hangzhou")
	ids := s.Account(DefaultAccount).ecsIDs()
	created, err := c.CreateCommand(&ecs.CreateCommandRequest{RegionId: region, Name: dara.String("greet"), Type: dara.String("RunShellScript"),
		CommandContent: dara.String(base64.StdEncoding.EncodeToString([]byte("echo hello {{who}}"))), EnableParameter: dara.Bool(true),
		Timeout: dara.Int64(30)})
	if err != nil {
		t.Fatalf("CreateCommand: %v", err)
	}
	cmdID := dara.StringValue(created.Body.CommandId)
	if _, err := c.ModifyCommand(&ecs.ModifyCommandRequest{RegionId: region, CommandId: dara.String(cmdID), Name: dara.String("greet-v2"),
		Description: dara.String("says hello")}); err != nil {
		t.Fatalf("ModifyCommand: %v", err)
	}
	invoked, err := c.InvokeCommand(&ecs.InvokeCommandRequest{RegionId: region, CommandId: dara.String(cmdID), InstanceId: dara.StringSlice(ids),
		Parameters: map[string]any{"who": "world"}})
	if err != nil {
		t.Fatalf("InvokeCommand: %v", err)
	}
	invokeID := dara.StringValue(invoked.Body.InvokeId)
	status, instances := v2Output(t, c, invokeID)
	if status != stSuccess || len(instances) != len(ids) || dara.StringValue(instances[0].Output) != "hello world" {
		t.Fatalf("InvokeCommand's invocation: %s on %d instances, output %q", status, len(instances), dara.StringValue(instances[0].Output))
	}
	listed, err := c.DescribeInvocations(&ecs.DescribeInvocationsRequest{RegionId: region, CommandId: dara.String(cmdID)})
	if err != nil || len(listed.Body.Invocations.Invocation) != 1 || dara.StringValue(listed.Body.Invocations.Invocation[0].CommandName) != "greet-v2" {
		t.Fatalf("DescribeInvocations by CommandId: %v %v", listed, err)
	}
	cmds, err := c.DescribeCommands(&ecs.DescribeCommandsRequest{RegionId: region, CommandId: dara.String(cmdID), ContentEncoding: dara.String("PlainText")})
	if err != nil {
		t.Fatalf("DescribeCommands: %v", err)
	}
	if got := cmds.Body.Commands.Command; len(got) != 1 || dara.StringValue(got[0].Name) != "greet-v2" || dara.StringValue(got[0].Description) != "says hello" ||
		dara.StringValue(got[0].CommandContent) != "echo hello {{who}}" || dara.Int32Value(got[0].InvokeTimes) != 1 ||
		len(got[0].ParameterNames.ParameterName) != 1 || dara.StringValue(got[0].ParameterNames.ParameterName[0]) != "who" {
		t.Fatalf("DescribeCommands: %s", dara.Prettify(cmds.Body))
	}
	st, err := c.DescribeCloudAssistantStatus(&ecs.DescribeCloudAssistantStatusRequest{RegionId: region, InstanceId: dara.StringSlice(ids[:1])})
	if err != nil {
		t.Fatalf("DescribeCloudAssistantStatus: %v", err)
	}
	if got := st.Body.InstanceCloudAssistantStatusSet.InstanceCloudAssistantStatus; len(got) != 1 ||
		dara.StringValue(got[0].CloudAssistantStatus) != "true" || dara.Int64Value(got[0].InvocationCount) != 1 || dara.Int64Value(got[0].ActiveTaskCount) != 0 {
		t.Fatalf("DescribeCloudAssistantStatus: %s", dara.Prettify(st.Body))
	}
	if _, err := c.DeleteCommand(&ecs.DeleteCommandRequest{RegionId: region, CommandId: dara.String(cmdID)}); err != nil {
		t.Fatalf("DeleteCommand: %v", err)
	}
	_, err = c.InvokeCommand(&ecs.InvokeCommandRequest{RegionId: region, CommandId: dara.String(cmdID), InstanceId: dara.StringSlice(ids)})
	wantV2Code(t, "InvokeCommand of a deleted command", err, "InvalidCmdId.NotFound")
	_, err = c.DeleteCommand(&ecs.DeleteCommandRequest{RegionId: region})
	wantV2Code(t, "DeleteCommand without CommandId", err, "MissingParameter.CommandId")
	// Paging of DescribeCommands by NextToken.
	for _, name := range []string{"a", "b", "c"} {
		if _, err := c.CreateCommand(&ecs.CreateCommandRequest{RegionId: region, Name: dara.String(name), Type: dara.String("RunShellScript"),
			CommandContent: dara.String("echo " + name), ContentEncoding: dara.String("PlainText")}); err != nil {
			t.Fatalf("CreateCommand %s: %v", name, err)
		}
	}
	page1, err := c.DescribeCommands(&ecs.DescribeCommandsRequest{RegionId: region, MaxResults: dara.Int32(2)})
	if err != nil || dara.StringValue(page1.Body.NextToken) == "" || len(page1.Body.Commands.Command) != 2 {
		t.Fatalf("DescribeCommands page 1: %v %v", page1, err)
	}
	page2, err := c.DescribeCommands(&ecs.DescribeCommandsRequest{RegionId: region, MaxResults: dara.Int32(2), NextToken: page1.Body.NextToken})
	if err != nil || dara.StringValue(page2.Body.NextToken) != "" || len(page2.Body.Commands.Command) != 1 ||
		dara.StringValue(page2.Body.Commands.Command[0].Name) != "a" {
		t.Fatalf("DescribeCommands page 2: %v %v", page2, err)
	}
}

func TestV2SDKSecurityTokenAndErrors(t *testing.T) {
	s, base := newV2Server(t)
	region := dara.String("cn-hangzhou")
	sts := newV2ECS(t, base, stsKeyID, stsSecret, stsToken)
	stsIDs := s.Account("sts").ecsIDs()
	run, err := sts.RunCommand(&ecs.RunCommandRequest{RegionId: region, Type: dara.String("RunShellScript"),
		CommandContent: dara.String("exit 3"), ContentEncoding: dara.String("PlainText"), InstanceId: dara.StringSlice(stsIDs[:1])})
	if err != nil {
		t.Fatalf("RunCommand with an STS token: %v", err)
	}
	if status, _ := v2Output(t, sts, dara.StringValue(run.Body.InvokeId)); status != stFailed {
		t.Errorf("exit 3 ended %s, want Failed", status)
	}
	_, err = newV2ECS(t, base, stsKeyID, stsSecret, "CAISanother").DescribeInvocations(&ecs.DescribeInvocationsRequest{RegionId: region})
	wantV2Code(t, "another STS token", err, "InvalidSecurityToken.MismatchWithAccessKey")
	_, err = newV2ECS(t, base, stsKeyID, stsSecret, "").DescribeInvocations(&ecs.DescribeInvocationsRequest{RegionId: region})
	wantV2Code(t, "no STS token", err, "InvalidSecurityToken.Malformed")

	c := newV2ECS(t, base, keyID, secret, "")
	_, err = c.RunCommand(&ecs.RunCommandRequest{RegionId: region, Type: dara.String("RunShellScript"),
		CommandContent: dara.String("echo"), InstanceId: dara.StringSlice([]string{"i-nosuch"})})
	wantV2Code(t, "RunCommand on an unknown instance", err, "InvalidInstance.NotFound")
	_, err = c.DescribeInvocations(&ecs.DescribeInvocationsRequest{RegionId: region, ContentEncoding: dara.String("Rot13")})
	wantV2Code(t, "an unknown ContentEncoding", err, "InvalidParameter.ContentEncoding")
	_, err = newV2ECS(t, base, "LTAInosuch", secret, "").DescribeInvocations(&ecs.DescribeInvocationsRequest{RegionId: region})
	wantV2Code(t, "an unknown access key", err, "InvalidAccessKeyId.NotFound")
}

// TestV2SDKWrongSecret makes every call the tests above make with a wrong
// secret: each fails with SignatureDoesNotMatch, before anything is done.
func TestV2SDKWrongSecret(t *testing.T) {
	s, base := newV2Server(t)
	region := dara.String("cn-hangzhou")
	ids := dara.StringSlice(s.Account(DefaultAccount).ecsIDs())
	calls := map[string]func(c *ecs.Client) error{
		"RunCommand": func(c *ecs.Client) error {
			_, err := c.RunCommand(&ecs.RunCommandRequest{RegionId: region, Type: dara.String("RunShellScript"), CommandContent: dara.String("echo"), InstanceId: ids})
			return err
		},
		"DescribeInvocations": func(c *ecs.Client) error {
			_, err := c.DescribeInvocations(&ecs.DescribeInvocationsRequest{RegionId: region, IncludeOutput: dara.Bool(true), InstanceId: ids[0]})
			return err
		},
		"DescribeInvocationResults": func(c *ecs.Client) error {
			_, err := c.DescribeInvocationResults(&ecs.DescribeInvocationResultsRequest{RegionId: region, MaxResults: dara.Int32(10)})
			return err
		},
		"CreateCommand": func(c *ecs.Client) error {
			_, err := c.CreateCommand(&ecs.CreateCommandRequest{RegionId: region, Name: dara.String("x"), Type: dara.String("RunShellScript"), CommandContent: dara.String("ZWNobw==")})
			return err
		},
		"InvokeCommand": func(c *ecs.Client) error {
			_, err := c.InvokeCommand(&ecs.InvokeCommandRequest{RegionId: region, CommandId: dara.String("c-x"), InstanceId: ids})
			return err
		},
		"DescribeCommands": func(c *ecs.Client) error {
			_, err := c.DescribeCommands(&ecs.DescribeCommandsRequest{RegionId: region})
			return err
		},
		"ModifyCommand": func(c *ecs.Client) error {
			_, err := c.ModifyCommand(&ecs.ModifyCommandRequest{RegionId: region, CommandId: dara.String("c-x"), Name: dara.String("y")})
			return err
		},
		"DeleteCommand": func(c *ecs.Client) error {
			_, err := c.DeleteCommand(&ecs.DeleteCommandRequest{RegionId: region, CommandId: dara.String("c-x")})
			return err
		},
		"DescribeCloudAssistantStatus": func(c *ecs.Client) error {
			_, err := c.DescribeCloudAssistantStatus(&ecs.DescribeCloudAssistantStatusRequest{RegionId: region})
			return err
		},
	}
	wrong := newV2ECS(t, base, keyID, "not-the-secret", "")
	wrongSTS := newV2ECS(t, base, stsKeyID, "not-the-secret", stsToken)
	for name, call := range calls {
		wantV2Code(t, name+" with a wrong secret", call(wrong), "SignatureDoesNotMatch")
		wantV2Code(t, name+" with a wrong STS secret", call(wrongSTS), "SignatureDoesNotMatch")
	}
	if n := len(s.Truth()); n != 0 {
		t.Errorf("wrongly signed calls changed something: %d truth entries", n)
	}
	if calls := s.Calls(); len(calls) != 0 {
		t.Errorf("wrongly signed calls were counted: %v", calls)
	}
}

// TestV2SDKSWASGeneric calls SWAS (2020-06-01) through the V2 SDK's generic
// CallApi, ACS3-signed, with its parameters in a form body: the SWAS V2
// SDK module is not served by the module proxy.
func TestV2SDKSWASGeneric(t *testing.T) {
	s, base := newV2Server(t)
	client, err := openapi.NewClient(v2Config(base, keyID, secret, ""))
	if err != nil {
		t.Fatal(err)
	}
	var instance string
	for _, inst := range s.Instances() {
		if inst.Product == ProductSWAS && inst.Account == DefaultAccount {
			instance = inst.ID
			break
		}
	}
	call := func(action string, body map[string]any) map[string]any {
		t.Helper()
		params := &openapi.Params{Action: dara.String(action), Version: dara.String("2020-06-01"), Protocol: dara.String("HTTP"),
			Pathname: dara.String("/"), Method: dara.String("POST"), AuthType: dara.String("AK"), Style: dara.String("RPC"),
			ReqBodyType: dara.String("formData"), BodyType: dara.String("json")}
		req := &openapiutil.OpenApiRequest{Query: map[string]*string{"RegionId": dara.String("cn-hangzhou")}, Body: body}
		resp, err := client.CallApi(params, req, &dara.RuntimeOptions{})
		if err != nil {
			t.Fatalf("%s: %v", action, err)
		}
		out, _ := resp["body"].(map[string]any)
		return out
	}
	run := call("RunCommand", map[string]any{"InstanceId": instance, "Type": "RunShellScript", "CommandContent": "echo swas v3"})
	invokeID, _ := run["InvokeId"].(string)
	if invokeID == "" {
		t.Fatalf("SWAS RunCommand: no InvokeId in %v", run)
	}
	waitFor(t, "the SWAS run to succeed", func() bool {
		got := call("DescribeCommandInvocations", map[string]any{"InvokeId": invokeID})
		list, _ := got["CommandInvocations"].([]any)
		if len(list) != 1 {
			t.Fatalf("DescribeCommandInvocations %s: %v", invokeID, got)
		}
		inv, _ := list[0].(map[string]any)
		return inv["InvocationStatus"] == stSuccess
	})
}
