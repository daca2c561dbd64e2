package cloudassist

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	swas "github.com/aliyun/alibaba-cloud-sdk-go/services/swas-open"

	"github.com/capoller/capoller/diff"
	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// The seeds' sample responses, served verbatim by the emulator, read
// through the real SDK. Two goldens per sample: what the SDK decodes
// (testdata/golden/*.sdk.json: every documented field it knows) and
// capoller's normalized records (*.records.json). UPDATE_GOLDEN=1 rewrites
// them; review the diff.

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func checkGolden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "golden", name)
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n%s", name, got)
	}
}

func serve(t *testing.T, f *fixture, action string, status int, bodies ...string) {
	t.Helper()
	f.sim.ClearFaults()
	for _, b := range bodies {
		if err := f.sim.InjectFault(castest.Fault{Action: action, Kind: castest.FaultRaw, Status: status, Body: b}); err != nil {
			t.Fatal(err)
		}
	}
}

// recordsOf drops the observation time, which is not in the sample.
func recordsOf(snap diff.Snapshot) []diff.Record { return snap.Records }

func TestGoldenDescribeInvocations(t *testing.T) {
	f := startSim(t, 1)
	sample := readTestdata(t, "seed000_describe_invocations.json")

	serve(t, f, "DescribeInvocations", 200, sample)
	resp, err := f.sdk.DescribeInvocations(ecs.CreateDescribeInvocationsRequest())
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "seed000_describe_invocations.sdk.json", resp.Invocations)

	serve(t, f, "DescribeInvocations", 200, sample)
	snap, err := f.lister(t, nil).Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "seed000_describe_invocations.records.json", recordsOf(snap))
	// The oddities, spelled out: lower-case "success", "finished", "running".
	want := map[diff.Key]diff.Status{
		{InvokeID: "t-bd09beef975b4e50883e5df1xxxxxxxx"}:                                       diff.StatusSuccess,
		{InvokeID: "t-bd09beef975b4e50883e5df1xxxxxxxx", InstanceID: "i-uf614fhehhzmxxxxxxxx"}: diff.StatusFinished,
		{InvokeID: "t-a8935b93739442e59ed621a6xxxxxxxx", InstanceID: "i-uf64isakb713xxxxxxxx"}: diff.StatusRunning,
	}
	for k, s := range want {
		if r, _ := find(snap, k); r.Status != s {
			t.Errorf("%v: %q, want %q", k, r.Status, s)
		}
	}
}

func TestGoldenDescribeInvocationResults(t *testing.T) {
	f := startSim(t, 1)
	sample := readTestdata(t, "seed002_describe_invocation_results.json")
	// The sample carries a NextToken; the page after it is empty.
	lastPage := `{"RequestId":"last","Invocation":{"NextToken":"","InvocationResults":{"InvocationResult":[]}}}`

	serve(t, f, "DescribeInvocationResults", 200, sample)
	resp, err := f.sdk.DescribeInvocationResults(ecs.CreateDescribeInvocationResultsRequest())
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "seed002_describe_invocation_results.sdk.json", resp.Invocation)
	if r := resp.Invocation.InvocationResults.InvocationResult[0]; r.FinishedTime != "2019-12-20T06:15:56Z" {
		t.Errorf("FinishedTime not decoded: %+v", r)
	}

	serve(t, f, "DescribeInvocationResults", 200, sample, lastPage)
	l, err := NewECSResults(Options{Region: region, Endpoint: f.url, AccessKeyID: testKeyID, AccessKeySecret: testKeySecret, TransientRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := l.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "seed002_describe_invocation_results.records.json", recordsOf(snap))
	if len(snap.Records) != 2 || snap.Records[0].Status != diff.StatusSuccess || snap.Records[1].FinishTime.IsZero() {
		t.Errorf("want a derived Success aggregate and the instance with its FinishedTime: %+v", snap.Records)
	}
}

func TestGoldenSWASDescribeCommandInvocations(t *testing.T) {
	f := startSim(t, 1)
	sample := readTestdata(t, "seed003_swas_describe_command_invocations.json")
	client, err := swas.NewClientWithOptions(region, sdk.NewConfig(), credentials.NewStaticAKCredentialsProvider(testKeyID, testKeySecret))
	if err != nil {
		t.Fatal(err)
	}
	client.Domain = strings.TrimPrefix(f.url, "http://")

	serve(t, f, "DescribeCommandInvocations", 200, sample)
	resp, err := client.DescribeCommandInvocations(swas.CreateDescribeCommandInvocationsRequest())
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "seed003_swas_describe_command_invocations.sdk.json", resp.CommandInvocations)

	// TotalCount 10 with one invocation listed never adds up, so the lister
	// reads it again: serve it for every attempt.
	serve(t, f, "DescribeCommandInvocations", 200, sample, sample, sample)
	l, err := NewSWAS(Options{Region: region, Endpoint: f.url, AccessKeyID: testKeyID, AccessKeySecret: testKeySecret, TransientRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := l.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "seed003_swas_describe_command_invocations.records.json", recordsOf(snap))
	if snap.Complete {
		t.Error("TotalCount 10 with one invocation listed must not count as complete")
	}
}

func TestUndecodableSamplesGiveClearErrors(t *testing.T) {
	f := startSim(t, 1)
	for _, tc := range []struct {
		name, file, code string
		status           int
	}{
		{"XML sample with stray text", "seed000_describe_invocations.xml", "SDK.JsonUnmarshalError", 200},
		{`"Parameters": {} where the SDK wants a string`, "sdkdoc_parameters_object.json", "SDK.JsonUnmarshalError", 200},
		{"error body that is not JSON", "seed000_error_invalid_json.json", "", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serve(t, f, "DescribeInvocations", tc.status, readTestdata(t, tc.file))
			snap, err := f.lister(t, nil).Snapshot(t.Context())
			if err == nil || len(snap.Records) != 0 {
				t.Fatalf("got %d records, err %v", len(snap.Records), err)
			}
			e, ok := errors.AsType[*APIError](err)
			if !ok || e.Code != tc.code || (tc.status != 200 && e.HTTPStatus != tc.status) {
				t.Errorf("error %v: want code %q", err, tc.code)
			}
		})
	}
}
