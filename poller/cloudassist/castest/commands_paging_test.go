package castest

import (
	"encoding/base64"
	"encoding/binary"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// TestHostilePagingOfTheCommandListings: a page number whose offset
// overflows is an empty page, and a NextToken that points beyond the
// listing is refused as invalid, for DescribeCommands and
// DescribeCloudAssistantStatus; neither drops the connection.
func TestHostilePagingOfTheCommandListings(t *testing.T) {
	_, base := newServer(t)
	far := base64.RawURLEncoding.EncodeToString(binary.BigEndian.AppendUint64([]byte{'c'}, math.MaxUint64))
	for _, action := range []string{"DescribeCommands", "DescribeCloudAssistantStatus"} {
		code, body := call(t, base, url.Values{"Action": {action}, "PageNumber": {strconv.Itoa(math.MaxInt)}, "PageSize": {"50"}}, secret, time.Now())
		if code != http.StatusOK {
			t.Errorf("%s PageNumber=MaxInt: %d %v, want an empty page", action, code, body)
		}
		code, body = call(t, base, url.Values{"Action": {action}, "MaxResults": {"10"}, "NextToken": {far}}, secret, time.Now())
		if code != http.StatusBadRequest || body["Code"] != "InvalidParameter.NextToken" {
			t.Errorf("%s NextToken beyond the listing: %d %v, want InvalidParameter.NextToken", action, code, body)
		}
	}
}
