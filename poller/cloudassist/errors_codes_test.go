package cloudassist

import (
	"errors"
	"testing"
	"time"

	"github.com/capoller/capoller/poller/cloudassist/castest"
)

// Each error code the emulator can inject reaches capoller through the real
// SDK, with its documented HTTP status, and is classified as design.md
// says: throttling waits for the next window, 5xx and InternalError back
// off, auth, signature, RAM and region errors are permanent.
func TestErrorCodesAreClassified(t *testing.T) {
	f := startSim(t, 1)
	swasOpts := Options{Region: region, Endpoint: f.url, AccessKeyID: testKeyID, AccessKeySecret: testKeySecret,
		Timeout: 5 * time.Second, TransientRetries: -1, ThrottleRetries: -1}
	swasLister, err := NewSWAS(swasOpts)
	if err != nil {
		t.Fatal(err)
	}
	results, err := NewECSResults(swasOpts)
	if err != nil {
		t.Fatal(err)
	}
	listers := map[string]struct {
		action   string
		snapshot func(*testing.T) error
	}{
		"ecs":         {"DescribeInvocations", func(t *testing.T) error { _, err := f.lister(t, nil).Snapshot(t.Context()); return err }},
		"ecs-results": {"DescribeInvocationResults", func(t *testing.T) error { _, err := results.Snapshot(t.Context()); return err }},
		"swas":        {"DescribeCommandInvocations", func(t *testing.T) error { _, err := swasLister.Snapshot(t.Context()); return err }},
	}
	for _, tc := range []struct {
		code   string
		status int // 0: the documented one
		want   Class
		http   int
	}{
		{"Throttling", 0, ClassThrottled, 400},
		{"Throttling.Api", 0, ClassThrottled, 400},
		{"Rejected.Throttling", 0, ClassThrottled, 400},
		{"ServiceUnavailable", 500, ClassTransient, 500},
		{"ServiceUnavailable", 503, ClassTransient, 503},
		{"InternalError", 0, ClassTransient, 500},
		{"Forbidden.RAM", 0, ClassPermanent, 403},
		{"Operation.Forbidden", 0, ClassPermanent, 403},
		{"InvalidSecurityToken.Expired", 0, ClassPermanent, 403},
		{"InvalidSecurityToken.Malformed", 0, ClassPermanent, 400},
		{"InvalidSecurityToken.MismatchWithAccessKey", 0, ClassPermanent, 400},
		{"RegionId.ApiNotSupported", 0, ClassPermanent, 400},
		{"IncompleteSignature", 0, ClassPermanent, 400},
	} {
		for name, l := range listers {
			if err := f.sim.InjectFault(castest.Fault{Kind: castest.FaultError, Action: l.action, Code: tc.code, Status: tc.status}); err != nil {
				t.Fatal(err)
			}
			err := l.snapshot(t)
			apiErr, ok := errors.AsType[*APIError](err)
			switch {
			case !ok:
				t.Errorf("%s %s: %T %v, want an *APIError", name, tc.code, err, err)
			case ClassOf(err) != tc.want || apiErr.Code != tc.code || apiErr.HTTPStatus != tc.http || apiErr.RequestID == "":
				t.Errorf("%s %s: class %s, code %q, HTTP %d, request %q; want %s, HTTP %d",
					name, tc.code, ClassOf(err), apiErr.Code, apiErr.HTTPStatus, apiErr.RequestID, tc.want, tc.http)
			}
			f.sim.ClearFaults()
		}
	}
}

// A SecurityToken the emulator does not expect is refused, and capoller
// reports it as permanent rather than retrying.
func TestWrongSecurityTokenIsPermanent(t *testing.T) {
	sim, err := castest.New(castest.Options{AccessKeyID: testKeyID, AccessKeySecret: testKeySecret, SecurityToken: "sts-good", Instances: 1})
	if err != nil {
		t.Fatal(err)
	}
	url, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	for token, code := range map[string]string{
		"sts-good": "",
		"sts-bad":  "InvalidSecurityToken.MismatchWithAccessKey",
		"":         "InvalidSecurityToken.Malformed",
	} {
		l, err := NewECS(Options{Region: region, Endpoint: url, AccessKeyID: testKeyID, AccessKeySecret: testKeySecret, SecurityToken: token,
			Timeout: 5 * time.Second, TransientRetries: -1, ThrottleRetries: -1})
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.Snapshot(t.Context())
		if code == "" {
			if err != nil {
				t.Errorf("token %q: %v", token, err)
			}
			continue
		}
		apiErr, ok := errors.AsType[*APIError](err)
		if !ok || apiErr.Code != code || ClassOf(err) != ClassPermanent {
			t.Errorf("token %q: %v (class %s), want %s, permanent", token, err, ClassOf(err), code)
		}
	}
}
