package diff

import (
	"fmt"
	"unicode/utf8"
)

// MaxText bounds each free text of a record (ErrorInfo, CommandName,
// ErrorCode, CommandID), in bytes. The API's texts are short, but nothing
// bounds them, and a record travels whole into a staged batch and an
// event, which must fit the server's max_payload. Ids are never cut.
const MaxText = 4096

// TextFields is a set of a record's free-text fields.
type TextFields uint8

// The free-text fields.
const (
	FieldErrorInfo TextFields = 1 << iota
	FieldCommandName
	FieldErrorCode
	FieldCommandID
	FieldOutput
)

// Names lists the fields of the set by their names in an event's data.
func (f TextFields) Names() []string {
	var out []string
	for _, n := range []struct {
		bit  TextFields
		name string
	}{{FieldErrorInfo, "errorInfo"}, {FieldCommandName, "commandName"}, {FieldErrorCode, "errorCode"}, {FieldCommandID, "commandId"}, {FieldOutput, "output"}} {
		if f&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

// Cut shortens s to at most n bytes, at a UTF-8 boundary, ending it with
// "…[cut N bytes]" (N is the original length). It reports whether it cut.
func Cut(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	marker := fmt.Sprintf("…[cut %d bytes]", len(s))
	end := max(0, n-len(marker))
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end] + marker, true
}

// CutHead shortens s to at most n bytes by dropping its beginning, at a
// UTF-8 boundary, starting it with "[cut N bytes]…" (N is the original
// length): what a run printed last (its errors) is kept. It reports
// whether it cut.
func CutHead(s string, n int) (string, bool) {
	if len(s) <= n {
		return s, false
	}
	marker := fmt.Sprintf("[cut %d bytes]…", len(s))
	start := len(s) - max(0, n-len(marker))
	for start < len(s) && !utf8.RuneStart(s[start]) {
		start++
	}
	return marker + s[start:], true
}

// BoundTexts cuts each free text of r longer than [MaxText] and records
// which in r.Cut.
func (r *Record) BoundTexts() {
	for _, f := range []struct {
		bit TextFields
		v   *string
	}{{FieldErrorInfo, &r.ErrorInfo}, {FieldCommandName, &r.CommandName}, {FieldErrorCode, &r.ErrorCode}, {FieldCommandID, &r.CommandID}} {
		if len(*f.v) <= MaxText {
			continue
		}
		*f.v, _ = Cut(*f.v, MaxText)
		r.Cut |= f.bit
	}
}
