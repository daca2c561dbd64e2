package castest

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// maxPrinted bounds what one head statement prints, so that a script cannot
// make the emulator allocate without limit; it is far above the 24 KB the
// API shows of a run's output.
const maxPrinted = 1 << 20

// plan is what a script does once it runs: how long it takes, what it
// prints and how it ends. The language is in the package documentation.
type plan struct {
	duration time.Duration
	output   string
	exitCode int64
	hang     bool
	crash    bool
}

// printer collects a script's output.
type printer struct {
	b        strings.Builder
	lineLast bool // the last write was a line (echo or an error), whose newline the output drops
}

func (w *printer) line(s string) {
	w.b.WriteString(s)
	w.b.WriteByte('\n')
	w.lineLast = true
}

func (w *printer) raw(s string) {
	w.b.WriteString(s)
	w.lineLast = w.lineLast && s == ""
}

func (w *printer) String() string {
	s := w.b.String()
	if w.lineLast {
		s = strings.TrimSuffix(s, "\n")
	}
	return s
}

func parseScript(src string) plan {
	var p plan
	var out printer
	for _, stmt := range strings.FieldsFunc(src, func(r rune) bool { return r == ';' || r == '\n' }) {
		fields := strings.Fields(stmt)
		if len(fields) == 0 {
			continue
		}
		arg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(stmt), fields[0]))
		switch fields[0] {
		case "echo":
			out.line(strings.Trim(arg, `"'`))
			p.exitCode = 0
		case "printf":
			if arg == "" {
				out.line("printf: usage: printf format [arguments]")
				p.exitCode = 2
				continue
			}
			out.raw(printfFormat(unquote(arg)))
			p.exitCode = 0
		case "head":
			text, msg, code := head(fields[1:])
			if msg != "" {
				out.line(msg)
			}
			out.raw(text)
			p.exitCode = code
		case "yes":
			text, msg, code := yes(stmt)
			if msg != "" {
				out.line(msg)
			}
			out.raw(text)
			p.exitCode = code
		case "sleep":
			secs, err := strconv.ParseFloat(arg, 64)
			if err != nil || secs < 0 {
				out.line(fmt.Sprintf("sleep: invalid time interval '%s'", arg))
				p.exitCode = 1
				continue
			}
			p.duration += time.Duration(secs * float64(time.Second))
			p.exitCode = 0
		case "exit":
			code, err := strconv.ParseInt(arg, 10, 64)
			if arg == "" {
				code, err = p.exitCode, nil
			}
			if err != nil {
				out.line(fmt.Sprintf("sh: exit: %s: numeric argument required", arg))
				code = 2
			}
			p.exitCode = code
			p.output = out.String()
			return p
		case "hang":
			p.hang = true
			p.output = out.String()
			return p
		case "crash":
			p.crash = true
			p.output = out.String()
			return p
		default:
			out.line(fmt.Sprintf("sh: %s: command not found", fields[0]))
			p.exitCode = 127
		}
	}
	p.output = out.String()
	return p
}

// unquote removes one level of quotes around s, as sh would for a single
// word.
func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '\'' || s[0] == '"') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

// printfFormat expands printf's escapes in format (see plan).
func printfFormat(format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c == '%' && i+1 < len(format) && format[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		if c != '\\' || i+1 == len(format) {
			b.WriteByte(c)
			continue
		}
		i++
		switch e := format[i]; e {
		case '\\':
			b.WriteByte('\\')
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'e':
			b.WriteByte(0x1b)
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte('\v')
		case 'x':
			n, v := digits(format[i+1:], 2, 16)
			if n == 0 {
				b.WriteString(`\x`)
				continue
			}
			b.WriteByte(byte(v))
			i += n
		case '0', '1', '2', '3', '4', '5', '6', '7':
			rest := format[i:]
			if e == '0' {
				rest = format[i+1:] // \0NNN: up to three digits after the 0
			}
			n, v := digits(rest, 3, 8)
			b.WriteByte(byte(v))
			if e == '0' {
				i += n
			} else {
				i += n - 1
			}
		default:
			b.WriteByte('\\')
			b.WriteByte(e)
		}
	}
	return b.String()
}

// digits reads up to max digits of base at the start of s: how many it
// read, and their value.
func digits(s string, max int, base int64) (int, int64) {
	n, v := 0, int64(0)
	for n < len(s) && n < max {
		d, err := strconv.ParseInt(s[n:n+1], int(base), 64)
		if err != nil {
			break
		}
		v = v*base + d
		n++
	}
	return n, v
}

// byteCount reads head's -c N: the count, or the message head would print.
func byteCount(args []string) (int, string) {
	if len(args) < 2 || args[0] != "-c" {
		return 0, "head: casim's head takes only -c N [/dev/zero|/dev/urandom]"
	}
	n, err := strconv.Atoi(args[1])
	switch {
	case err != nil || n < 0:
		return 0, fmt.Sprintf("head: invalid number of bytes: '%s'", args[1])
	case n > maxPrinted:
		return 0, fmt.Sprintf("head: casim prints at most %d bytes a statement, not %d", maxPrinted, n)
	}
	return n, ""
}

// head runs head -c N [FILE]: what it prints, an error message, and its
// status. Without a file it reads the script's empty standard input.
func head(args []string) (text, msg string, code int64) {
	n, msg := byteCount(args)
	if msg != "" {
		return "", msg, 1
	}
	switch file := strings.Join(args[2:], " "); file {
	case "", "-":
		return "", "", 0
	case "/dev/zero":
		return strings.Repeat("\x00", n), "", 0
	case "/dev/urandom":
		b := make([]byte, n)
		rng := rand.New(rand.NewPCG(uint64(n), 0x636173696d)) // the same bytes for the same n
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return string(b), "", 0
	default:
		return "", fmt.Sprintf("head: cannot open '%s' for reading: No such file or directory", file), 1
	}
}

// yes runs "yes [TEXT] | head -c N", the only use of yes that ends.
func yes(stmt string) (text, msg string, code int64) {
	left, right, piped := strings.Cut(stmt, "|")
	if !piped {
		return "", "sh: yes: casim runs yes only as: yes [TEXT] | head -c N", 2
	}
	word := "y"
	if w := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(left), "yes")); w != "" {
		word = strings.Trim(w, `"'`)
	}
	fields := strings.Fields(right)
	if len(fields) != 3 || fields[0] != "head" {
		return "", "sh: yes: casim runs yes only as: yes [TEXT] | head -c N", 2
	}
	n, msg := byteCount(fields[1:])
	if msg != "" {
		return "", msg, 1
	}
	unit := word + "\n"
	return strings.Repeat(unit, n/len(unit)+1)[:n], "", 0
}
