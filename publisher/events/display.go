package events

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// tabWidth is the distance between the tab stops [DisplayText] expands
// tabs to.
const tabWidth = 8

// DisplayText makes a text from the API (a run's [Data.Output], an
// error) safe to show on a terminal or in a chat: what it returns cannot
// move a cursor, clear or retitle a screen, reorder or hide characters,
// or fake a line. It is valid UTF-8, and it holds no control character
// but '\n', no line or paragraph separator, and no bidirectional or other
// format character (Unicode category Cf) but the two joiners. Precisely:
//
//   - Printable ASCII, '\n' and every other printable character pass
//     unchanged: a text of printable ASCII and newlines is returned as it
//     is.
//   - Escape sequences are removed whole: CSI (ESC [ or U+009B, then
//     parameters, intermediates and a final byte: colours, cursor moves,
//     erasing), OSC, DCS, SOS, PM and APC strings (ESC ] P X ^ _ or
//     U+009D U+0090 U+0098 U+009E U+009F, up to BEL or ST: titles,
//     hyperlinks, which keep their visible text) and two-character escapes
//     (ESC 7, ESC M, ESC c…). A string not terminated on its line is not
//     one: only its introducer is removed, so it cannot swallow the lines
//     after it. A lone or malformed ESC is removed.
//   - CR LF (and CR… LF) is a line break; a CR not followed by LF, as a
//     progress bar redraws its line, is a line break too, so later text
//     never overwrites earlier text. VT, FF, NEL (U+0085), LINE SEPARATOR
//     (U+2028) and PARAGRAPH SEPARATOR (U+2029) are line breaks.
//   - A tab becomes spaces, up to the next multiple of 8 characters on
//     its line.
//   - Every other C0 control and DEL is shown as its Unicode control
//     picture: NUL as "␀" (U+2400), BEL as "␇", BS as "␈", DEL as "␡".
//     The other C1 controls (U+0080–U+009F) are removed.
//   - Format characters are removed: bidirectional embeddings, overrides
//     and isolates (U+202A–U+202E, U+2066–U+2069), marks (U+200E, U+200F,
//     U+061C), zero-width spaces and joiners but ZWNJ and ZWJ (U+200C,
//     U+200D, which shape scripts and emoji), the BOM, soft hyphens, tag
//     characters: all of category Cf but those two.
//   - Invalid UTF-8 becomes U+FFFD.
//
// It does not bound the length, nor the lines (see [LastLines]).
func DisplayText(s string) string {
	if printableASCII(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + len(s)/8)
	col := 0          // characters since the last line break, for the tab stops
	unterminated := 0 // no string sequence started before this index ends before it
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteRune(utf8.RuneError)
			col++
		case r == '\n', r == '\v', r == '\f', r == 0x85, r == 0x2028, r == 0x2029:
			b.WriteByte('\n')
			col = 0
		case r == '\r':
			j := i + 1
			for j < len(s) && s[j] == '\r' {
				j++
			}
			if j == len(s) || s[j] != '\n' { // CR LF is written by its LF
				b.WriteByte('\n')
				col = 0
			}
			i = j
			continue
		case r == '\t':
			n := tabWidth - col%tabWidth
			b.WriteString("        "[:n])
			col += n
		case r == 0x1b || r == 0x9b || r == 0x9d || r == 0x90 || r == 0x98 || r == 0x9e || r == 0x9f:
			i = skipEscape(s, i, &unterminated)
			continue
		case r < 0x20:
			b.WriteRune(0x2400 + r) // the control pictures: ␀ ␁ …
			col++
		case r == 0x7f:
			b.WriteRune('␡')
			col++
		case r < 0xa0 && r >= 0x80: // the other C1 controls
		case hiddenFormat(r):
		default:
			b.WriteString(s[i : i+size])
			col++
		}
		i += size
	}
	return b.String()
}

// printableASCII reports whether s is printable ASCII and newlines only.
func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 || c > 0x7e) && c != '\n' {
			return false
		}
	}
	return true
}

// hiddenFormat reports whether r is a format character DisplayText
// removes: category Cf, but ZWNJ and ZWJ.
func hiddenFormat(r rune) bool {
	return r != 0x200c && r != 0x200d && unicode.Is(unicode.Cf, r)
}

// skipEscape returns the index after the escape sequence that starts at
// s[i] (ESC, or a C1 introducer). *unterminated remembers the end of the
// line of the last string sequence found unterminated, so that many
// introducers on one long line are read once, not once each.
func skipEscape(s string, i int, unterminated *int) int {
	var j int // after the introducer
	csi := false
	if s[i] == 0x1b {
		if i+1 == len(s) {
			return i + 1
		}
		switch c := s[i+1]; {
		case c == '[':
			csi, j = true, i+2
		case c == ']' || c == 'P' || c == 'X' || c == '^' || c == '_':
			j = i + 2
		case c >= 0x20 && c <= 0x2f: // intermediates, then a final
			k := i + 1
			for k < len(s) && s[k] >= 0x20 && s[k] <= 0x2f {
				k++
			}
			if k < len(s) && s[k] >= 0x30 && s[k] <= 0x7e {
				k++
			}
			return k
		case c >= 0x30 && c <= 0x7e: // ESC 7, ESC M, ESC c…
			return i + 2
		default: // a lone ESC
			return i + 1
		}
	} else { // a C1 introducer, two bytes in UTF-8
		r, size := utf8.DecodeRuneInString(s[i:])
		csi, j = r == 0x9b, i+size
	}
	if csi {
		for j < len(s) && s[j] >= 0x30 && s[j] <= 0x3f { // parameters
			j++
		}
		for j < len(s) && s[j] >= 0x20 && s[j] <= 0x2f { // intermediates
			j++
		}
		if j < len(s) && s[j] >= 0x40 && s[j] <= 0x7e { // the final byte
			j++
		}
		return j // malformed: what was read goes, the rest is read as text
	}
	if j < *unterminated {
		return j
	}
	for k := j; k < len(s); k++ {
		switch s[k] {
		case 0x07: // BEL
			return k + 1
		case 0x1b:
			if k+1 < len(s) && s[k+1] == '\\' { // ST
				return k + 2
			}
			return k // another escape cancels the string
		case 0xc2:
			if k+1 < len(s) && s[k+1] == 0x9c { // ST as U+009C
				return k + 2
			}
			if k+1 < len(s) && s[k+1] == 0x85 { // NEL: the line ends
				*unterminated = k
				return j
			}
		case 0xe2:
			if strings.HasPrefix(s[k:], "\u2028") || strings.HasPrefix(s[k:], "\u2029") { // the line ends
				*unterminated = k
				return j
			}
		case '\n', '\r', '\v', '\f':
			*unterminated = k
			return j
		}
	}
	*unterminated = len(s)
	return j
}

// LastLines is the last n lines of [DisplayText](s), without the blank
// lines and spaces that end it (an output's final newline), and nil if
// nothing is left. A CR that would redraw a line is a line break (see
// DisplayText), so a progress bar's updates are lines.
func LastLines(s string, n int) []string {
	if n <= 0 {
		return nil
	}
	t := strings.TrimRight(DisplayText(s), " \n")
	if t == "" {
		return nil
	}
	start := len(t) // then the newline before the last lines, -1 for all of them
	for range n {
		if start = strings.LastIndexByte(t[:start], '\n'); start < 0 {
			break
		}
	}
	return strings.Split(t[start+1:], "\n")
}
