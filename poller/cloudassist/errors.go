package cloudassist

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
)

// Class says what the poller should do about an error.
type Class int

// The error classes, from least to most severe.
const (
	// ClassTransient: 5xx, InternalError*, ServiceUnavailable, network
	// errors, timeouts, undecodable bodies. Retry with exponential backoff.
	ClassTransient Class = iota
	// ClassThrottled: Throttling*, Rejected.Throttling or HTTP 429. Wait at
	// least until the next minute boundary.
	ClassThrottled
	// ClassInvalidToken: the NextToken was refused. Restart the listing.
	ClassInvalidToken
	// ClassPermanent: bad region, credentials, signature, permissions or
	// parameters. Retrying soon will not help; report it.
	ClassPermanent
)

func (c Class) String() string {
	switch c {
	case ClassTransient:
		return "transient"
	case ClassThrottled:
		return "throttled"
	case ClassInvalidToken:
		return "invalid_token"
	case ClassPermanent:
		return "permanent"
	}
	return fmt.Sprintf("class(%d)", int(c))
}

// APIError is a failed Cloud Assistant call. Its text never carries
// secrets: the SDK's own messages, which can embed signed URLs, are redacted.
type APIError struct {
	Action     string
	Class      Class
	Code       string // Alibaba's error code, or the SDK's (SDK.JsonUnmarshalError…); empty for network errors
	HTTPStatus int    // 0 when no response was received
	RequestID  string
	Message    string
}

func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString(e.Action)
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.HTTPStatus)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (request %s)", e.RequestID)
	}
	fmt.Fprintf(&b, " [%s]", e.Class)
	return b.String()
}

// Throttled reports whether the API throttled the call: its retry waits
// for the next window (see poller.RetryClasser).
func (e *APIError) Throttled() bool { return e.Class == ClassThrottled }

// Permanent reports whether retrying the call cannot help soon.
func (e *APIError) Permanent() bool { return e.Class == ClassPermanent }

// ClassOf classifies any error returned by this package. Errors that are
// not an *APIError (a malformed response, for instance) are transient.
func ClassOf(err error) Class {
	if apiErr, ok := errors.AsType[*APIError](err); ok {
		return apiErr.Class
	}
	return ClassTransient
}

// translate turns whatever the SDK returned into an *APIError.
func translate(action string, err error) *APIError {
	out := &APIError{Action: action, Class: ClassTransient}
	var serverErr *sdkerrors.ServerError
	var clientErr *sdkerrors.ClientError
	switch {
	case errors.As(err, &serverErr):
		out.Code, out.HTTPStatus, out.RequestID = serverErr.ErrorCode(), serverErr.HttpStatus(), serverErr.RequestId()
		out.Message = redact(serverErr.Message())
		out.Class = classifyServer(out.Code, out.HTTPStatus)
	case errors.As(err, &clientErr):
		// ClientError.HttpStatus() is always 400, so it is not reported.
		out.Code, out.Message = clientErr.ErrorCode(), redact(clientErr.Message())
		switch out.Code {
		case "SDK.CanNotResolveEndpoint", "SDK.UnsupportedCredential", "SDK.InvalidParam", "SDK.MissingParam":
			out.Class = ClassPermanent
		}
		if origin := clientErr.OriginError(); origin != nil {
			out.Message += ": " + describeNetError(origin)
		}
	default:
		out.Message = describeNetError(err)
		if strings.Contains(out.Message, "providers in the chain") || strings.Contains(out.Message, "credential") {
			out.Class = ClassPermanent
		}
	}
	return out
}

func classifyServer(code string, status int) Class {
	switch {
	case code == "Throttling" || strings.HasPrefix(code, "Throttling.") || code == "Rejected.Throttling" || status == 429:
		return ClassThrottled
	case code == "InvalidParameter.NextToken" || code == "Invalid.NextToken":
		return ClassInvalidToken
	case status >= 500, code == "ServiceUnavailable", code == "SystemBusy", code == "ServiceBusy",
		code == "InternalError", strings.HasPrefix(code, "InternalError."):
		return ClassTransient
	case code == "":
		return ClassTransient
	}
	return ClassPermanent
}

// describeNetError renders a transport error without the signed URL that
// *url.Error carries.
func describeNetError(err error) string {
	if urlErr, ok := errors.AsType[*url.Error](err); ok {
		host := ""
		if u, perr := url.Parse(urlErr.URL); perr == nil {
			host = u.Host
		}
		msg := fmt.Sprintf("%s %s: %v", urlErr.Op, host, describeNetError(urlErr.Err))
		return redact(msg)
	}
	if netErr, ok := errors.AsType[net.Error](err); ok && netErr.Timeout() {
		return "timeout: " + redact(netErr.Error())
	}
	return redact(err.Error())
}

// redact removes what must never reach a log: query strings of URLs, the
// server's echo of the string to sign, and credential parameters in plain
// or percent-encoded form. Long texts (an HTML error page) are cut.
func redact(s string) string {
	if i := strings.Index(s, "server string to sign is"); i >= 0 {
		s = strings.TrimSpace(s[:i])
	}
	for _, scheme := range []string{"http://", "https://"} {
		s = redactQueries(s, scheme)
	}
	for _, key := range []string{"AccessKeyId", "SecurityToken", "Signature", "BearerToken", "AccessKeySecret"} {
		for _, sep := range []string{"=", "%3D", "%253D"} {
			s = redactValue(s, key+sep)
		}
	}
	const maxLen = 300
	if len(s) > maxLen {
		s = s[:maxLen] + "…"
	}
	return s
}

func redactQueries(s, scheme string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, scheme)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		end := i + strings.IndexFunc(s[i:], isDelimiter)
		if end < i {
			end = len(s)
		}
		u := s[i:end]
		if q := strings.IndexByte(u, '?'); q >= 0 {
			u = u[:q] + "?REDACTED"
		}
		b.WriteString(s[:i])
		b.WriteString(u)
		s = s[end:]
	}
}

// redactValue replaces the value after each occurrence of marker. A value
// ends at the next parameter separator, plain ("&") or percent-encoded
// ("%26", "%2526"), or at a delimiter; percent-escapes inside the value
// (a token's "%2B") do not end it.
func redactValue(s, marker string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, marker)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		start := i + len(marker)
		end := len(s)
		if j := strings.IndexFunc(s[start:], func(r rune) bool { return r == '&' || isDelimiter(r) }); j >= 0 {
			end = start + j
		}
		for _, sep := range []string{"%26", "%2526"} {
			if j := strings.Index(s[start:end], sep); j >= 0 {
				end = start + j
			}
		}
		b.WriteString(s[:start])
		b.WriteString("REDACTED")
		s = s[end:]
	}
}

func isDelimiter(r rune) bool {
	return r == ' ' || r == '\n' || r == '\t' || r == '"' || r == '\'' || r == ',' || r == ')'
}
