package castest

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// apiError is an error in Alibaba's JSON error shape.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func missing(param string) *apiError {
	return errorf(http.StatusBadRequest, "MissingParameter."+param,
		"The input parameter %q that is mandatory for processing this request is not supplied.", param)
}

func invalid(param, value string) *apiError {
	return errorf(http.StatusBadRequest, "InvalidParameter."+param, "The specified parameter %s is not valid: %q.", param, value)
}

// errorBody is the JSON body Alibaba returns with every error; the SDK reads
// Code, Message, RequestId and HostId from it.
type errorBody struct {
	RequestId string `json:"RequestId"`
	HostId    string `json:"HostId"`
	Code      string `json:"Code"`
	Message   string `json:"Message"`
	Recommend string `json:"Recommend,omitempty"`
}

func writeError(w http.ResponseWriter, host, requestID string, e *apiError) {
	body := errorBody{RequestId: requestID, HostId: host, Code: e.Code, Message: e.Message}
	if e.Code == "SignatureDoesNotMatch" || e.Code == "IncompleteSignature" {
		body.Recommend = "https://api.aliyun.com/troubleshoot?q=" + e.Code
	}
	writeJSON(w, e.Status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
