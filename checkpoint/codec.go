package checkpoint

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/capoller/capoller/diff"
)

// ErrCorrupt marks a stored value that cannot be decoded. It is reported,
// never silently treated as "no state", which would re-announce records.
var ErrCorrupt = errors.New("checkpoint: corrupt stored state")

// field is the per-shard name of a record: "invokeId" for the aggregate,
// "invokeId/instanceId" for an instance.
func field(k diff.Key) string {
	if k.InstanceID == "" {
		return k.InvokeID
	}
	return k.InvokeID + "/" + k.InstanceID
}

// encodeState is "status|repeats|observedAtUnixNano", plus "|gone" for a
// tombstone: compact, since a region can hold 100,000 records.
func encodeState(s diff.State) string {
	v := string(s.Status) + "|" + strconv.Itoa(s.Repeats) + "|" + strconv.FormatInt(s.ObservedAt.UnixNano(), 10)
	if s.Gone {
		v += "|gone"
	}
	return v
}

func decodeState(v string) (diff.State, error) {
	status, rest, ok1 := strings.Cut(v, "|")
	repeats, rest, ok2 := strings.Cut(rest, "|")
	nanos, flag, _ := strings.Cut(rest, "|")
	r, err1 := strconv.Atoi(repeats)
	n, err2 := strconv.ParseInt(nanos, 10, 64)
	if !ok1 || !ok2 || err1 != nil || err2 != nil || (flag != "" && flag != "gone") {
		return diff.State{}, fmt.Errorf("%w: %q", ErrCorrupt, v)
	}
	return diff.State{Status: diff.Status(status), Repeats: r, ObservedAt: time.Unix(0, n).UTC(), Gone: flag == "gone"}, nil
}

func parseField(f string) diff.Key {
	invoke, instance, _ := strings.Cut(f, "/")
	return diff.Key{InvokeID: invoke, InstanceID: instance}
}

// HistoryEntry is one transition as the checkpoint's history keeps it.
type HistoryEntry struct {
	ID                 string    `json:"id"`
	Source             string    `json:"source"`
	Region             string    `json:"regionId"`
	Level              string    `json:"level"`
	InvokeID           string    `json:"invokeId"`
	InstanceID         string    `json:"instanceId,omitempty"`
	Repeats            int       `json:"repeats"`
	From               string    `json:"from"`
	To                 string    `json:"to"`
	ExitCode           int64     `json:"exitCode,omitempty"`
	ErrorCode          string    `json:"errorCode,omitempty"`
	ObservedAt         time.Time `json:"observedAt"`
	PreviousObservedAt time.Time `json:"previousObservedAt,omitzero"`
}

func historyEntry(t diff.Transition) HistoryEntry {
	return HistoryEntry{
		ID: t.ID, Source: string(t.Source), Region: t.Region, Level: string(t.Level()),
		InvokeID: t.Record.InvokeID, InstanceID: t.Record.InstanceID, Repeats: t.Record.Repeats,
		From: string(t.Previous), To: string(t.Record.Status), ExitCode: t.Record.ExitCode, ErrorCode: t.Record.ErrorCode,
		ObservedAt: t.ObservedAt, PreviousObservedAt: t.PreviousObservedAt,
	}
}
