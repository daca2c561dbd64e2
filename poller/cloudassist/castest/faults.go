package castest

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"
)

// FaultKind names a misbehaviour the emulator can inject.
type FaultKind string

// The injectable faults.
const (
	// FaultThrottle answers HTTP 400 Throttling.User.
	FaultThrottle FaultKind = "throttle"
	// FaultUnavailable answers HTTP 503 ServiceUnavailable.
	FaultUnavailable FaultKind = "unavailable"
	// FaultInternal answers HTTP 500 InternalError.Dispatch.
	FaultInternal FaultKind = "internal"
	// FaultBadGateway answers HTTP 502 with an HTML page, as a proxy would.
	FaultBadGateway FaultKind = "badgateway"
	// FaultMalformed answers HTTP 200 with a body the SDK cannot decode
	// ("Parameters": {} where a string is declared).
	FaultMalformed FaultKind = "malformed"
	// FaultTruncated answers HTTP 200 with a truncated JSON body.
	FaultTruncated FaultKind = "truncated"
	// FaultInvalidToken answers HTTP 400 InvalidParameter.NextToken, as the
	// API does when a token expired.
	FaultInvalidToken FaultKind = "invalidtoken"
	// FaultRaw answers with Status (default 200) and Body verbatim: a
	// recorded or hand-made response, such as a documented sample.
	FaultRaw FaultKind = "raw"
	// FaultLatency delays the call by Latency, then serves it.
	FaultLatency FaultKind = "latency"
	// FaultError answers with API error Code in Alibaba's JSON error shape,
	// with the HTTP status and message documented for the code (Status and
	// Message override them; a code casim does not document needs Status).
	// For instance {"kind": "error", "code": "Throttling.Api"}, or
	// {"kind": "error", "code": "ServiceUnavailable", "status": 500}. The
	// documented codes: Throttling, Throttling.User, Throttling.Api,
	// Rejected.Throttling (400); ServiceUnavailable (503, or 500 as seed
	// 002 lists it); InternalError, InternalError.Dispatch (500);
	// Forbidden.RAM, Operation.Forbidden (403); InvalidSecurityToken.Expired
	// (403), InvalidSecurityToken.Malformed and
	// InvalidSecurityToken.MismatchWithAccessKey (400);
	// RegionId.ApiNotSupported, IncompleteSignature,
	// InvalidParameter.NextToken (400).
	FaultError FaultKind = "error"
)

// Fault is one injection rule. Rules are consulted in the order they were
// added; the first that matches a call applies.
type Fault struct {
	// Action limits the rule to one API action; empty matches every action.
	Action string `json:"action"`
	// Account limits the rule to the calls of one account; empty matches
	// every account.
	Account string    `json:"account"`
	Kind    FaultKind `json:"kind"`
	// Skip lets this many matching calls through before the rule applies.
	Skip int `json:"skip"`
	// Count is how many calls the rule affects; 0 means one, -1 forever.
	Count int `json:"count"`
	// Rate, when positive, affects each matching call with that probability
	// instead, forever.
	Rate float64 `json:"rate"`
	// Latency is the delay of a latency fault, e.g. "200ms".
	Latency string `json:"latency"`
	// Status and Body of a raw fault; Status, Code and Message of an error
	// fault.
	Status  int    `json:"status"`
	Body    string `json:"body"`
	Code    string `json:"code"`
	Message string `json:"message"`

	latency time.Duration
}

// InjectFault adds a fault rule.
func (s *Server) InjectFault(f Fault) error {
	switch f.Kind {
	case FaultThrottle, FaultUnavailable, FaultInternal, FaultBadGateway, FaultMalformed, FaultTruncated, FaultInvalidToken:
	case FaultRaw:
		if f.Status == 0 {
			f.Status = http.StatusOK
		}
	case FaultError:
		if err := errorFault(&f); err != nil {
			return err
		}
	case FaultLatency:
		d, err := time.ParseDuration(f.Latency)
		if err != nil || d <= 0 {
			return fmt.Errorf("castest: a latency fault needs a positive latency, got %q", f.Latency)
		}
		f.latency = d
	default:
		return fmt.Errorf("castest: unknown fault kind %q", f.Kind)
	}
	if f.Rate < 0 || f.Rate > 1 {
		return fmt.Errorf("castest: fault rate %v is outside [0, 1]", f.Rate)
	}
	if f.Count == 0 {
		f.Count = 1
	}
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faults = append(s.faults, &f)
	return nil
}

// ClearFaults removes every fault rule.
func (s *Server) ClearFaults() {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faults = nil
}

func (s *Server) takeFault(account, action string) *Fault {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	for i, f := range s.faults {
		if f.Action != "" && f.Action != action || f.Account != "" && f.Account != account {
			continue
		}
		if f.Rate > 0 {
			if rand.Float64() < f.Rate {
				return f
			}
			continue
		}
		if f.Skip > 0 {
			f.Skip--
			continue
		}
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		return f
	}
	return nil
}

// applyFault writes the fault's response; it reports false when the call
// should then be served normally (latency).
func (s *Server) applyFault(w http.ResponseWriter, host, requestID string, f *Fault) bool {
	switch f.Kind {
	case FaultThrottle:
		writeError(w, host, requestID, errorf(http.StatusBadRequest, "Throttling.User", "Request was denied due to user flow control."))
	case FaultInvalidToken:
		writeError(w, host, requestID, errorf(http.StatusBadRequest, "InvalidParameter.NextToken", "The specified parameter NextToken is not valid."))
	case FaultUnavailable:
		writeError(w, host, requestID, errorf(http.StatusServiceUnavailable, "ServiceUnavailable", "The request has failed due to a temporary failure of the server."))
	case FaultInternal:
		writeError(w, host, requestID, errorf(http.StatusInternalServerError, "InternalError.Dispatch", "An error occurred when you dispatched the request."))
	case FaultBadGateway:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html><body><h1>502 Bad Gateway</h1></body></html>"))
	case FaultMalformed:
		writeJSON(w, http.StatusOK, map[string]any{"RequestId": requestID, "NextToken": "",
			"Invocations": map[string]any{"Invocation": []any{map[string]any{"InvokeId": "t-malformed", "Parameters": map[string]any{}}}}})
	case FaultTruncated:
		w.Header().Set("Content-Type", "application/json;charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"RequestId":"` + requestID + `","Invocations":{"Invocation":[{"InvokeId":"t-`))
	case FaultRaw:
		w.Header().Set("Content-Type", "application/json;charset=utf-8")
		w.WriteHeader(f.Status)
		_, _ = w.Write([]byte(f.Body))
	case FaultError:
		writeError(w, host, requestID, &apiError{Status: f.Status, Code: f.Code, Message: f.Message})
	case FaultLatency:
		time.Sleep(f.latency)
		return false
	}
	return true
}
