package cloudassist

import (
	"errors"
	"strings"
	"testing"
)

const taskCompletedEvent = `{"specversion":"1.0","id":"45ef4dewdwe1-7c35-447a-bd93-fab****","source":"acs.ecs","type":"ecs:CloudAssistant:TaskCompleted",
"subject":"acs:ecs:cn-hangzhou:1234567890123456:instance/i-bp1abc","time":"2026-12-01T03:00:06Z","aliyunaccountid":"1234567890123456",
"aliyunregionid":"cn-hangzhou","aliyunpublishtime":"2026-12-01T03:00:06.123Z","aliyuneventbusname":"default","datacontenttype":"application/json",
"data":{"invokeId":"t-hz0jdfwd9f","instanceId":"i-bp1abc","invocationStatus":"Failed","exitCode":"1","finishTime":"2026-12-01T03:00:05Z",
"commandName":"deploy","somethingNew":{"x":1}}}`

// TestParseHints: EventBridge's shape is taken (one event, or a batch),
// unknown fields ignored; each refusal names its reason.
func TestParseHints(t *testing.T) {
	hs, err := ParseHints([]byte(taskCompletedEvent), "application/cloudevents+json; charset=utf-8")
	if err != nil || len(hs) != 1 || hs[0].InvokeID != "t-hz0jdfwd9f" || hs[0].InstanceID != "i-bp1abc" || hs[0].Region != "cn-hangzhou" ||
		hs[0].AccountUID != "1234567890123456" || hs[0].Status != "Failed" || hs[0].Time.IsZero() {
		t.Fatalf("one event: %+v, %v", hs, err)
	}
	if hs, err := ParseHints([]byte("["+taskCompletedEvent+","+taskCompletedEvent+"]"), "application/cloudevents-batch+json"); err != nil || len(hs) != 2 {
		t.Errorf("a batch: %d, %v", len(hs), err)
	}
	numeric := strings.Replace(taskCompletedEvent, `"aliyunaccountid":"1234567890123456"`, `"aliyunaccountid":1234567890123456`, 1)
	if hs, err := ParseHints([]byte(numeric), "application/json"); err != nil || hs[0].AccountUID != "1234567890123456" {
		t.Errorf("a numeric account id: %+v, %v", hs, err)
	}
	for _, c := range []struct{ body, ctype, reason string }{
		{strings.Replace(taskCompletedEvent, "TaskCompleted", "TaskStarted", 1), "application/json", "type"},
		{strings.Replace(taskCompletedEvent, `"source":"acs.ecs"`, `"source":"acs.oss"`, 1), "application/json", "source"},
		{strings.Replace(taskCompletedEvent, `"aliyunregionid":"cn-hangzhou"`, `"aliyunregionid":""`, 1), "application/json", "region"},
		{strings.Replace(taskCompletedEvent, `"invokeId":"t-hz0jdfwd9f"`, `"invokeId":""`, 1), "application/json", "id"},
		{strings.Replace(taskCompletedEvent, `"aliyunaccountid":"1234567890123456"`, `"aliyunaccountid":"abc"`, 1), "application/json", "id"},
		{taskCompletedEvent, "text/plain", "content_type"},
		{"[]", "application/cloudevents-batch+json", "empty"},
		{"{", "application/json", "malformed"},
		{taskCompletedEvent + "{}", "application/json", "malformed"},
	} {
		_, err := ParseHints([]byte(c.body), c.ctype)
		var he *HintError
		if !errors.As(err, &he) || he.Reason != c.reason {
			t.Errorf("%s %.60q: %v, want reason %s", c.ctype, c.body, err, c.reason)
		}
	}
}

// FuzzParseHints: no body panics the decoder, and every hint it accepts
// names a region and printable ids.
func FuzzParseHints(f *testing.F) {
	f.Add([]byte(taskCompletedEvent), "application/json")
	f.Add([]byte("["+taskCompletedEvent+"]"), "application/cloudevents-batch+json")
	f.Add([]byte(`{"type":1}`), "application/cloudevents+json")
	f.Fuzz(func(t *testing.T, body []byte, ctype string) {
		hs, err := ParseHints(body, ctype)
		if err != nil {
			return
		}
		for _, h := range hs {
			if !ValidRegion(h.Region) || !hintID(h.InvokeID) || !hintID(h.InstanceID) || h.AccountUID == "" {
				t.Fatalf("accepted %+v", h)
			}
		}
	})
}
