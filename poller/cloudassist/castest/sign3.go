package castest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// acs3 is the V3 signature algorithm casim verifies. ACS3-HMAC-SM3 and
// ACS3-RSA-SHA256 exist too; casim refuses them by name.
const acs3 = "ACS3-HMAC-SHA256"

// v3Request is what the V3 signature covers, taken from an HTTP request.
type v3Request struct {
	method string
	path   string
	query  url.Values // the query string only: a form body is covered by the payload hash
	header http.Header
	host   string
	body   []byte
}

// v3Authorization is the parsed Authorization header:
// "ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=a;b,Signature=hex".
type v3Authorization struct {
	credential    string
	signedHeaders []string
	signature     string
}

// signedV3 reports whether a request carries a V3 signature.
func signedV3(h http.Header) bool {
	return strings.HasPrefix(h.Get("Authorization"), "ACS3-")
}

func incomplete(format string, args ...any) *apiError {
	return errorf(http.StatusBadRequest, "IncompleteSignature", "The request signature does not conform to Aliyun standards. "+format, args...)
}

// parseV3Authorization parses the Authorization header; a missing part is
// IncompleteSignature, another algorithm InvalidSignatureMethod.
func parseV3Authorization(header string) (v3Authorization, *apiError) {
	alg, rest, _ := strings.Cut(header, " ")
	if alg != acs3 {
		return v3Authorization{}, errorf(http.StatusBadRequest, "InvalidSignatureMethod",
			"The specified signature method %q is not supported; casim verifies %s.", alg, acs3)
	}
	var a v3Authorization
	for part := range strings.SplitSeq(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			a.credential = v
		case "SignedHeaders":
			if v != "" {
				a.signedHeaders = strings.Split(v, ";")
			}
		case "Signature":
			a.signature = v
		}
	}
	switch {
	case a.credential == "":
		return a, incomplete("The Authorization header has no Credential.")
	case len(a.signedHeaders) == 0:
		return a, incomplete("The Authorization header has no SignedHeaders.")
	case a.signature == "":
		return a, incomplete("The Authorization header has no Signature.")
	}
	return a, nil
}

// verifyV3 checks an ACS3-HMAC-SHA256 signature (Alibaba's "V3 request
// structure and signature", https://www.alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature,
// as the V2 SDKs' darabonba-openapi signer computes it) and its replay
// protections, and returns the name of the account whose key signed it.
func (s *Server) verifyV3(req v3Request, now time.Time) (string, *apiError) {
	auth, e := parseV3Authorization(req.header.Get("Authorization"))
	if e != nil {
		return "", e
	}
	for _, h := range []string{"x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"} {
		if req.header.Get(h) == "" {
			return "", incomplete("The request has no %s header.", h)
		}
	}
	// Every x-acs-* header and host must be signed, so that none can be
	// changed in transit; content-type is signed when the client signed it.
	for name := range req.header {
		if n := strings.ToLower(name); strings.HasPrefix(n, "x-acs-") && !slices.Contains(auth.signedHeaders, n) {
			return "", incomplete("The header %s is not in SignedHeaders.", n)
		}
	}
	if !slices.Contains(auth.signedHeaders, "host") {
		return "", incomplete("The header host is not in SignedHeaders.")
	}
	account, ok := s.accountOf(auth.credential)
	if !ok {
		return "", errorf(http.StatusNotFound, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
	}
	if id := req.header.Get("x-acs-accesskey-id"); id != "" && id != auth.credential {
		return "", errorf(http.StatusBadRequest, "IncompleteSignature", "The x-acs-accesskey-id header does not match the Credential.")
	}
	ts, err := time.Parse("2006-01-02T15:04:05Z", req.header.Get("x-acs-date"))
	if err != nil {
		return "", errorf(http.StatusBadRequest, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.")
	}
	if d := now.Sub(ts); d > maxClockSkew || d < -maxClockSkew {
		return "", errorf(http.StatusBadRequest, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
	}
	toSign := stringToSignV3(req, auth.signedHeaders)
	mac := hmac.New(sha256.New, []byte(account.AccessKeySecret))
	mac.Write([]byte(toSign))
	if !hmac.Equal([]byte(hex.EncodeToString(mac.Sum(nil))), []byte(strings.ToLower(auth.signature))) {
		return "", errorf(http.StatusBadRequest, "SignatureDoesNotMatch",
			"Specified signature is not matched with our calculation. server string to sign is:%s", toSign)
	}
	if e := checkSecurityToken(account.SecurityToken, req.header.Get("x-acs-security-token")); e != nil {
		return "", e
	}
	if e := s.useNonce(account.AccessKeyID, req.header.Get("x-acs-signature-nonce"), now); e != nil {
		return "", e
	}
	return account.Name, nil
}

// stringToSignV3 is "ACS3-HMAC-SHA256\n" + hex(sha256(canonical request)).
// The canonical request hashes the body the server received, so a body
// that is not the one the client hashed fails as SignatureDoesNotMatch.
func stringToSignV3(req v3Request, signed []string) string {
	payload := sha256.Sum256(req.body)
	var headers strings.Builder
	for _, name := range signed {
		var vals []string
		if name == "host" {
			vals = []string{req.host}
		} else {
			for _, v := range req.header.Values(name) {
				vals = append(vals, strings.TrimSpace(v))
			}
		}
		slices.Sort(vals)
		headers.WriteString(name + ":" + strings.Join(vals, ",") + "\n")
	}
	path := req.path
	if path == "" {
		path = "/"
	}
	canonical := strings.Join([]string{req.method, path, canonicalQueryV3(req.query), headers.String(),
		strings.Join(signed, ";"), hex.EncodeToString(payload[:])}, "\n")
	sum := sha256.Sum256([]byte(canonical))
	return acs3 + "\n" + hex.EncodeToString(sum[:])
}

// canonicalQueryV3 sorts the parameters by name and percent-encodes names
// and values by RFC 3986 (space as %20, "~" kept).
func canonicalQueryV3(q url.Values) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(q)) {
		vals := slices.Clone(q[k])
		slices.Sort(vals)
		for _, v := range vals {
			parts = append(parts, percentEncode(k)+"="+percentEncode(v))
		}
	}
	return strings.Join(parts, "&")
}

func percentEncode(s string) string {
	return strings.NewReplacer("+", "%20", "*", "%2A", "%7E", "~").Replace(url.QueryEscape(s))
}

// useNonce remembers a correctly signed request's nonce and refuses one
// seen within nonceTTL. Nonces are kept only for correctly signed
// requests, so a forged request cannot burn a legitimate client's nonce;
// each access key has nonces of its own.
func (s *Server) useNonce(accessKeyID, nonce string, now time.Time) *apiError {
	key := accessKeyID + "\x00" + nonce
	s.nonceMu.Lock()
	defer s.nonceMu.Unlock()
	for n, exp := range s.nonces {
		if now.After(exp) {
			delete(s.nonces, n)
		}
	}
	if _, seen := s.nonces[key]; seen {
		return errorf(http.StatusBadRequest, "SignatureNonceUsed", "Specified signature nonce was used already.")
	}
	s.nonces[key] = now.Add(nonceTTL)
	return nil
}
