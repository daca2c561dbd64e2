package castest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// OSS delivery statuses (seed 002, OssOutputStatus).
const (
	ossInProgress = "InProgress"
	ossFinished   = "Finished"
	ossFailed     = "Failed"
)

// maxObjectName is OSS's limit on an object name, in bytes.
const maxObjectName = 1023

// ossOutput is the OSS delivery of one run's output, as both ECS listings
// show it (seed 002; DescribeInvocations' InvokeInstance has the same
// fields). Its zero value, for an invocation without delivery, sends
// nothing. OssOutputUri is sent, empty, while the delivery is in progress
// or after it failed; the error fields only when it failed.
type ossOutput struct {
	OssOutputStatus    string  `json:"OssOutputStatus,omitempty"`
	OssOutputUri       *string `json:"OssOutputUri,omitempty"`
	OssOutputErrorCode string  `json:"OssOutputErrorCode,omitempty"`
	OssOutputErrorInfo string  `json:"OssOutputErrorInfo,omitempty"`
}

// ossTarget is a parsed OssOutputDelivery: oss://BUCKET[/PREFIX].
type ossTarget struct {
	bucket, prefix string
}

// parseOssDelivery reads RunCommand's OssOutputDelivery (documented format
// oss://${BucketName}/${Prefix}). The bucket is 3 to 63 letters, digits
// and hyphens (the documented example, testBucket, has capitals, so they
// are accepted); the prefix may be empty.
func parseOssDelivery(v string) (ossTarget, error) {
	rest, ok := strings.CutPrefix(v, "oss://")
	if !ok {
		return ossTarget{}, fmt.Errorf("want oss://BUCKET[/PREFIX], got %q", v)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	if len(bucket) < 3 || len(bucket) > 63 {
		return ossTarget{}, fmt.Errorf("bucket %q: want 3 to 63 characters", bucket)
	}
	for _, c := range []byte(bucket) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return ossTarget{}, fmt.Errorf("bucket %q: want letters, digits and hyphens", bucket)
		}
	}
	for _, c := range []byte(prefix) {
		if c < 0x20 || c == 0x7f {
			return ossTarget{}, fmt.Errorf("prefix %q has a control character", prefix)
		}
	}
	return ossTarget{bucket: bucket, prefix: strings.Trim(prefix, "/")}, nil
}

// object is where a run's output goes: PREFIX/INVOKEID/INSTANCEID/REPEATS/output.txt.
func (t ossTarget) object(invokeID, instanceID string, repeats int) string {
	parts := []string{invokeID, instanceID, strconv.Itoa(repeats), "output.txt"}
	if t.prefix != "" {
		parts = append([]string{t.prefix}, parts...)
	}
	return strings.Join(parts, "/")
}

// ossErrorInfo is the OssOutputErrorInfo of a delivery error code: the
// documented text for UnsupportedInvocationStatus, the documented
// description of the others.
func ossErrorInfo(code string) string {
	switch code {
	case "CloudAssistant.UnsupportedInvocationStatus":
		return "The invocation status does not support output delivery."
	case "OSS.AccessDenied":
		return "The user does not have access permissions to the specified bucket."
	case "OSS.NoSuchBucket":
		return "The specified bucket does not exist."
	case "OSS.FileImmutable":
		return "The data in the bucket is in a protection status."
	case "OSS.InvalidObjectName":
		return "The object name is invalid."
	}
	return ""
}

// delivery is the state at now of the OSS delivery of a run of inv on
// instanceID whose outcome is res: in progress until delay after the run
// ended, then finished or failed. A run that never started has nothing to
// deliver (CloudAssistant.UnsupportedInvocationStatus); the bucket's name
// decides the OSS errors (see the package documentation).
func delivery(inv *invocation, instanceID string, res runResult, now time.Time, delay time.Duration) ossOutput {
	if inv.OssOutputDelivery == "" {
		return ossOutput{}
	}
	uri := ""
	if res.Finish.IsZero() || now.Before(res.Finish.Add(delay)) {
		return ossOutput{OssOutputStatus: ossInProgress, OssOutputUri: &uri}
	}
	target, err := parseOssDelivery(inv.OssOutputDelivery)
	object := target.object(inv.InvokeID, instanceID, res.Repeats)
	code := ""
	switch {
	case err != nil: // refused by RunCommand; only a hand-edited saved state gets here
		code = "OSS.InvalidObjectName"
	case res.Start.IsZero():
		code = "CloudAssistant.UnsupportedInvocationStatus"
	case strings.HasPrefix(target.bucket, "nosuch"):
		code = "OSS.NoSuchBucket"
	case strings.HasPrefix(target.bucket, "denied"):
		code = "OSS.AccessDenied"
	case strings.HasPrefix(target.bucket, "immutable"):
		code = "OSS.FileImmutable"
	case len(object) > maxObjectName:
		code = "OSS.InvalidObjectName"
	}
	if code != "" {
		return ossOutput{OssOutputStatus: ossFailed, OssOutputUri: &uri, OssOutputErrorCode: code, OssOutputErrorInfo: ossErrorInfo(code)}
	}
	uri = "oss://" + target.bucket + "/" + object
	return ossOutput{OssOutputStatus: ossFinished, OssOutputUri: &uri}
}
