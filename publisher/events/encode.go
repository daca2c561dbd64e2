package events

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// appendJSON appends the event as encoding/json would encode it, byte for
// byte (field order, omitempty, HTML-safe escaping, invalid UTF-8 as
// U+FFFD), without reflection: the publisher encodes every event it
// sends, and this is most of its CPU. ok is false for what it does not
// encode (a time outside the years 0–9999, or with an offset of a day or
// more, which encoding/json refuses);
// the caller then lets encoding/json say why. TestAppendJSONIsEncodingJSON
// holds the two encodings equal.
func (e *Event) appendJSON(b []byte) (_ []byte, ok bool) {
	if y := e.Time.Year(); y < 0 || y > 9999 {
		return b, false
	}
	if _, off := e.Time.Zone(); off <= -24*3600 || off >= 24*3600 {
		return b, false // encoding/json refuses an offset of a day or more
	}
	b = append(b, `{"specversion":`...)
	b = appendString(b, e.SpecVersion)
	b = append(b, `,"id":`...)
	b = appendString(b, e.ID)
	b = append(b, `,"source":`...)
	b = appendString(b, e.Source)
	b = append(b, `,"type":`...)
	b = appendString(b, e.Type)
	b = append(b, `,"subject":`...)
	b = appendString(b, e.Subject)
	b = append(b, `,"time":"`...)
	b = e.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","datacontenttype":`...)
	b = appendString(b, e.DataContentType)
	if e.DataSchema != "" {
		b = append(b, `,"dataschema":`...)
		b = appendString(b, e.DataSchema)
	}
	d := &e.Data
	b = append(b, `,"data":{"account":`...)
	b = appendString(b, d.Account)
	for _, f := range [...]struct{ name, v string }{
		{`,"source":`, d.Source}, {`,"regionId":`, d.RegionID}, {`,"level":`, string(d.Level)}, {`,"invokeId":`, d.InvokeID},
		{`,"commandId":`, d.CommandID}, {`,"commandName":`, d.CommandName}, {`,"previousStatus":`, string(d.PreviousStatus)},
		{`,"status":`, string(d.Status)},
	} {
		b = append(b, f.name...)
		b = appendString(b, f.v)
	}
	b = append(b, `,"terminal":`...)
	b = strconv.AppendBool(b, d.Terminal)
	b = append(b, `,"observedAt":`...)
	b = appendString(b, d.ObservedAt)
	b = append(b, `,"previousObservedAt":`...)
	b = appendString(b, d.PreviousObservedAt)
	b = appendInstanceFields(b, d)
	b = append(b, '}')
	if e.TraceParent != "" {
		b = append(b, `,"traceparent":`...)
		b = appendString(b, e.TraceParent)
	}
	if e.TraceState != "" {
		b = append(b, `,"tracestate":`...)
		b = appendString(b, e.TraceState)
	}
	return append(b, '}'), true
}

// appendString appends s as a JSON string, escaped as encoding/json
// escapes it by default.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendInstanceFields appends the fields an invocation-level event
// leaves out, and the names of the cut ones.
func appendInstanceFields(b []byte, d *Data) []byte {
	if d.InstanceID != "" {
		b = append(b, `,"instanceId":`...)
		b = appendString(b, d.InstanceID)
	}
	if d.Repeats != nil {
		b = append(b, `,"repeats":`...)
		b = strconv.AppendInt(b, int64(*d.Repeats), 10)
	}
	if d.ExitCode != nil {
		b = append(b, `,"exitCode":`...)
		b = strconv.AppendInt(b, *d.ExitCode, 10)
	}
	for _, f := range [...]struct{ name, v string }{
		{`,"errorCode":`, d.ErrorCode}, {`,"errorInfo":`, d.ErrorInfo}, {`,"startTime":`, d.StartTime}, {`,"finishTime":`, d.FinishTime},
	} {
		if f.v != "" {
			b = append(b, f.name...)
			b = appendString(b, f.v)
		}
	}
	if d.Output != "" {
		b = append(b, `,"output":`...)
		b = appendString(b, d.Output)
	}
	if d.OutputDropped != 0 {
		b = append(b, `,"outputDropped":`...)
		b = strconv.AppendInt(b, d.OutputDropped, 10)
	}
	if d.OutputURI != "" {
		b = append(b, `,"outputUri":`...)
		b = appendString(b, d.OutputURI)
	}
	if d.OutputMissing {
		b = append(b, `,"outputMissing":true`...)
	}
	if len(d.Truncated) > 0 {
		b = append(b, `,"truncated":[`...)
		for i, name := range d.Truncated {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, name)
		}
		b = append(b, ']')
	}
	return b
}
