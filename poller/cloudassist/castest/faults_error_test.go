package castest

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	swas "github.com/aliyun/alibaba-cloud-sdk-go/services/swas-open"
)

// serverError unwraps what the SDK returned for a refused call.
func serverError(t *testing.T, err error) *sdkerrors.ServerError {
	t.Helper()
	var se *sdkerrors.ServerError
	if !errors.As(err, &se) {
		t.Fatalf("want a server error, got %T %v", err, err)
	}
	return se
}

// Every injectable error code reaches the real SDK with its documented
// status and Alibaba's error shape, from InjectFault and from
// /_casim/faults alike.
func TestErrorFaultsHaveTheDocumentedShape(t *testing.T) {
	s, base := newServer(t)
	c := newSDK(t, base, "cn-hangzhou", nil)
	for _, tc := range []struct {
		code   string
		status int // given in the rule; 0: the documented one
		want   int
	}{
		{"Throttling", 0, 400},
		{"Throttling.User", 0, 400},
		{"Throttling.Api", 0, 400},
		{"Rejected.Throttling", 0, 400},
		{"ServiceUnavailable", 0, 503},
		{"ServiceUnavailable", 500, 500},
		{"InternalError", 0, 500},
		{"InternalError.Dispatch", 0, 500},
		{"Forbidden.RAM", 0, 403},
		{"Operation.Forbidden", 0, 403},
		{"InvalidSecurityToken.Expired", 0, 403},
		{"InvalidSecurityToken.Malformed", 0, 400},
		{"InvalidSecurityToken.MismatchWithAccessKey", 0, 400},
		{"RegionId.ApiNotSupported", 0, 400},
		{"IncompleteSignature", 0, 400},
		{"Made.Up", 418, 418},
	} {
		for _, via := range []string{"InjectFault", "control"} {
			f := Fault{Kind: FaultError, Code: tc.code, Status: tc.status, Action: "DescribeInvocations"}
			if via == "InjectFault" {
				if err := s.InjectFault(f); err != nil {
					t.Fatal(err)
				}
			} else {
				body := `{"kind":"error","action":"DescribeInvocations","code":"` + tc.code + `"`
				if tc.status != 0 {
					body += `,"status":` + strconv.Itoa(tc.status)
				}
				resp, err := http.Post(base+"/_casim/faults", "application/json", strings.NewReader(body+"}"))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					t.Fatalf("POST /_casim/faults %s: %d", body, resp.StatusCode)
				}
			}
			_, err := c.ecs.DescribeInvocations(ecs.CreateDescribeInvocationsRequest())
			se := serverError(t, err)
			if se.HttpStatus() != tc.want || se.ErrorCode() != tc.code || se.RequestId() == "" || se.HostId() == "" || se.Message() == "" {
				t.Errorf("%s via %s: HTTP %d code %q request %q host %q message %q; want HTTP %d",
					tc.code, via, se.HttpStatus(), se.ErrorCode(), se.RequestId(), se.HostId(), se.Message(), tc.want)
			}
			// One call only: the next one is served.
			if _, err := c.ecs.DescribeInvocations(ecs.CreateDescribeInvocationsRequest()); err != nil {
				t.Errorf("%s via %s: the call after the fault failed: %v", tc.code, via, err)
			}
		}
	}
	// SWAS gets them too.
	if err := s.InjectFault(Fault{Kind: FaultError, Code: "Forbidden.RAM"}); err != nil {
		t.Fatal(err)
	}
	_, err := c.swas.DescribeCommandInvocations(swas.CreateDescribeCommandInvocationsRequest())
	if se := serverError(t, err); se.HttpStatus() != 403 || se.ErrorCode() != "Forbidden.RAM" {
		t.Errorf("SWAS: HTTP %d %s", se.HttpStatus(), se.ErrorCode())
	}
	for _, bad := range []Fault{
		{Kind: FaultError},
		{Kind: FaultError, Code: "Made.Up"},
		{Kind: FaultError, Code: "Throttling", Status: 200},
	} {
		if err := s.InjectFault(bad); err == nil {
			t.Errorf("InjectFault(%+v) accepted", bad)
		}
	}
}

// With a SecurityToken configured, only requests signed with that token
// are served.
func TestSecurityTokenIsVerified(t *testing.T) {
	s, err := New(Options{AccessKeyID: keyID, AccessKeySecret: secret, SecurityToken: "sts-token-1", Instances: 1})
	if err != nil {
		t.Fatal(err)
	}
	base, err := s.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	for _, tc := range []struct {
		name string
		cred credentials.CredentialsProvider
		code string
	}{
		{"the token", credentials.NewStaticSTSCredentialsProvider(keyID, secret, "sts-token-1"), ""},
		{"another token", credentials.NewStaticSTSCredentialsProvider(keyID, secret, "sts-token-2"), "InvalidSecurityToken.MismatchWithAccessKey"},
		{"no token", credentials.NewStaticAKCredentialsProvider(keyID, secret), "InvalidSecurityToken.Malformed"},
		{"the token, wrong secret", credentials.NewStaticSTSCredentialsProvider(keyID, "nope", "sts-token-1"), "SignatureDoesNotMatch"},
	} {
		c := newSDK(t, base, "cn-hangzhou", tc.cred)
		_, err := c.ecs.DescribeInvocations(ecs.CreateDescribeInvocationsRequest())
		if tc.code == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if se := serverError(t, err); se.ErrorCode() != tc.code || se.RequestId() == "" || se.HostId() == "" {
			t.Errorf("%s: HTTP %d %q, want %s", tc.name, se.HttpStatus(), se.ErrorCode(), tc.code)
		}
	}
}
