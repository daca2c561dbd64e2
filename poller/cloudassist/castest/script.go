package castest

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// plan is what a script does once it runs: how long it takes, what it
// prints and how it ends. The language is deliberately tiny:
//
//	echo TEXT     print TEXT
//	sleep SECONDS wait (fractions allowed)
//	exit CODE     stop with CODE
//	hang          never finish (until the timeout or a stop)
//	crash         the agent fails to run the script (status Error)
//
// Statements are separated by ";" or newlines. An unknown command prints a
// shell-like error and sets the status to 127, and the script goes on: the
// exit code is that of the last statement, as in sh.
type plan struct {
	duration time.Duration
	output   string
	exitCode int64
	hang     bool
	crash    bool
}

func parseScript(src string) plan {
	var p plan
	var out []string
	for _, stmt := range strings.FieldsFunc(src, func(r rune) bool { return r == ';' || r == '\n' }) {
		fields := strings.Fields(stmt)
		if len(fields) == 0 {
			continue
		}
		arg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(stmt), fields[0]))
		switch fields[0] {
		case "echo":
			out = append(out, strings.Trim(arg, `"'`))
			p.exitCode = 0
		case "sleep":
			secs, err := strconv.ParseFloat(arg, 64)
			if err != nil || secs < 0 {
				out = append(out, fmt.Sprintf("sleep: invalid time interval '%s'", arg))
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
				out = append(out, fmt.Sprintf("sh: exit: %s: numeric argument required", arg))
				code = 2
			}
			p.exitCode = code
			p.output = strings.Join(out, "\n")
			return p
		case "hang":
			p.hang = true
			p.output = strings.Join(out, "\n")
			return p
		case "crash":
			p.crash = true
			p.output = strings.Join(out, "\n")
			return p
		default:
			out = append(out, fmt.Sprintf("sh: %s: command not found", fields[0]))
			p.exitCode = 127
		}
	}
	p.output = strings.Join(out, "\n")
	return p
}
