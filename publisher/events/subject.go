package events

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// MaxTokenLen bounds one subject token. With six tokens and a prefix, a
// subject stays far below the server's control-line limit (4 KB), which
// closes the connection when exceeded.
const MaxTokenLen = 128

// Token is s as one subject token: escaped by [EscapeToken] and, if that
// is longer than [MaxTokenLen], cut to a readable prefix (never inside an
// escape) followed by "%~" and 32 hex digits of s's SHA-256. The result is
// deterministic, distinct for distinct inputs, and never produced by
// EscapeToken alone ("%~" is no escape), so [UnescapeToken] refuses it:
// the full value is in the event's data.
func Token(s string) string {
	esc := EscapeToken(s)
	if len(esc) <= MaxTokenLen {
		return esc
	}
	const suffix = 2 + 32
	cut := MaxTokenLen - suffix
	for i := cut - 1; i >= max(0, cut-2); i-- { // do not split a %XX escape
		if esc[i] == '%' {
			cut = i
		}
	}
	sum := sha256.Sum256([]byte(s))
	return esc[:cut] + "%~" + hex.EncodeToString(sum[:16])
}

// EscapeToken makes s safe as one subject token: every byte outside
// [A-Za-z0-9_-] becomes %XX (upper-case hex), so ".", "*", ">", spaces and
// "%" itself can never split or widen a subject. [UnescapeToken] reverses it.
func EscapeToken(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if !plain(s[i]) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if plain(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// UnescapeToken reverses [EscapeToken].
func UnescapeToken(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", errors.New("events: truncated escape in subject token")
		}
		hi, lo := unhex(s[i+1]), unhex(s[i+2])
		if hi < 0 || lo < 0 {
			return "", fmt.Errorf("events: bad escape %q in subject token", s[i:i+3])
		}
		b.WriteByte(byte(hi<<4 | lo))
		i += 2
	}
	return b.String(), nil
}

func plain(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}
