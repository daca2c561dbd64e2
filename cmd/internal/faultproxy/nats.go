package faultproxy

import (
	"bytes"
	"strconv"
	"strings"
)

// maxControlLine bounds a NATS control line the scanner keeps: past it,
// the stream is not NATS (or lost its framing) and the line is dropped.
const maxControlLine = 64 << 10

// NATSPublishes returns a Tap that reads the NATS client protocol and
// calls fn with the subject of every message published (PUB and HPUB),
// and whether its bytes were swallowed. fn is called when the control
// line is read, before the payload.
func NATSPublishes(fn func(subject string, swallowed bool)) Tap {
	s := &natsScanner{fn: fn}
	return s.write
}

// natsScanner follows the client side of the NATS protocol: control
// lines ending in CRLF, and after PUB and HPUB a payload of the size they
// give, then CRLF.
type natsScanner struct {
	fn   func(subject string, swallowed bool)
	line []byte
	skip int // payload bytes (and their CRLF) still to pass over
	lost bool
}

func (s *natsScanner) write(p []byte, swallowed bool) {
	for len(p) > 0 {
		if s.skip > 0 {
			n := min(s.skip, len(p))
			s.skip -= n
			p = p[n:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.keep(p)
			return
		}
		s.keep(p[:i])
		p = p[i+1:]
		if !s.lost {
			s.control(string(bytes.TrimRight(s.line, "\r")), swallowed)
		}
		s.line, s.lost = s.line[:0], false
	}
}

func (s *natsScanner) keep(p []byte) {
	if s.lost || len(s.line)+len(p) > maxControlLine {
		s.line, s.lost = s.line[:0], true
		return
	}
	s.line = append(s.line, p...)
}

// control handles one control line:
//
//	PUB <subject> [reply-to] <#bytes>
//	HPUB <subject> [reply-to] <#header bytes> <#total bytes>
func (s *natsScanner) control(line string, swallowed bool) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return
	}
	var sizes int
	switch strings.ToUpper(f[0]) {
	case "PUB":
		sizes = 1
	case "HPUB":
		sizes = 2
	default:
		return
	}
	if len(f) != 2+sizes && len(f) != 3+sizes {
		return
	}
	total, err := strconv.Atoi(f[len(f)-1])
	if err != nil || total < 0 {
		return
	}
	s.skip = total + 2
	s.fn(f[1], swallowed)
}
