package castest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
)

// ossFieldNames are the OSS delivery fields of the API; the V1 SDK
// decodes none of them, so the tests read them from the raw body.
func ossFieldNames() []string {
	return []string{"OssOutputDelivery", "OssOutputStatus", "OssOutputUri", "OssOutputErrorCode", "OssOutputErrorInfo"}
}

// runWithDelivery invokes script on ids through the SDK with RunCommand's
// OssOutputDelivery, which the V1 request struct lacks ("" sends none).
func (f *behaviourFixture) runWithDelivery(script, delivery string, ids ...string) (string, error) {
	req := ecs.CreateRunCommandRequest()
	req.Type, req.CommandContent, req.InstanceId = "RunShellScript", script, &ids
	if delivery != "" {
		req.QueryParams["OssOutputDelivery"] = delivery
	}
	resp, err := f.ecs.RunCommand(req)
	if err != nil {
		return "", err
	}
	return resp.InvokeId, nil
}

// rawResults is every DescribeInvocationResults row of invokeID, as sent.
func (f *behaviourFixture) rawResults(invokeID string) []map[string]any {
	f.t.Helper()
	req := ecs.CreateDescribeInvocationResultsRequest()
	req.InvokeId, req.MaxResults = invokeID, requests.NewInteger(50)
	resp, err := f.ecs.DescribeInvocationResults(req)
	if err != nil {
		f.t.Fatalf("DescribeInvocationResults: %v", err)
	}
	var body struct {
		Invocation struct {
			InvocationResults struct {
				InvocationResult []map[string]any
			}
		}
	}
	if err := json.Unmarshal(resp.GetHttpContentBytes(), &body); err != nil {
		f.t.Fatal(err)
	}
	return body.Invocation.InvocationResults.InvocationResult
}

// rawInvocation is invokeID as DescribeInvocations sends it, and its
// InvokeInstances.
func (f *behaviourFixture) rawInvocation(invokeID string) (map[string]any, []map[string]any) {
	f.t.Helper()
	req := ecs.CreateDescribeInvocationsRequest()
	req.InvokeId = invokeID
	resp, err := f.ecs.DescribeInvocations(req)
	if err != nil {
		f.t.Fatalf("DescribeInvocations: %v", err)
	}
	var body struct {
		Invocations struct {
			Invocation []json.RawMessage
		}
	}
	if err := json.Unmarshal(resp.GetHttpContentBytes(), &body); err != nil || len(body.Invocations.Invocation) != 1 {
		f.t.Fatalf("DescribeInvocations %s: %v, %d invocations", invokeID, err, len(body.Invocations.Invocation))
	}
	var inv map[string]any
	var instances struct {
		InvokeInstances struct {
			InvokeInstance []map[string]any
		}
	}
	for _, into := range []any{&inv, &instances} {
		if err := json.Unmarshal(body.Invocations.Invocation[0], into); err != nil {
			f.t.Fatal(err)
		}
	}
	return inv, instances.InvokeInstances.InvokeInstance
}

// wantOss checks a row's OSS fields: want maps each field to its value,
// and a field want lacks must be absent.
func wantOss(t *testing.T, what string, row map[string]any, want map[string]string) {
	t.Helper()
	for _, field := range ossFieldNames() {
		got, present := row[field]
		w, wanted := want[field]
		switch {
		case wanted && !present:
			t.Errorf("%s: %s absent, want %q", what, field, w)
		case !wanted && present:
			t.Errorf("%s: %s = %v, want it absent", what, field, got)
		case wanted && got != w:
			t.Errorf("%s: %s = %v, want %q", what, field, got, w)
		}
	}
}

