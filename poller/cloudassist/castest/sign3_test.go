package castest

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	openapiutil "github.com/alibabacloud-go/darabonba-openapi/v2/utils"
	"github.com/alibabacloud-go/tea/dara"
)

// v3Call is one hand-made ACS3 request, signed by the V2 SDK's own signer
// (openapiutil.GetAuthorization), that a test may spoil after signing.
type v3Call struct {
	headers map[string]string
	query   map[string]string
	body    string
}

func newV3Call(base, action string) *v3Call {
	return &v3Call{
		headers: map[string]string{
			"host": strings.TrimPrefix(base, "http://"), "x-acs-action": action, "x-acs-version": "2014-05-26",
			"x-acs-date": time.Now().UTC().Format("2006-01-02T15:04:05Z"), "x-acs-signature-nonce": randomHex(16),
		},
		query: map[string]string{"RegionId": "cn-hangzhou"},
	}
}

// sign sets x-acs-content-sha256 and Authorization as the SDK does.
func (c *v3Call) sign(key string) {
	sum := sha256.Sum256([]byte(c.body))
	c.headers["x-acs-content-sha256"] = hex.EncodeToString(sum[:])
	if c.body != "" {
		c.headers["content-type"] = "application/x-www-form-urlencoded"
	}
	req := dara.NewRequest()
	req.Method, req.Pathname = dara.String(http.MethodPost), dara.String("/")
	for k, v := range c.query {
		req.Query[k] = dara.String(v)
	}
	for k, v := range c.headers {
		req.Headers[k] = dara.String(v)
	}
	c.headers["Authorization"] = dara.StringValue(openapiutil.GetAuthorization(req, dara.String(acs3),
		dara.String(c.headers["x-acs-content-sha256"]), dara.String(keyID), dara.String(key)))
}

func (c *v3Call) send(t *testing.T, base string) (int, map[string]any) {
	t.Helper()
	q := url.Values{}
	for k, v := range c.query {
		q.Set(k, v)
	}
	req, err := http.NewRequest(http.MethodPost, base+"/?"+q.Encode(), strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range c.headers {
		if k != "host" {
			req.Header.Set(k, v)
		}
	}
	return answer(t, req)
}

func TestV3SignatureChecks(t *testing.T) {
	_, base := newServer(t)
	good := newV3Call(base, "DescribeInvocations")
	good.sign(secret)
	if status, body := good.send(t, base); status != 200 || body["RequestId"] == "" {
		t.Fatalf("a well signed V3 request failed: %d %v", status, body)
	}
	if status, body := good.send(t, base); status != 400 || body["Code"] != "SignatureNonceUsed" {
		t.Errorf("a replayed nonce: %d %v", status, body)
	}
	form := newV3Call(base, "DescribeInvocations")
	form.body = "InvokeStatus=Running&MaxResults=5"
	form.sign(secret)
	if status, body := form.send(t, base); status != 200 || body["PageSize"] != 5.0 {
		t.Errorf("parameters in a signed form body: %d %v", status, body)
	}
	cases := map[string]struct {
		spoil  func(c *v3Call)
		status int
		code   string
	}{
		"another body than the one hashed": {func(c *v3Call) { c.body = "MaxResults=6" }, 400, "SignatureDoesNotMatch"},
		"a query changed after signing":    {func(c *v3Call) { c.query["InvokeId"] = "t-other" }, 400, "SignatureDoesNotMatch"},
		"a header changed after signing":   {func(c *v3Call) { c.headers["x-acs-action"] = "DescribeInvocationResults" }, 400, "SignatureDoesNotMatch"},
		"no Signature": {func(c *v3Call) {
			c.headers["Authorization"] = strings.Split(c.headers["Authorization"], ",Signature=")[0]
		}, 400, "IncompleteSignature"},
		"an unsigned x-acs header": {func(c *v3Call) { c.headers["x-acs-extra"] = "1" }, 400, "IncompleteSignature"},
		"no x-acs-date":            {func(c *v3Call) { delete(c.headers, "x-acs-date") }, 400, "IncompleteSignature"},
		"an old x-acs-date": {func(c *v3Call) {
			c.headers["x-acs-date"] = time.Now().Add(-20 * time.Minute).UTC().Format("2006-01-02T15:04:05Z")
		}, 400, "InvalidTimeStamp.Expired"},
		"another algorithm": {func(c *v3Call) {
			c.headers["Authorization"] = strings.Replace(c.headers["Authorization"], acs3, "ACS3-HMAC-SM3", 1)
		}, 400, "InvalidSignatureMethod"},
	}
	for name, tc := range cases {
		c := newV3Call(base, "DescribeInvocations")
		c.body = "MaxResults=5"
		if name == "an old x-acs-date" {
			tc.spoil(c) // the date is signed: an old one fails on its age, not the signature
			c.sign(secret)
		} else {
			c.sign(secret)
			tc.spoil(c)
		}
		status, body := c.send(t, base)
		if status != tc.status || body["Code"] != tc.code || body["RequestId"] == "" || body["Message"] == "" {
			t.Errorf("%s: %d %v, want %d %s", name, status, body, tc.status, tc.code)
		}
	}
	wrong := newV3Call(base, "DescribeInvocations")
	wrong.sign("not-the-secret")
	if status, body := wrong.send(t, base); status != 400 || body["Code"] != "SignatureDoesNotMatch" || body["Recommend"] == nil {
		t.Errorf("a wrong secret: %d %v", status, body)
	}
	// Signature v1 still works on the same listener.
	if status, body := call(t, base, url.Values{"Action": {"DescribeInvocations"}}, secret, time.Now()); status != 200 {
		t.Errorf("a v1 request after V3 ones: %d %v", status, body)
	}
}
