package cloudassist

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/capoller/capoller/diff"
)

// TestEmulatorDescribeInvocations checks the emulator's filters, number
// paging and output options through the real SDK.
func TestEmulatorDescribeInvocations(t *testing.T) {
	f := startSim(t, 2)
	ids := f.ecsInstances()
	a := f.run(t, "echo alpha; exit 0", 0, ids[0])
	b := f.run(t, "echo beta; exit 5", 0, ids[1])
	c := f.run(t, "hang", 0, ids[0], ids[1])
	eventually(t, 5*time.Second, "a and b to finish", func() bool {
		snap, err := f.lister(t, nil).Snapshot(t.Context())
		ra, _ := find(snap, diff.Key{InvokeID: a})
		rb, _ := find(snap, diff.Key{InvokeID: b})
		return err == nil && ra.Status.Terminal() && rb.Status.Terminal()
	})
	describe := func(mutate func(*ecs.DescribeInvocationsRequest)) *ecs.DescribeInvocationsResponse {
		t.Helper()
		req := ecs.CreateDescribeInvocationsRequest()
		mutate(req)
		resp, err := f.sdk.DescribeInvocations(req)
		if err != nil {
			t.Fatalf("DescribeInvocations: %v", err)
		}
		return resp
	}
	invokeIDs := func(resp *ecs.DescribeInvocationsResponse) []string {
		var out []string
		for _, inv := range resp.Invocations.Invocation {
			out = append(out, inv.InvokeId)
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		mutate func(*ecs.DescribeInvocationsRequest)
		want   []string
	}{
		{"all, newest first", func(*ecs.DescribeInvocationsRequest) {}, []string{c, b, a}},
		{"by invoke id", func(r *ecs.DescribeInvocationsRequest) { r.InvokeId = b }, []string{b}},
		{"by instance", func(r *ecs.DescribeInvocationsRequest) { r.InstanceId = ids[1] }, []string{c, b}},
		{"by current status", func(r *ecs.DescribeInvocationsRequest) { r.InvokeStatus = "Failed" }, []string{b}},
		{"by legacy status", func(r *ecs.DescribeInvocationsRequest) { r.InvokeStatus = "Finished" }, []string{a}},
		{"running", func(r *ecs.DescribeInvocationsRequest) { r.InvokeStatus = "Running" }, []string{c}},
		{"page 2 of 2 by number", func(r *ecs.DescribeInvocationsRequest) {
			r.PageSize, r.PageNumber = requests.NewInteger(2), requests.NewInteger(2)
		}, []string{a}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := invokeIDs(describe(tc.mutate))
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
	first := describe(func(r *ecs.DescribeInvocationsRequest) { r.InvokeId = a })
	inv := first.Invocations.Invocation[0]
	if inv.CommandId == "" || inv.CommandName == "" || inv.CreationTime == "" || inv.Parameters != "{}" || inv.RepeatMode != "Once" ||
		inv.InvocationStatus != "Success" || inv.InvokeStatus != "Finished" || inv.Timeout != 60 || inv.CommandType != "RunShellScript" {
		t.Errorf("aggregate fields: %+v", inv)
	}
	if raw, _ := base64.StdEncoding.DecodeString(inv.CommandContent); string(raw) != "echo alpha; exit 0" {
		t.Errorf("CommandContent is not the Base64 script: %q", inv.CommandContent)
	}
	ii := inv.InvokeInstances.InvokeInstance[0]
	if ii.Output != "" {
		t.Errorf("Output present without IncludeOutput: %q", ii.Output)
	}
	if ii.InstanceInvokeStatus != "Finished" || ii.Repeats != 1 || ii.StartTime == "" || ii.FinishTime == "" || ii.UpdateTime == "" || ii.CreationTime == "" {
		t.Errorf("instance fields: %+v", ii)
	}
	plain := describe(func(r *ecs.DescribeInvocationsRequest) {
		r.InvokeId, r.IncludeOutput, r.ContentEncoding = b, requests.NewBoolean(true), "PlainText"
	}).Invocations.Invocation[0]
	if out := plain.InvokeInstances.InvokeInstance[0]; out.Output != "beta" || out.ExitCode != 5 || out.ErrorCode != "ExitCodeNonzero" || out.ErrorInfo == "" {
		t.Errorf("plain output: %+v", out)
	}
	// Token paging and number paging must not both be ignored: a bad
	// MaxResults is an error.
	req := ecs.CreateDescribeInvocationsRequest()
	req.MaxResults = requests.NewInteger(51)
	if _, err := f.sdk.DescribeInvocations(req); err == nil || translate("x", err).Code != "InvalidParameter.MaxResults" {
		t.Errorf("MaxResults 51: %v", err)
	}
	req = ecs.CreateDescribeInvocationsRequest()
	req.NextToken = "not-a-token"
	if _, err := f.sdk.DescribeInvocations(req); err == nil || translate("x", err).Class != ClassInvalidToken {
		t.Errorf("bad token: %v", err)
	}
}

func TestNormalizeECSFoldsOddities(t *testing.T) {
	inv := ecs.Invocation{InvokeId: " t-1 ", CommandId: "c-1", InvokeStatus: "finished"}
	inv.InvokeInstances.InvokeInstance = []ecs.InvokeInstance{
		{InstanceId: "i-1", InstanceInvokeStatus: " running "},
		{InstanceId: "i-2", InvocationStatus: "success", StartTime: "2023-04-27T10:11:58", FinishTime: "garbage"},
		{InstanceId: "i-3", InvocationStatus: "Quarantined"},
	}
	tl := &tally{}
	recs := normalizeECS(inv, tl)
	want := []diff.Status{diff.StatusFinished, diff.StatusRunning, diff.StatusSuccess, "Quarantined"}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for i, r := range recs {
		if r.Status != want[i] || r.InvokeID != " t-1 " { // ids are kept verbatim: look-ups must match the API's
			t.Errorf("record %d: %+v, want status %q", i, r, want[i])
		}
	}
	if tl.badTimes != 1 || !recs[2].StartTime.Equal(time.Date(2023, 4, 27, 10, 11, 58, 0, time.UTC)) || !recs[2].FinishTime.IsZero() {
		t.Errorf("timestamps: bad=%d start=%v finish=%v", tl.badTimes, recs[2].StartTime, recs[2].FinishTime)
	}
}
