package castest

import (
	"strings"
	"testing"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	swas "github.com/aliyun/alibaba-cloud-sdk-go/services/swas-open"
)

// sdkClients are real SDK clients pointed at an emulator.
type sdkClients struct {
	ecs  *ecs.Client
	swas *swas.Client
}

// newSDK builds real SDK clients for base, signing with cred (nil: the
// emulator's static access key).
func newSDK(t *testing.T, base, region string, cred credentials.CredentialsProvider) sdkClients {
	t.Helper()
	if cred == nil {
		cred = credentials.NewStaticAKCredentialsProvider(keyID, secret)
	}
	cfg := func() *sdk.Config { return sdk.NewConfig().WithAutoRetry(false) }
	e, err := ecs.NewClientWithOptions(region, cfg(), cred)
	if err != nil {
		t.Fatal(err)
	}
	w, err := swas.NewClientWithOptions(region, cfg(), cred)
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(base, "http://")
	e.Domain, w.Domain = host, host
	return sdkClients{ecs: e, swas: w}
}

// runECS invokes script on ids through the SDK and returns the invoke id.
func (c sdkClients) runECS(t *testing.T, script, repeat, frequency string, ids ...string) string {
	t.Helper()
	req := ecs.CreateRunCommandRequest()
	req.Type, req.CommandContent, req.ContentEncoding, req.InstanceId = "RunShellScript", script, "PlainText", &ids
	req.RepeatMode, req.Frequency, req.Timeout = repeat, frequency, requests.NewInteger64(60)
	resp, err := c.ecs.RunCommand(req)
	if err != nil {
		t.Fatalf("RunCommand: %v", err)
	}
	return resp.InvokeId
}

// describeECS lists one invocation through DescribeInvocations.
func (c sdkClients) describeECS(t *testing.T, invokeID string) ecs.Invocation {
	t.Helper()
	req := ecs.CreateDescribeInvocationsRequest()
	req.InvokeId, req.MaxResults = invokeID, requests.NewInteger(50)
	resp, err := c.ecs.DescribeInvocations(req)
	if err != nil {
		t.Fatalf("DescribeInvocations: %v", err)
	}
	if n := len(resp.Invocations.Invocation); n != 1 {
		t.Fatalf("DescribeInvocations %s: %d invocations", invokeID, n)
	}
	return resp.Invocations.Invocation[0]
}

// invocationTruth is the invocation-level truth of invokeID, in order.
func invocationTruth(s *Server, invokeID string) []TruthEntry {
	var out []TruthEntry
	for _, e := range s.Truth() {
		if e.InvokeID == invokeID && e.Level == "invocation" {
			out = append(out, e)
		}
	}
	return out
}

func lastTo(entries []TruthEntry) string {
	if len(entries) == 0 {
		return ""
	}
	return entries[len(entries)-1].To
}
