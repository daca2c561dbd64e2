package poller

import (
	"errors"
	"fmt"
	"testing"
)

// A failure repeated with a new request id each time is the same failure
// for the logs; another code or page is another.
func TestFailureSignatureIgnoresRequestIDs(t *testing.T) {
	try := func(page int, id, code string) error {
		return fmt.Errorf("cycle: DescribeInvocations page %d (request %s): %w", page, id,
			errors.New("DescribeInvocations: HTTP 503 "+code+": busy (request "+id+") [transient]"))
	}
	a, b := failureSignature(try(1, "A1B2", "ServiceUnavailable")), failureSignature(try(1, "C3D4", "ServiceUnavailable"))
	if a != b {
		t.Errorf("the same failure differs by its request id:\n%s\n%s", a, b)
	}
	if a == failureSignature(try(1, "E5", "InternalError")) || a == failureSignature(try(2, "A1B2", "ServiceUnavailable")) {
		t.Error("another code or page was taken for the same failure")
	}
	if got := failureSignature(errors.New("no request id (request unterminated")); got != "no request id (request unterminated" {
		t.Errorf("an unterminated id: %q", got)
	}
}
