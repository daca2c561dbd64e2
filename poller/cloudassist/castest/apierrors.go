package castest

import (
	"fmt"
	"net/http"
)

// documentedError is the HTTP status and message Alibaba documents for an
// error code the emulator can inject (see FaultError). Sources: seed 000
// and 002 (DescribeInvocations, DescribeInvocationResults error tables),
// the SDK notes' throttling table (Throttling* codes arrive as HTTP 400)
// and the DTS table for InvalidSecurityToken.Expired (403). The statuses of
// InvalidSecurityToken.Malformed and .MismatchWithAccessKey, Forbidden.RAM
// and IncompleteSignature are Alibaba's common error-centre values, not in
// the seeds.
func documentedError(code string) (status int, message string, ok bool) {
	switch code {
	case "Throttling":
		return http.StatusBadRequest, "Request was denied due to request throttling.", true
	case "Throttling.User":
		return http.StatusBadRequest, "Request was denied due to user flow control.", true
	case "Throttling.Api":
		return http.StatusBadRequest, "Request was denied due to api flow control.", true
	case "Rejected.Throttling":
		return http.StatusBadRequest, "Request was rejected due to flow control.", true
	case "ServiceUnavailable": // seed 002 lists it as 500; the SDK notes as 503
		return http.StatusServiceUnavailable, "The request has failed due to a temporary failure of the server.", true
	case "InternalError":
		return http.StatusInternalServerError, "The request processing has failed due to some unknown error.", true
	case "InternalError.Dispatch":
		return http.StatusInternalServerError, "An error occurred when you dispatched the request.", true
	case "Forbidden.RAM":
		return http.StatusForbidden, "User not authorized to operate on the specified resource, or this API doesn't support RAM.", true
	case "Operation.Forbidden":
		return http.StatusForbidden, "The operation is not permitted.", true
	case "InvalidSecurityToken.Expired":
		return http.StatusForbidden, "Specified SecurityToken is expired.", true
	case "InvalidSecurityToken.Malformed":
		return http.StatusBadRequest, "Specified SecurityToken is malformed.", true
	case "InvalidSecurityToken.MismatchWithAccessKey":
		return http.StatusBadRequest, "Specified SecurityToken mismatch with the AccessKey.", true
	case "RegionId.ApiNotSupported":
		return http.StatusBadRequest, "The api is not supported in this region.", true
	case "IncompleteSignature":
		return http.StatusBadRequest, "The request signature does not conform to Aliyun standards.", true
	case "InvalidParameter.NextToken":
		return http.StatusBadRequest, "The specified parameter NextToken is not valid.", true
	}
	return 0, "", false
}

// errorFault completes a FaultError rule: the documented status and
// message of its code, unless the rule gives its own.
func errorFault(f *Fault) error {
	if f.Code == "" {
		return fmt.Errorf("castest: an error fault needs a code")
	}
	status, message, known := documentedError(f.Code)
	if f.Status == 0 {
		if !known {
			return fmt.Errorf("castest: error code %q is not documented here; give its status", f.Code)
		}
		f.Status = status
	}
	if f.Status < 400 || f.Status > 599 {
		return fmt.Errorf("castest: error fault status %d is not an HTTP error", f.Status)
	}
	if f.Message == "" {
		f.Message = message
		if f.Message == "" {
			f.Message = "casim injected " + f.Code + "."
		}
	}
	return nil
}

// checkSecurityToken verifies the STS SecurityToken of a correctly signed
// request when its account has one (want): a request without it gets
// InvalidSecurityToken.Malformed, one with another token
// InvalidSecurityToken.MismatchWithAccessKey.
func checkSecurityToken(want, token string) *apiError {
	if want == "" || token == want {
		return nil
	}
	code := "InvalidSecurityToken.MismatchWithAccessKey"
	if token == "" {
		code = "InvalidSecurityToken.Malformed"
	}
	status, message, _ := documentedError(code)
	return errorf(status, code, "%s", message)
}
