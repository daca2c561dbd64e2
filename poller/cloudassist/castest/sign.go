package castest

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Tolerances of the signature check, as Alibaba applies them.
const (
	maxClockSkew = 15 * time.Minute
	// nonceTTL outlasts every request a nonce came with: one dated
	// maxClockSkew ahead is accepted until maxClockSkew after that date.
	nonceTTL = 2 * maxClockSkew
)

// verify checks an RPC request's signature v1 and its replay protections,
// and returns the name of the account whose key signed it. params holds
// the merged query and form parameters.
func (s *Server) verify(method string, params url.Values, now time.Time) (string, *apiError) {
	for _, p := range []string{"AccessKeyId", "Signature", "SignatureMethod", "SignatureNonce", "Timestamp"} {
		if params.Get(p) == "" {
			return "", missing(p)
		}
	}
	if m := params.Get("SignatureMethod"); m != "HMAC-SHA1" {
		return "", errorf(http.StatusBadRequest, "InvalidSignatureMethod", "The specified signature method %q is not supported.", m)
	}
	if v := params.Get("SignatureVersion"); v != "1.0" {
		return "", errorf(http.StatusBadRequest, "InvalidSignatureVersion", "The specified signature version %q is not supported.", v)
	}
	account, ok := s.accountOf(params.Get("AccessKeyId"))
	if !ok {
		return "", errorf(http.StatusNotFound, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
	}
	ts, err := time.Parse("2006-01-02T15:04:05Z", params.Get("Timestamp"))
	if err != nil {
		return "", errorf(http.StatusBadRequest, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.")
	}
	if d := now.Sub(ts); d > maxClockSkew || d < -maxClockSkew {
		return "", errorf(http.StatusBadRequest, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
	}
	want := signRPC(method, params, account.AccessKeySecret)
	if !hmac.Equal([]byte(want), []byte(params.Get("Signature"))) {
		return "", errorf(http.StatusBadRequest, "SignatureDoesNotMatch",
			"Specified signature is not matched with our calculation. server string to sign is:%s", stringToSign(method, params))
	}
	if e := checkSecurityToken(account.SecurityToken, params.Get("SecurityToken")); e != nil {
		return "", e
	}
	if e := s.useNonce(account.AccessKeyID, params.Get("SignatureNonce"), now); e != nil {
		return "", e
	}
	return account.Name, nil
}

// stringToSign builds Alibaba's RPC signature v1 string to sign: the sorted,
// percent-encoded parameters (without Signature), encoded once more.
func stringToSign(method string, params url.Values) string {
	signed := url.Values{}
	for k, v := range params {
		if k != "Signature" {
			signed[k] = v
		}
	}
	canon := signed.Encode()
	canon = strings.NewReplacer("+", "%20", "*", "%2A", "%7E", "~").Replace(canon)
	return method + "&%2F&" + url.QueryEscape(canon)
}

func signRPC(method string, params url.Values, secret string) string {
	mac := hmac.New(sha1.New, []byte(secret+"&"))
	mac.Write([]byte(stringToSign(method, params)))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
