package cloudassist

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strings"
	"time"
)

// TaskCompletedType is the EventBridge event type Alibaba pushes when an
// instance's run of a Cloud Assistant command ends.
const TaskCompletedType = "ecs:CloudAssistant:TaskCompleted"

// MaxHintBody is the largest body of hints taken: EventBridge's events are
// a few hundred bytes; a batch of them stays far below.
const MaxHintBody = 1 << 20

// Hint is one TaskCompleted event pushed by EventBridge: a reason to look
// at an invocation now. Its status and exit code are what the push said,
// and are never published: only what a look-up returns is.
type Hint struct {
	ID         string // the event's id
	AccountUID string // aliyunaccountid
	Region     string // aliyunregionid
	InvokeID   string
	InstanceID string
	Status     string // the push's invocationStatus, for logs only
	Time       time.Time
}

// HintError is why a body of hints was refused; Reason is a short label
// for metrics: content_type, malformed, empty, type, source, region, id,
// too_many.
type HintError struct {
	Reason string
	Err    error
}

func (e *HintError) Error() string {
	return "cloudassist: hint refused (" + e.Reason + "): " + e.Err.Error()
}

func (e *HintError) Unwrap() error { return e.Err }

// maxHintBatch bounds the events of one batch.
const maxHintBatch = 1000

// taskCompleted is the CloudEvents envelope EventBridge delivers in
// structured mode, and the fields of its data a hint needs. Unknown fields
// are ignored.
type taskCompleted struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Type            string          `json:"type"`
	Source          string          `json:"source"`
	Subject         string          `json:"subject"`
	Time            string          `json:"time"`
	AliyunAccountID json.RawMessage `json:"aliyunaccountid"`
	AliyunRegionID  string          `json:"aliyunregionid"`
	Data            struct {
		InvokeID         string `json:"invokeId"`
		InstanceID       string `json:"instanceId"`
		InvocationStatus string `json:"invocationStatus"`
	} `json:"data"`
}

// ParseHints reads a body EventBridge posts, by its Content-Type: one
// CloudEvent (application/cloudevents+json or application/json) or a
// batch (application/cloudevents-batch+json, a JSON array). Every event
// must be a TaskCompleted from acs.ecs with an account, a region, an
// invocation id and an instance id; one that is not refuses the whole
// body, with a [*HintError] naming why.
func ParseHints(body []byte, contentType string) ([]Hint, error) {
	media, _, err := mime.ParseMediaType(contentType)
	if err != nil && contentType != "" {
		return nil, &HintError{"content_type", fmt.Errorf("Content-Type %q: %w", contentType, err)}
	}
	var raw []taskCompleted
	switch media {
	case "application/cloudevents-batch+json":
		if err := decodeStrictly(body, &raw); err != nil {
			return nil, &HintError{"malformed", err}
		}
		if len(raw) == 0 {
			return nil, &HintError{"empty", errors.New("a batch with no event")}
		}
		if len(raw) > maxHintBatch {
			return nil, &HintError{"too_many", fmt.Errorf("%d events in a batch, at most %d", len(raw), maxHintBatch)}
		}
	case "application/cloudevents+json", "application/json", "":
		var one taskCompleted
		if err := decodeStrictly(body, &one); err != nil {
			return nil, &HintError{"malformed", err}
		}
		raw = []taskCompleted{one}
	default:
		return nil, &HintError{"content_type", fmt.Errorf("Content-Type %q: want application/cloudevents+json, application/json or application/cloudevents-batch+json", media)}
	}
	hints := make([]Hint, 0, len(raw))
	for i, e := range raw {
		h, err := e.hint()
		if err != nil {
			err.Err = fmt.Errorf("event %d: %w", i+1, err.Err)
			return nil, err
		}
		hints = append(hints, h)
	}
	return hints, nil
}

// decodeStrictly decodes one JSON value and refuses anything after it.
func decodeStrictly(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}

// hint checks one event and returns its hint.
func (e taskCompleted) hint() (Hint, *HintError) {
	switch {
	case e.Type != TaskCompletedType:
		return Hint{}, &HintError{"type", fmt.Errorf("type %q: want %s", clipHint(e.Type), TaskCompletedType)}
	case e.Source != "acs.ecs":
		return Hint{}, &HintError{"source", fmt.Errorf("source %q: want acs.ecs", clipHint(e.Source))}
	case !ValidRegion(e.AliyunRegionID):
		return Hint{}, &HintError{"region", fmt.Errorf("aliyunregionid %q: not a region id", clipHint(e.AliyunRegionID))}
	}
	uid, ok := accountUID(e.AliyunAccountID)
	if !ok {
		return Hint{}, &HintError{"id", errors.New("aliyunaccountid: want the account's numeric uid")}
	}
	if !hintID(e.Data.InvokeID) || !hintID(e.Data.InstanceID) {
		return Hint{}, &HintError{"id", fmt.Errorf("data.invokeId %q and data.instanceId %q: want both, printable, at most 128 bytes",
			clipHint(e.Data.InvokeID), clipHint(e.Data.InstanceID))}
	}
	t, _ := time.Parse(time.RFC3339, e.Time)
	return Hint{ID: clipHint(e.ID), AccountUID: uid, Region: e.AliyunRegionID, InvokeID: e.Data.InvokeID, InstanceID: e.Data.InstanceID,
		Status: clipHint(e.Data.InvocationStatus), Time: t}, nil
}

// accountUID reads aliyunaccountid, a string or a number of digits.
func accountUID(raw json.RawMessage) (string, bool) {
	s := strings.Trim(string(raw), `"`)
	if s == "" || len(s) > 32 || strings.Trim(s, "0123456789") != "" {
		return "", false
	}
	return s, true
}

// hintID accepts an id an API could have made: printable ASCII, no space.
func hintID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// clipHint bounds a pushed text before it reaches an error or a log.
func clipHint(s string) string {
	const most = 64
	if len(s) > most {
		s = s[:most] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