// A RunCommand with OssOutputDelivery has both ECS listings report the
// delivery of each run (seed 002): InProgress with an empty OssOutputUri
// until a while after the run ended, then Finished with the object's URI,
// or Failed with an error code and text; an invocation without it has no
// OSS field at all.
func TestOssOutputDelivery(t *testing.T) {
	f := newBehaviourFixture(t, Behaviour{})
	ids := f.instances(ProductECS)
	const delivery = "oss://testBucket/testPrefix"
	run := func(script, delivery string, ids ...string) string {
		t.Helper()
		id, err := f.runWithDelivery(script, delivery, ids...)
		if err != nil {
			t.Fatalf("RunCommand %q: %v", delivery, err)
		}
		return id
	}
	delivered := run("printf 'out\\n'", delivery, ids...)
	plain := run("echo not delivered", "", ids[0])
	type failure struct{ delivery, code string }
	failures := map[string]failure{}
	for _, fl := range []failure{
		{"oss://nosuchbucket/p", "OSS.NoSuchBucket"},
		{"oss://denied-bucket", "OSS.AccessDenied"},
		{"oss://immutable-bucket/p/", "OSS.FileImmutable"},
		{"oss://bucket/" + strings.Repeat("p", 1000), "OSS.InvalidObjectName"},
	} {
		failures[run("echo x", fl.delivery, ids[0])] = fl
	}
	// A run cancelled before it started has nothing to deliver.
	cancelled := run("echo never", delivery, ids[1])
	if e := f.s.stopInvocation(DefaultAccount, ProductECS, "cn-hangzhou", cancelled, nil); e != nil {
		t.Fatal(e)
	}
	failures[cancelled] = failure{delivery, "CloudAssistant.UnsupportedInvocationStatus"}

	inProgress := map[string]string{"OssOutputDelivery": delivery, "OssOutputStatus": "InProgress", "OssOutputUri": ""}
	check := func(when string, want func(invokeID, instanceID string) map[string]string, invokeIDs ...string) {
		t.Helper()
		for _, invokeID := range invokeIDs {
			for _, row := range f.rawResults(invokeID) {
				instanceID := row["InstanceId"].(string)
				wantOss(t, when+": DescribeInvocationResults "+invokeID+" on "+instanceID, row, want(invokeID, instanceID))
			}
			inv, instances := f.rawInvocation(invokeID)
			w := want(invokeID, "")
			if got, ok := inv["OssOutputDelivery"]; ok != (w["OssOutputDelivery"] != "") || ok && got != w["OssOutputDelivery"] {
				t.Errorf("%s: DescribeInvocations %s: OssOutputDelivery %v (sent: %v), want %q", when, invokeID, got, ok, w["OssOutputDelivery"])
			}
			for _, ii := range instances {
				instanceID := ii["InstanceId"].(string)
				w := want(invokeID, instanceID)
				delete(w, "OssOutputDelivery") // an invocation's field, not an instance's
				wantOss(t, when+": DescribeInvocations "+invokeID+" on "+instanceID, ii, w)
			}
		}
	}
	same := func(w map[string]string) func(string, string) map[string]string {
		return func(string, string) map[string]string {
			out := map[string]string{}
			for k, v := range w {
				out[k] = v
			}
			return out
		}
	}
	check("pending", same(inProgress), delivered)
	check("never", same(nil), plain)

	// The runs end at the dispatch delay (they take no time); the
	// delivery is still under way until OssDeliveryDelay after.
	f.clk.Add(f.s.opts.DispatchDelay + f.s.opts.OssDeliveryDelay/2)
	if got := f.s.status(delivered); got != stSuccess {
		t.Fatalf("the delivered invocation is %s, want Success", got)
	}
	check("run over, delivery under way", same(inProgress), delivered)

	f.clk.Add(f.s.opts.OssDeliveryDelay)
	check("delivered", func(invokeID, instanceID string) map[string]string {
		return map[string]string{"OssOutputDelivery": delivery, "OssOutputStatus": "Finished",
			"OssOutputUri": delivery + "/" + invokeID + "/" + instanceID + "/1/output.txt"}
	}, delivered)
	for invokeID, fl := range failures {
		check(fl.code, same(map[string]string{"OssOutputDelivery": fl.delivery, "OssOutputStatus": "Failed", "OssOutputUri": "",
			"OssOutputErrorCode": fl.code, "OssOutputErrorInfo": ossErrorInfo(fl.code)}), invokeID)
	}
	check("never", same(nil), plain)
	if got := ossErrorInfo("CloudAssistant.UnsupportedInvocationStatus"); got != "The invocation status does not support output delivery." {
		t.Errorf("UnsupportedInvocationStatus reads %q, not seed 002's text", got)
	}

	// RunCommand refuses a delivery that is not oss://BUCKET[/PREFIX].
	for _, bad := range []string{"s3://bucket/p", "oss://", "oss://b/p", "oss://under_score", "oss://bucket/p\n"} {
		_, err := f.runWithDelivery("echo x", bad, ids[0])
		if se := serverError(t, err); se.HttpStatus() != http.StatusBadRequest || se.ErrorCode() != "InvalidParameter.OssOutputDelivery" {
			t.Errorf("OssOutputDelivery %q: %d %s", bad, se.HttpStatus(), se.ErrorCode())
		}
	}
}

// Server.RunCommand configures the same delivery in process.
func TestRunCommandDeliversInProcess(t *testing.T) {
	f := newBehaviourFixture(t, Behaviour{})
	ids := f.instances(ProductECS)
	id, err := f.s.RunCommand("cn-hangzhou", ids[:1], Command{Script: "yes | head -c 30000", OssOutputDelivery: "oss://bucket"})
	if err != nil {
		t.Fatal(err)
	}
	f.clk.Add(time.Second)
	rows := f.rawResults(id)
	wantOss(t, "in process", rows[0], map[string]string{"OssOutputDelivery": "oss://bucket", "OssOutputStatus": "Finished",
		"OssOutputUri": "oss://bucket/" + id + "/" + ids[0] + "/1/output.txt"})
	if rows[0]["Dropped"] != float64(30000-maxOutput) {
		t.Errorf("Dropped %v", rows[0]["Dropped"])
	}
	if _, err := f.s.RunCommand("cn-hangzhou", ids[:1], Command{Script: "echo", OssOutputDelivery: "oss:/bucket"}); err == nil {
		t.Error("RunCommand accepted oss:/bucket")
	}
}
