package events_test

import (
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/capoller/capoller/publisher/events"
)

func TestDisplayText(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"plain ASCII", "make: *** [all] Error 2\nexit `1` <!channel> & ~_|\n", "make: *** [all] Error 2\nexit `1` <!channel> & ~_|\n"},
		{"printable Unicode", "überprüft ✓ 失败 👩‍💻\n", "überprüft ✓ 失败 👩‍💻\n"},
		{"colours", "\x1b[31;1mred\x1b[0m ok", "red ok"},
		{"cursor moves and erasing", "done\x1b[2K\x1b[1A\x1b[1Gfake\x1b[?25l", "donefake"},
		{"C1 CSI", "a\u009b31mb", "ab"},
		{"OSC title, BEL", "\x1b]0;pwned\x07after", "after"},
		{"OSC hyperlink keeps its text", "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\ here", "click here"},
		{"OSC with C1 ST", "\u009d2;t\u009cx", "x"},
		{"unterminated OSC keeps the next lines", "a\x1b]0;title\nsecond line", "a0;title\nsecond line"},
		{"OSC cut by another escape", "\x1b]0;t\x1b[31mx", "x"},
		{"DCS", "\x1bPq#0;2;0;0;0\x1b\\y", "y"},
		{"two-character escapes", "\x1b7a\x1bMb\x1bcc\x1b(Bd", "abcd"},
		{"lone ESC", "a\x1b", "a"},
		{"ESC before a control", "a\x1b\x01b", "a␁b"},
		{"malformed CSI", "a\x1b[12\x01b", "a␁b"},
		{"CR LF", "one\r\ntwo\r\r\n", "one\ntwo\n"},
		{"lone CR cannot overwrite", "progress 10%\rprogress 100%\rERROR hidden? no", "progress 10%\nprogress 100%\nERROR hidden? no"},
		{"CR runs", "a\r\r\rb", "a\nb"},
		{"trailing CR", "a\r", "a\n"},
		{"NUL and other controls", "a\x00b\x07c\x08d\x7fe", "a␀b␇c␈d␡e"},
		{"vertical movers are line breaks", "a\vb\fc\u0085d\u2028e\u2029f", "a\nb\nc\nd\ne\nf"},
		{"other C1", "a\u0080\u0084\u009cb", "ab"},
		{"tabs to the next stop", "a\tb\n\tc\nabcdefgh\ti", "a       b\n        c\nabcdefgh        i"},
		{"bidi overrides and isolates", "evil\u202etxt.exe\u202c \u2066x\u2069 \u200fy\u200e\u061c", "eviltxt.exe x y"},
		{"invisible format characters", "a\u200bb\u2060c\ufeffd\u00ade\U000E0041f\u2062g", "abcdefg"},
		{"joiners kept", "a\u200cb\u200dc", "a\u200cb\u200dc"},
		{"invalid UTF-8", "a\xffb\xc3", "a\ufffdb\ufffd"},
	} {
		if got := events.DisplayText(c.in); got != c.want {
			t.Errorf("%s: DisplayText(%q) = %q, want %q", c.name, c.in, got, c.want)
		}
	}
}

// Many unterminated string introducers on one long line are read in
// linear time, and each is only removed.
func TestDisplayTextUnterminatedStringsAreCheap(t *testing.T) {
	in := strings.Repeat("\u009dx", 100_000) + "\n"
	if got := events.DisplayText(in); got != strings.Repeat("x", 100_000)+"\n" {
		t.Errorf("got %.40q…", got)
	}
}

func TestLastLines(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want []string
	}{
		{"", 3, nil},
		{"\n \n", 3, nil},
		{"one", 3, []string{"one"}},
		{"one\ntwo\nthree\n", 2, []string{"two", "three"}},
		{"one\ntwo\nthree\n\n  \n", 1, []string{"three"}},
		{"one\ntwo\n", 5, []string{"one", "two"}},
		{"one\n\ntwo\n", 3, []string{"one", "", "two"}},
		{"10%\r50%\r100%\rfailed: \x1b[31mdisk full\x1b[0m\n", 2, []string{"100%", "failed: disk full"}},
		{"a\nb", 0, nil},
	} {
		if got := events.LastLines(c.in, c.n); !slices.Equal(got, c.want) {
			t.Errorf("LastLines(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}

// FuzzDisplayText checks DisplayText's guarantees on any input: valid
// UTF-8, no control character but '\n', no separator, bidirectional or
// hidden format character, no letter or digit that was not in the input,
// stable when applied again, and printable ASCII unchanged.
func FuzzDisplayText(f *testing.F) {
	for _, s := range []string{"", "plain text\n", "\x1b[31mred\x1b[0m", "\x1b]0;t\x07", "a\rb\r\n", "\x00\t\u202e\u2028", "\xff\u009b1m",
		"\x1b]8;;u\x1b\\t\x1b]8;;\x1b\\", "\x1bP\n", "👩‍💻\u200b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := events.DisplayText(s)
		if !utf8.ValidString(got) {
			t.Fatalf("DisplayText(%q) = %q: invalid UTF-8", s, got)
		}
		for _, r := range got {
			switch {
			case r == '\n':
			case unicode.IsControl(r):
				t.Fatalf("DisplayText(%q) = %q holds control %U", s, got, r)
			case r == 0x2028 || r == 0x2029 || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069:
				t.Fatalf("DisplayText(%q) = %q holds separator or bidi control %U", s, got, r)
			case unicode.Is(unicode.Cf, r) && r != 0x200c && r != 0x200d:
				t.Fatalf("DisplayText(%q) = %q holds format character %U", s, got, r)
			}
		}
		if again := events.DisplayText(got); again != got {
			t.Fatalf("DisplayText is not stable: %q → %q → %q", s, got, again)
		}
		if !isSubsequence(alnum(got), alnum(s)) {
			t.Fatalf("DisplayText(%q) = %q shows letters or digits that were not there", s, got)
		}
		printable := true
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < 0x20 && c != '\n' || c > 0x7e {
				printable = false
			}
		}
		if printable && got != s {
			t.Fatalf("DisplayText changed printable ASCII %q to %q", s, got)
		}
	})
}

func alnum(s string) []rune {
	var out []rune
	for _, r := range s {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			out = append(out, r)
		}
	}
	return out
}

func isSubsequence(sub, of []rune) bool {
	for _, r := range of {
		if len(sub) > 0 && sub[0] == r {
			sub = sub[1:]
		}
	}
	return len(sub) == 0
}
